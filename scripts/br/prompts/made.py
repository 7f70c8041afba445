"""requests.hashes: what make_requests made, so the split and the merge need not build or hash a
request again.

make_requests writes it beside requests.jsonl, after it: one line per record of INPUT, in order,
the hash of the record's request (`request_hash`, the key answers/ rows are found by) and its
estimated input tokens (tokens.estimate_tokens), or `-` for a record with no line in
requests.jsonl (left out by `where:`, skipped for a missing field or its image); then a last
line saying what it describes:

    {"made": {"requests": [inode, size, mtime_ns of requests.jsonl],
              "input": <sha256 of INPUT's bytes as read>, "config": <sha256 of CONFIG's bytes>,
              "args": [step, data key, image root], "images": <the local images' stamp>,
              "model": <every request's model>, "endpoint": <every request's url>}}

It is used only while it describes what is there, and otherwise ignored (everything is then
computed again, as before it existed): the split reads a request's hash from it only while
requests.jsonl is the file it describes (any rewrite or edit changes its inode, size or mtime);
the split also writes each chunk's identities from it (chunk.py: `chunk_NNN.info`); the merge
reads it in place of building every record's request again only when, moreover,
CONFIG, the step's arguments and the local images are what make_requests read, and INPUT's
bytes, hashed as the merge reads them, are the ones make_requests read (checked before anything
is committed: out of step, the merge builds every request again and says which changed).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from br.cli import UserError
from br.layout import hashes_of

NONE = "-"  # a record with no request line
TAIL = 4096  # bytes read back from the end for the last line (it is about 300)


def identity(st: os.stat_result) -> list[int]:
    """What changes whenever a file is rewritten or edited: inode, size, mtime."""
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def image_root(root: Path) -> str:
    return os.path.abspath(root)


@dataclass(frozen=True)
class Made:
    """The last line of requests.hashes: what its hashes were made from."""

    requests: list[int]
    input: str
    config: str
    args: list[str]
    images: str
    model: str | None = None  # None: not one model for every request (or none at all)
    endpoint: str | None = None

    def line(self) -> str:
        return json.dumps({"made": self.__dict__}, sort_keys=True) + "\n"


def write_line(out: IO[str], sha: str | None, tokens: int = 0) -> None:
    """One record's line: its request's hash and tokens, or None (no request line)."""
    out.write(f"{sha} {tokens}\n" if sha else f"{NONE}\n")


class Hashes:
    """An open requests.hashes whose last line was read (`made`: None when it has none)."""

    def __init__(self, requests: Path) -> None:
        self.file = open(hashes_of(requests), "rb")  # noqa: SIM115 (closed in close())
        size = os.fstat(self.file.fileno()).st_size
        self.file.seek(max(0, size - TAIL))
        last = self.file.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        self.file.seek(0)
        try:
            self.made: Made | None = Made(**json.loads(last)["made"])
        except (ValueError, KeyError, TypeError):
            self.made = None

    def describes(self, requests: IO[Any]) -> bool:
        """It was written for this open requests.jsonl as it is."""
        return self.made is not None and self.made.requests == identity(os.fstat(requests.fileno()))

    def records(self) -> Iterator[tuple[bytes, int] | None]:
        """Each record's (request hash as 32 bytes, tokens), or None, in record order."""
        for n, raw in enumerate(self.file, 1):
            if raw.startswith(b"{"):
                return  # the last line
            if raw.rstrip() == NONE.encode():
                yield None
                continue
            sha, _, tokens = raw.partition(b" ")
            try:
                yield bytes.fromhex(sha.decode()), int(tokens)
            except ValueError:
                raise UserError(
                    f"{self.file.name}:{n} is damaged ({raw[:80]!r}); delete the file and rerun "
                    "make (make_requests writes it again)"
                ) from None

    def requests(self) -> Iterator[tuple[bytes, int]]:
        """(hash, tokens) of each line of requests.jsonl, in order."""
        for found in self.records():
            if found is not None:
                yield found

    def close(self) -> None:
        self.file.close()


def opened(requests: Path) -> Hashes | None:
    """requests.jsonl's hashes file, open, if there is one with its last line."""
    try:
        hashes = Hashes(requests)
    except OSError:
        return None
    if hashes.made is None:
        hashes.close()
        return None
    return hashes


def known(requests: Path, f: IO[Any]) -> tuple[Made, Iterator[tuple[bytes, int]]] | None:
    """(what it was made from, (hash, tokens) of each line of requests.jsonl open as `f`, in
    order) when requests.hashes describes it; else None."""
    hashes = opened(requests)
    if hashes is None or hashes.made is None:
        return None
    if not hashes.describes(f):
        hashes.close()
        return None
    return hashes.made, _reading(hashes)


def _reading(hashes: Hashes) -> Iterator[tuple[bytes, int]]:
    with contextlib.closing(hashes):
        yield from hashes.requests()


def trusted(requests: Path, config_sha: str, args: list[str], images: Path) -> Hashes | None:
    """requests.hashes, open, when it describes requests.jsonl as it is and was made from this
    CONFIG, these arguments and these local images (INPUT is checked as the merge reads it);
    else None (the merge then builds every request again)."""
    hashes = opened(requests)
    if hashes is None:
        return None
    try:
        with open(requests, "rb") as f:
            ok = hashes.describes(f)
    except OSError:
        ok = False
    m = hashes.made
    if ok and m is not None and (m.config, m.args) == (config_sha, args):
        from br.prompts.images.cache import stamp

        if m.images == stamp(images):
            return hashes
    hashes.close()
    return None
