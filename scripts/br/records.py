"""JSON and JSONL records: the one serialisation of build files, and reading datasets.

Both dataset readers parse with the same decoder (`_DECODER`), so a JSON list and JSONL accept
the same records and keep their values the same way: integers of any size stay exact, and a
number beyond a double's range (1e400, 1e-400) is kept as written (`ExactFloat`) instead of
becoming Infinity or 0. What JSON cannot carry through the pipeline is refused in one line
naming the record: NaN and Infinity (not JSON), a lone UTF-16 surrogate (`"\\ud800"`: not
text), and nesting deeper than the parser's recursion limit.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any, Protocol

from br.cli import UserError


class ExactFloat(float):
    """A JSON number a double cannot hold (1e400 is inf, 1e-400 is 0.0), kept as written."""

    text: str

    def __new__(cls, text: str) -> ExactFloat:
        self = super().__new__(cls, text)
        self.text = text
        return self


_exact_read = False  # set once an ExactFloat is read: dumps then writes each as its text
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _parse_float(text: str) -> float:
    global _exact_read
    value = float(text)
    overflow = value in (float("inf"), float("-inf"))
    underflow = value == 0 and any(c in "123456789" for c in text.lower().partition("e")[0])
    if not (overflow or underflow):
        return value
    _exact_read = True
    return ExactFloat(text)


class NotJSON(ValueError):
    """NaN, Infinity or -Infinity: Python's json reads them, but they are not JSON."""


def _parse_constant(name: str) -> Any:
    raise NotJSON(name)


_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_parse_constant)

_nonfinite_read = False  # set once a NaN or an infinity was read: fast_dumps then leaves orjson


def saw_nonfinite() -> None:
    """A NaN or an infinity came in (a provider's line, float32 bytes): from now on
    `fast_dumps` writes as `dumps` does (NaN, Infinity), not as orjson would (null)."""
    global _nonfinite_read
    _nonfinite_read = True


def _lenient_constant(name: str) -> float:
    saw_nonfinite()
    return float(name)


# The files the pipeline itself wrote (answers/) and a provider's line json alone can read:
# NaN and Infinity read as floats (and noted), a number past a double's range kept as written.
LENIENT = json.JSONDecoder(parse_float=_parse_float, parse_constant=_lenient_constant)
# A \u escape of a UTF-16 surrogate: paired, it is one character; alone, it is not text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def exact_floats() -> bool:
    """An ExactFloat was read: `dumps` now writes in Python (its keys as str(k) too)."""
    return _exact_read


def dumps(obj: Any) -> str:
    """The one JSON serialisation used for build files (stable, compact, readable UTF-8)."""
    return _exact(obj) if _exact_read else _encode(obj)


# orjson writes what `dumps` writes, several times faster, but for three things: a float under
# 1e-4 (0.00001 and 1e-7 where json writes 1e-05 and 1e-07), NaN and the infinities (null where
# json writes NaN and Infinity), and what it refuses (a key that is not a string, an integer
# past 64 bits, a lone surrogate, a subclass: TypeError). `fast_dumps` finds the first in its
# bytes and falls back to `dumps` for it and for the last; and once a NaN or an infinity was
# read in the process (saw_nonfinite: the strict decoder refuses them, the others note them),
# it leaves orjson altogether, as it does once an ExactFloat was read.
_ORJSON: Callable[..., bytes] | None = None
_DIGITS = frozenset(b"0123456789")


def fast_dumps(obj: Any) -> str:
    """`dumps`, byte for byte, through orjson where it writes the same."""
    global _ORJSON
    if _exact_read or _nonfinite_read:
        return dumps(obj)
    if _ORJSON is None:
        import orjson

        options = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
        _ORJSON = partial(orjson.dumps, option=options | orjson.OPT_PASSTHROUGH_SUBCLASS)
    try:
        out = _ORJSON(obj)
    except TypeError:
        return _encode(obj)
    return _encode(obj) if _small_float(out) else out.decode()


def _small_float(out: bytes) -> bool:
    """Whether orjson's text may hold a float it writes otherwise than json (|x| < 1e-4, not
    0): its "1e-7" (a digit before e-) or "0.00001" (0.0000 where a number starts). Strings
    holding either are false alarms, written by json."""
    i = out.find(b"e-")
    while i > 0:
        if out[i - 1] in _DIGITS:
            return True
        i = out.find(b"e-", i + 2)
    i = out.find(b"0.0000")
    while i >= 0:
        if i == 0 or out[i - 1] in b":,[-":
            return True
        i = out.find(b"0.0000", i + 1)
    return False


def _exact(obj: Any) -> str:
    """`dumps` in Python, writing each ExactFloat as its text (only once one was read)."""
    if isinstance(obj, ExactFloat):
        return obj.text
    if isinstance(obj, dict):
        return "{" + ",".join(f"{_encode(str(k))}:{_exact(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(map(_exact, obj)) + "]"
    return _encode(obj)


def lone_surrogate(value: Any, text: str, start: int, end: int) -> str | None:
    """A lone UTF-16 surrogate in `value` (parsed from text[start:end]) as its escape, or None."""
    if _SURROGATE_ESCAPE.search(text, start, end):
        try:
            dumps(value).encode("utf-8")
        except UnicodeEncodeError as e:
            return f"\\u{ord(e.object[e.start]):04x}"
    return None


def surrogate_error(where: str, escape: str) -> str:
    return (
        f"{where} has a lone UTF-16 surrogate ({escape}), which is not text; remove it, or "
        "pair it as in \\ud83d\\ude00"
    )


def value_error(where: str, e: Exception) -> str:
    """One line for a record the decoder refused for its content, not its syntax."""
    if isinstance(e, RecursionError):
        return (
            f"{where} nests lists or objects too deep to read (deeper than the JSON parser's "
            "recursion limit, about 1,000 levels); flatten it"
        )
    if isinstance(e, NotJSON):
        return f"{where} has {e}, which is not JSON; write null or a string instead"
    return f"{where} cannot be read ({e}); fix or remove it"


BOM = b"\xef\xbb\xbf"
BLOCK = 1 << 16
_SPACE = re.compile(r"[ \t\n\r]*")
# How close to the end of what is read a parse error may be a record cut off by the read ("tru",
# "1.5e", "\u12"), to be retried with more text; farther back it is the file's own error.
# (An unterminated string is always retried: the rest of the file may close it.)
_CUT_OFF = 16


def not_utf8(path: Path, head: bytes) -> None:
    """UTF-16 and UTF-32 (a BOM, or NUL bytes at the start) are refused with one line."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[:4]:
        raise UserError(
            f"{path} is not UTF-8 text (it looks like UTF-16 or binary data); save it as UTF-8"
        )


def decode_error(path: Path, data: bytes, e: UnicodeDecodeError, line: int | None = None) -> str:
    line = line or data.count(b"\n", 0, e.start) + 1
    return (
        f"{path} is not UTF-8 text (line {line}: byte 0x{data[e.start]:02x}); save it as UTF-8 "
        "(Latin-1 or Windows-1252 files must be converted, e.g. with iconv)"
    )


def decode_utf8(path: Path, data: bytes) -> str:
    """A whole file's text: UTF-8, with an optional BOM; anything else is one line."""
    data = data.removeprefix(BOM)
    not_utf8(path, data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(decode_error(path, data, e))


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class Hashing:
    """A binary file whose bytes, as they are read, also go into a digest."""

    def __init__(self, raw: IO[bytes], digest: Digest) -> None:
        self.raw, self.digest = raw, digest

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        for line in self.raw:
            self.digest.update(line)
            yield line


def iter_jsonl(path: Path, digest: Digest | None = None) -> Iterator[Any]:
    """The objects of a JSONL file. Lines end at \\n only (never at U+2028 and the like)."""
    for _, value in iter_jsonl_lines(path, digest):
        yield value


def iter_jsonl_lines(path: Path, digest: Digest | None = None) -> Iterator[tuple[str, Any]]:
    """Each object of a JSONL file with its line's text (iter_jsonl's checks); `digest`, if
    given, is updated with every byte read."""
    with open(path, "rb") as opened:
        f = opened if digest is None else Hashing(opened, digest)
        for n, raw in enumerate(f, 1):
            if n == 1:
                raw = raw.removeprefix(BOM)
                not_utf8(path, raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(decode_error(path, raw, e, n))
            if line.strip():
                where = f"{path}:{n}"
                try:
                    value = _DECODER.decode(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{where}: not valid JSON ({e.msg}); fix or remove that line")
                except (ValueError, RecursionError) as e:
                    raise UserError(value_error(where, e))
                escape = lone_surrogate(value, line, 0, len(line))
                if escape:
                    raise UserError(surrogate_error(where, escape))
                yield line, value


def is_jsonl(path: Path) -> bool:
    return Path(path).suffix.lower() in {".jsonl", ".ndjson"}


class _Text:
    """A UTF-8 file's text, read as the parser needs it: `buf` from the line `line` on.

    Only the record being parsed and one block sit in memory. A record longer than a block is
    retried with twice the text each time, so it is parsed a bounded number of times per byte.
    """

    def __init__(self, path: Path, raw: IO[bytes] | Hashing, head: bytes) -> None:
        self.path, self.raw = path, raw
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.line, self.eof = "", 0, 1, False
        self.bytes_lines = 0  # newlines in the bytes decoded so far, for a decoding error
        self.add(head, final=False)

    def add(self, data: bytes, final: bool) -> None:
        try:
            self.buf += self.decoder.decode(data, final)
        except UnicodeDecodeError as e:
            raw = e.object
            raise UserError(
                decode_error(self.path, raw, e, self.bytes_lines + 1 + raw.count(b"\n", 0, e.start))
            )
        self.bytes_lines += data.count(b"\n")

    def more(self) -> bool:
        """Read on (at least as much again as is held); False at the end of the file."""
        if self.eof:
            return False
        self.line += self.buf.count("\n", 0, self.pos)
        self.buf, self.pos = self.buf[self.pos :], 0
        data = self.raw.read(max(BLOCK, len(self.buf)))
        self.eof = not data
        self.add(data, final=self.eof)
        return not self.eof

    def next_char(self) -> str:
        """The next character after white space ("" at the end), not consumed."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def line_at(self, pos: int) -> int:
        return self.line + self.buf.count("\n", 0, pos)

    def value(self, index: int) -> Any:
        """Record `index`, the JSON value at `pos`, read on as far as it needs."""
        self.next_char()
        while True:
            start = self.pos

            try:
                value, end = _DECODER.raw_decode(self.buf, start)
            except json.JSONDecodeError as e:
                cut = e.pos >= len(self.buf) - _CUT_OFF or e.msg.startswith("Unterminated")
                if cut and self.more():
                    continue
                raise self.error(e.msg, e.pos, f"record {index}")
            except (ValueError, RecursionError) as e:
                raise UserError(value_error(self.where(index, start), e))
            # A number or literal that ends where the text read does may go on ("12" of "123").
            if end == len(self.buf) and not isinstance(value, (dict, list, str)) and self.more():
                continue
            self.pos = end
            escape = lone_surrogate(value, self.buf, start, end)
            if escape:
                raise UserError(surrogate_error(self.where(index, start), escape))
            return value

    def where(self, index: int, pos: int) -> str:
        return f"{self.path}: record {index} (line {self.line_at(pos)})"

    def error(self, message: str, pos: int, where: str) -> UserError:
        return UserError(
            f"{self.path} is not valid JSON (line {self.line_at(pos)}, {where}: {message}); "
            "give a JSON list of objects, or JSONL with a .jsonl name"
        )


def iter_json_list(path: Path, digest: Digest | None = None) -> Iterator[Any]:
    """The items of a JSON list, parsed incrementally: the list never sits in memory."""
    with open(path, "rb", buffering=0) as opened:
        raw = opened if digest is None else Hashing(opened, digest)
        head = raw.read(BLOCK).removeprefix(BOM)
        not_utf8(path, head)
        start = head.lstrip()[:1]
        if start and start != b"[":
            raise UserError(
                f"{path} must hold a JSON list of objects, not a JSON "
                f"{'object' if start == b'{' else 'value'} (or be JSONL named .jsonl)"
            )
        text = _Text(path, raw, head)
        if text.next_char() != "[":
            raise text.error("Expecting '['", text.pos, "at the start")
        text.pos += 1
        count = 0
        if text.next_char() == "]":
            text.pos += 1
        else:
            while True:
                yield text.value(count)
                count += 1
                c = text.next_char()
                text.pos += c in ",]"
                if c == "]":
                    break
                if c != ",":
                    raise text.error("Expecting ',' or ']'", text.pos, f"after record {count - 1}")
        if text.next_char():
            raise text.error("Extra data after the list", text.pos, f"after record {count - 1}")


def iter_records(path: Path, digest: Digest | None = None) -> Iterator[dict[str, Any]]:
    """The records of a dataset: a JSON list of objects, or JSONL, both streamed; `digest`, if
    given, is updated with every byte read (read to the end: the whole file's)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input file {path} does not exist; set INPUT=path/to/data.json")
    if path.is_dir():
        raise UserError(f"input {path} is a directory, not a file; set INPUT=path/to/data.json")
    records = iter_jsonl(path, digest) if is_jsonl(path) else iter_json_list(path, digest)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise UserError(f"{path}: record {i} is a {type(record).__name__}, not an object")
        yield record


class RecordWriter:
    """Writes records in the input's own format: a JSON list (one record a line) or JSONL,
    a thousand records a write."""

    def __init__(self, f: IO[str], jsonl: bool) -> None:
        self.f, self.jsonl, self.n = f, jsonl, 0
        self.held: list[str] = []
        if not jsonl:
            f.write("[")

    def write(self, record: dict[str, Any]) -> None:
        self.held.append(fast_dumps(record))
        self.n += 1
        if len(self.held) >= 1000:
            self.flush()

    def flush(self) -> None:
        if self.held:
            if self.jsonl:
                self.f.write("\n".join(self.held) + "\n")
            else:
                self.f.write(("\n" if self.n == len(self.held) else ",\n") + ",\n".join(self.held))
            self.held = []

    def close(self) -> None:
        self.flush()
        if not self.jsonl:
            self.f.write("\n]\n" if self.n else "]\n")
