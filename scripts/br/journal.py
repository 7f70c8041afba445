"""Append-only journals: a live run's answers, each line on disk as it arrives.

A live run or a sample (br/live) opens one journal in the step's answers/ (its name:
layout.StepDir.live_journal) and appends to it, each write flushed and fsynced before the
next request takes its place, as the ledger is written:

    {"sent": <request hash>}      before the request goes out (what a kill may have paid for)
    <an answers/ row>             when its answer arrives (br/answers/store.py's row)

So a million answers are one file, not a million. A kill -9 can leave a last line without
its newline: readers ignore it (`lines`), and the next journal opened in that answers/ cuts
it off (`mend`), unless its writer still runs (each writer holds an exclusive flock on its
journal while it writes). Every answers/ file is read through `rows`: a journal's answer rows
and a batch attempt's file (written whole) alike, so answered_hashes (split), the store, the
merge and the report read both kinds, and the files of earlier versions (one per answer).

`resent(paths)` counts what may have been paid twice: a request marked sent in a journal
with no answer in it (its run was killed with it in flight), and sent again since (it has an
answer, or a sent mark in another journal).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from br.cli import UserError
from br.records import _DECODER, dumps

SENT = "sent"
BLOCK = 65536  # bytes read at a time when looking back for the last newline


def text_lines(path: Path, fast: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """The whole lines of a JSONL file, each with its text: a last line without its newline
    (a write a kill cut short) is left out; any other line that is not JSON is an error.
    `fast`: decoded by orjson where it can (2.5 times the speed), for a reader of a row's
    strings, booleans and small integers only (orjson reads an integer past 64 bits as a
    float); what it refuses is read as before."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                return  # torn: the last line of a journal whose writer was killed
            if not raw.strip():
                continue
            if fast:
                try:
                    yield raw.decode("utf-8"), orjson.loads(raw)
                    continue
                except (orjson.JSONDecodeError, UnicodeDecodeError):
                    pass
            try:
                text = raw.decode("utf-8")
                yield text, _DECODER.decode(text)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError alike
                raise UserError(f"{path}:{n}: not valid JSON ({e}); fix or remove that line")


def lines(path: Path) -> Iterator[dict[str, Any]]:
    """The whole lines of a JSONL file (`text_lines`), decoded."""
    for _, value in text_lines(path):
        yield value


def row_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The answers/ rows of one answers/ file with their text (a journal's sent marks left
    out), for the merge's index: it keeps a row as the text it read, and reads of the row
    only its hash, outcome, attempts and text answer (`fast`)."""
    for text, value in text_lines(path, fast=True):
        if "outcome" in value:
            yield text, value


def rows(path: Path) -> Iterator[dict[str, Any]]:
    """The answers/ rows of one answers/ file (a journal's sent marks left out)."""
    for _, row in text_lines(path):
        if "outcome" in row:
            yield row


def sent_marks(path: Path) -> Iterator[str]:
    for line in lines(path):
        if SENT in line and "outcome" not in line:
            yield str(line[SENT])


def resent(journals: Iterable[Path], every: Iterable[Path]) -> int:
    """How many requests a killed run sent (marked in its journal, with no answer there) and
    a later one sent again (an answer in any of `every` answers/ file, or a mark in another
    journal): each may have been paid twice."""
    orphans: dict[str, Path] = {}  # hash -> the journal it went unanswered in (few: in flight)
    for path in journals:
        answered = {r.get("hash") for r in rows(path)}
        orphans.update({h: path for h in sent_marks(path) if h not in answered})
    again: set[str] = set()
    for path in every if orphans else []:
        for line in lines(path):
            h = line.get("hash") if "outcome" in line else line.get(SENT)
            if h in orphans and (path != orphans[h] or "outcome" in line):
                again.add(str(h))
    return len(again)


def mend(journals: Iterable[Path]) -> None:
    """Cut the torn last line off each journal no running writer holds."""
    for path in journals:
        with open(path, "r+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is still writing it
            size = keep = f.seek(0, os.SEEK_END)
            while keep > 0:  # back from the end, a block at a time, to the last newline
                start = max(keep - BLOCK, 0)
                f.seek(start)
                cut = f.read(keep - start).rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                keep = start
            if keep != size:
                f.truncate(keep)
                os.fsync(f.fileno())


class Journal:
    """One run's journal, open for appending, held (flock) until closed."""

    def __init__(self, path: Path, others: Iterable[Path] = ()) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        mend(p for p in others if p != path)
        self.path = path
        self.file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed by close()
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def add(self, items: Iterable[dict[str, Any]]) -> None:
        """Lines appended and on disk (fsynced) before this returns."""
        data = b"".join(dumps(item).encode() + b"\n" for item in items)
        if data:
            self.file.write(data)
            self.file.flush()
            os.fsync(self.file.fileno())

    def sent(self, hash_hex: str) -> None:
        self.add([{SENT: hash_hex}])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
