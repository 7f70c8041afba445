"""requests.hashes: what make_requests made, so the split and the merge need not build or hash a
request again.

make_requests writes it beside requests.jsonl, after it: one line per record of INPUT, in order,
the hash of the record's request (`request_hash`, the key answers/ rows are found by) and its
estimated input tokens (tokens.estimate_tokens), or `-` for a record with no line in
requests.jsonl (left out by `where:`, skipped for a missing field or its image); then a last
line saying what it describes:

    {"made": {"requests": <sha256 of requests.jsonl's bytes as written>,
              "input": <sha256 of INPUT's bytes as read>, "config": <sha256 of CONFIG's bytes>,
              "args": [step, data key, image root],
              "images": <the local images' stamp, by the stat each had when it was read>,
              "model": <every request's model>, "endpoint": <every request's url>}}

It is used only while it describes what is there, and otherwise ignored (everything is then
computed again, as before it existed; a damaged file too). The split reads a request's hash from
it only while requests.jsonl holds the bytes it was written for (their sha256, read through the
same open file the split then reads: two makes at once on one step may each write both files),
and writes each chunk's identities from it (chunk.py: `chunk_NNN.info`). The merge reads it in
place of building every record's request again when CONFIG, the step's arguments and the local
images are what make_requests read, and INPUT's bytes, hashed as the merge reads them, are the
ones make_requests read (checked before anything is committed: out of step, the merge builds
every request again and says which changed), and requests.jsonl holds the bytes it was
written for: an answer is attached only to a record whose request is the one sent.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from br.files import sha256_of
from br.layout import hashes_of

NONE = "-"  # a record with no request line
TAIL = 4096  # bytes read back from the end for the last line (it is about 400)


class Untrusted(Exception):
    """requests.hashes is damaged: what it was to spare is computed instead."""


def image_root(root: Path) -> str:
    return os.path.abspath(root)


@dataclass(frozen=True)
class Made:
    """The last line of requests.hashes: what its hashes were made from."""

    requests: str
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

    def describes(self, requests: IO[bytes]) -> bool:
        """It was written for the bytes of this open requests.jsonl (read through once)."""
        return self.made is not None and self.made.requests == sha256_of(requests)

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
                raise Untrusted(f"{self.file.name}:{n} is damaged ({raw[:80]!r})") from None

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


def known(requests: Path, f: IO[bytes]) -> tuple[Made, Iterator[tuple[bytes, int]]] | None:
    """(what it was made from, (hash, tokens) of each line of requests.jsonl open as `f`, in
    order) when requests.hashes was written for its bytes; else None."""
    hashes = opened(requests)
    if hashes is None or hashes.made is None or not hashes.describes(f):
        if hashes is not None:
            hashes.close()
        return None
    return hashes.made, _reading(hashes)


def _reading(hashes: Hashes) -> Iterator[tuple[bytes, int]]:
    with contextlib.closing(hashes):
        yield from hashes.requests()


def trusted(requests: Path, config_sha: str, args: list[str], images: Path) -> Hashes | None:
    """requests.hashes, open, when it was made from this CONFIG, these arguments and these
    local images as they are, for requests.jsonl's bytes (INPUT is checked as the merge reads
    it); else None (the merge then builds every request again)."""
    hashes = opened(requests)
    if hashes is None:
        return None
    m = hashes.made
    if m is not None and (m.config, m.args) == (config_sha, args):
        from br.prompts.images.cache import stamp

        try:
            with open(requests, "rb") as f:
                sent = hashes.describes(f)  # the requests sent are the ones it hashes
        except OSError:
            sent = False
        if sent and m.images == stamp(images):
            return hashes
    hashes.close()
    return None
