"""JSON and JSONL records: the one serialisation of build files, and reading datasets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cli import UserError
from images import canonical_body


def dumps(obj: Any) -> str:
    """The one JSON serialisation used for build files (stable, compact, readable UTF-8)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


BOM = b"\xef\xbb\xbf"
EXACT_ERRORS_UP_TO = 16_000_000  # a bad JSON list this small is parsed again for the exact line


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


def iter_jsonl(path: Path) -> Iterator[Any]:
    """The objects of a JSONL file. Lines end at \\n only (never at U+2028 and the like)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1:
                raw = raw.removeprefix(BOM)
                not_utf8(path, raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(decode_error(path, raw, e, n))
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(
                        f"{path}:{n}: not valid JSON ({e.msg}); fix or remove that line"
                    )


def is_jsonl(path: Path) -> bool:
    return Path(path).suffix.lower() in {".jsonl", ".ndjson"}


def ijson_backend() -> Any:
    """ijson's C backend (yajl2_c) when it is built, else the best one installed."""
    import ijson

    try:
        return ijson.get_backend("yajl2_c")
    except ImportError:
        return ijson


class _Reader:
    """A raw file read through ijson, after the bytes already peeked at; counts the position."""

    def __init__(self, raw: IO[bytes], head: bytes) -> None:
        self.raw, self.head = raw, head
        self.offset = self.lines = 0  # bytes and newlines read so far
        self.chunk = (0, 0)  # (offset, newlines) at the start of the last chunk read

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # ijson's probe: bytes or text?
            return b""
        data, self.head = (self.head, b"") if self.head else (self.raw.read(n), b"")
        self.chunk = (self.offset, self.lines)
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return data


def iter_json_list(path: Path) -> Iterator[Any]:
    """The items of a JSON list, parsed incrementally: the list never sits in memory."""
    with open(path, "rb", buffering=0) as raw:
        head = raw.read(1 << 16).removeprefix(BOM)
        not_utf8(path, head)
        start = head.lstrip()[:1]
        if start and start != b"[":
            raise UserError(
                f"{path} must hold a JSON list of objects, not a JSON "
                f"{'object' if start == b'{' else 'value'} (or be JSONL named .jsonl)"
            )
        reader = _Reader(raw, head)
        count = 0
        try:
            for item in ijson_backend().items(reader, "item", use_float=True):
                yield item
                count += 1
        except Exception as e:  # ijson's JSONError, or its backends' decoding errors
            raise UserError(json_error(path, e, count, reader)) from None


def json_error(path: Path, e: Exception, count: int, reader: _Reader) -> str:
    """One line for a JSON list ijson could not parse, with the position."""
    fix = "give a JSON list of objects, or JSONL with a .jsonl name"
    if path.is_file() and path.stat().st_size <= EXACT_ERRORS_UP_TO:
        data = path.read_bytes().removeprefix(BOM)
        try:
            json.loads(decode_utf8(path, data))
        except json.JSONDecodeError as exact:
            return f"{path} is not valid JSON (line {exact.lineno}: {exact.msg}); {fix}"
    # yajl's message spans lines (or is a bytes repr with escaped ones): keep the first.
    text = str(e).removeprefix("b'").replace("\\n", "\n").strip()
    first = text.splitlines()[0].strip() if text else type(e).__name__
    if "UTF8" in first:
        first += " (the file is not UTF-8: save it as UTF-8)"
    offset, lines = reader.chunk
    return (
        f"{path} is not valid JSON after record {count} (between line {lines + 1} and line "
        f"{reader.lines + 1}, from byte {offset:,}: {first}); {fix}"
    )


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a dataset: a JSON list of objects, or JSONL, both streamed."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input file {path} does not exist; set INPUT=path/to/data.json")
    records = iter_jsonl(path) if is_jsonl(path) else iter_json_list(path)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise UserError(f"{path}: record {i} is a {type(record).__name__}, not an object")
        yield record


class RecordWriter:
    """Writes records in the input's own format: a JSON list (one record a line) or JSONL."""

    def __init__(self, f: IO[str], jsonl: bool) -> None:
        self.f, self.jsonl, self.n = f, jsonl, 0
        if not jsonl:
            f.write("[")

    def write(self, record: dict[str, Any]) -> None:
        if self.jsonl:
            self.f.write(dumps(record) + "\n")
        else:
            self.f.write(("\n" if self.n == 0 else ",\n") + dumps(record))
        self.n += 1

    def close(self) -> None:
        if not self.jsonl:
            self.f.write("\n]\n" if self.n else "]\n")


def request_hash(request: dict[str, Any]) -> str:
    """Identity of a request for reuse: its url and body, not its custom_id.

    An inline or local image counts by the sha256 of its bytes (images.canonical_body), so the
    reference in requests.jsonl and the data URL in its chunk hash alike.
    """
    canonical = json.dumps(
        [request.get("url"), canonical_body(request.get("body"))],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
