"""answers/: what every paid attempt got back, one row per request. The one owner of the row.

A step's answers/ holds one file per attempt of a chunk, named by `layout.StepDir.answers_file`
(`<chunk sha256[:32]>-<attempt>.jsonl`), written whole once that attempt's batch has ended and
never edited, and one journal per live run or sample (br/journal.py: appended to as answers
arrive; read through `journal.rows`, which leaves out its sent marks and a torn last line).
Each row is one request of that attempt:

    {"custom_id": ..., "hash": <request_hash of the line sent>,
     "outcome": "succeeded" | "failed", "response": <the answer> | None,
     "error": {"code", "message", "status"} | None, "retryable": bool, "usage": {...} | None,
     "batch_id": ..., "attempts": <1 + the attempt>, "cut_short": true (only when it was),
     "mode": "live" | "flex" (only for an answer got through the synchronous API: br/live)}

results_NNN.jsonl holds the same rows (per request, its last attempt's). Rows are found by the
request's hash, not its custom_id, so an answer serves exactly the request body it answers:
an edited record makes a new hash and is sent again, and answers survive a new split or a
deleted build/ chunk. When several attempts hold one hash, a success wins (whenever it came),
else the latest attempt's failure.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from br import journal
from br.cli import UserError
from br.files import write_jsonl
from br.layout import StepDir
from br.records import LENIENT, dumps, fast_dumps

Row = dict[str, Any]


# --------------------------------------------------------------------------- one row


def stored(custom_id: str, hash_hex: str, result: Row) -> Row:
    """The row kept for one request: its result (outcomes.outcome's, with batch_id and
    attempts) under its custom_id and the hash of the line sent."""
    return {"custom_id": custom_id, "hash": hash_hex, **result}


def succeeded(row: Row) -> bool:
    return row.get("outcome") == "succeeded"


def final(row: Row) -> bool:
    """No attempt can change it: a success, or a failure that retrying cannot fix."""
    return succeeded(row) or not row.get("retryable", True)


class Failure(NamedTuple):
    code: str  # "unknown" when the row names none
    message: str
    status: int | None  # the HTTP status, when there was one


def failure(row: Row) -> Failure:
    error = row.get("error") or {}
    return Failure(
        str(error.get("code") or "unknown"), str(error.get("message") or ""), error.get("status")
    )


def mode(row: Row) -> str:
    """How it was paid for: batch, or live / flex (answered through the synchronous API)."""
    return str(row.get("mode") or "batch")


def attempts(row: Row) -> int:
    """How many times the request was sent (1 when the row does not say)."""
    return int(row.get("attempts") or 1)


def rank(row: Row) -> tuple[bool, int]:
    """Which of two rows of one request stands: the greater (a success, then the later)."""
    return succeeded(row), int(row.get("attempts") or 0)


# --------------------------------------------------------------------------- files


def write(path: Path, rows: Iterable[Row]) -> int:
    """One attempt's rows, whole or not at all (path: StepDir.answers_file): values read as
    JSON from the provider's output, written as `dumps` writes them (fast_dumps)."""
    return write_jsonl(path, rows, fast_dumps)


def rows(step: StepDir) -> Iterator[Row]:
    """Every row of every attempt in the step's answers/, file by file in name order."""
    for path in step.answer_files():
        yield from journal.rows(path)


def answers_dir(path: Path) -> StepDir:
    """The step whose answers/ `path` is (a command's --answers): its files are the step's."""
    step = StepDir(path.parent)
    if path != step.answers:
        raise UserError(
            f"{path} is not a step's answers directory: name the step's {step.answers.name}/ "
            f"({step.answers})"
        )
    return step


UPSERT = (
    "INSERT INTO ans VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(hash) DO UPDATE SET "
    "ok = excluded.ok, n = excluded.n, row = excluded.row, text = excluded.text, "
    "cut = excluded.cut WHERE (excluded.ok, excluded.n) >= (ans.ok, ans.n)"
)


def answer_text(row: Row) -> tuple[str | None, bool]:
    """(its answer, cut short) of a success whose answer is text and whose attempts are
    counted: all the merge reads of it (`Index.answers`); (None, False) for any other row."""
    text, n = row.get("response"), row.get("attempts")
    if not (succeeded(row) and isinstance(text, str) and type(n) is int and n > 0):
        return None, False
    return text, bool(row.get("cut_short"))


# The answers' bytes under which the merge keeps its index in memory (`Memory`): a row held
# there takes less than its line in the file, so under 32 MB the merge stays well within its
# memory, and skips SQLite's insert and select of every row (0.15 s of CPU per 20,000).
IN_MEMORY_BYTES = 32 << 20


class Memory:
    """`Index.add_files` and `Index.answers` in a dict: the same rows stand (`rank`, ties to
    the row read last), for a step whose answers fit in memory (IN_MEMORY_BYTES)."""

    def __init__(self) -> None:
        # hash -> (ok, n, the row's line or None for a text answer, text, cut)
        self.rows: dict[bytes, tuple[bool, int, str | None, str | None, bool]] = {}

    def add_files(self, paths: Iterable[Path]) -> None:
        rows = self.rows
        for path in paths:
            for line, row in journal.row_lines(path):
                h = bytes.fromhex(row["hash"])
                ok, n = rank(row)
                old = rows.get(h)
                if old is None or (ok, n) >= old[:2]:
                    text, cut = answer_text(row)
                    rows[h] = (ok, n, line if text is None else None, text, cut)

    def answers(self, hashes: list[bytes]) -> dict[bytes, Row]:
        found: dict[bytes, Row] = {}
        for h in hashes:
            standing = self.rows.get(h)
            if standing is None:
                continue
            _, n, line, text, cut = standing
            found[h] = LENIENT.decode(line) if text is None else answer_row(text, n, cut)
        return found


def answer_row(text: str, n: int, cut: bool) -> Row:
    """A text answer's row as the merge reads it: {outcome, response, attempts, cut_short}."""
    row: Row = {"outcome": "succeeded", "response": text, "attempts": n}
    if cut:
        row["cut_short"] = True
    return row


class Index:
    """Per request hash, the row that stands (see `rank`), in an SQLite table of `db` (one
    row per request whatever the number of attempts: memory stays flat)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.execute(
            "CREATE TABLE IF NOT EXISTS ans(hash BLOB PRIMARY KEY, ok INT, n INT, row TEXT, "
            "text TEXT, cut INT)"
        )

    def add(self, found: Iterable[Row]) -> None:
        # Ties (the same rank) go to the row read last: in name order, as `rows` reads them.
        self.db.executemany(
            UPSERT,
            ((bytes.fromhex(r["hash"]), *rank(r), dumps(r), *answer_text(r)) for r in found),
        )

    def add_files(self, paths: Iterable[Path]) -> None:
        """`add` of every row of these files (answer_files' name order), each line decoded once
        for its hash, rank and answer, and kept as it is (no encoding again)."""

        def found() -> Iterator[tuple[bytes, bool, int, str, str | None, bool]]:
            for path in paths:
                for line, row in journal.row_lines(path):
                    yield bytes.fromhex(row["hash"]), *rank(row), line, *answer_text(row)

        self.db.executemany(UPSERT, found())

    def answers(self, hashes: list[bytes]) -> dict[bytes, Row]:
        """`get`, with a text answer's row as the merge reads it ({outcome, response,
        attempts, cut_short}), not decoded from the row kept: the same values."""
        if not hashes:
            return {}
        marks = ",".join("?" * len(hashes))
        query = f"SELECT hash, row, text, n, cut FROM ans WHERE hash IN ({marks})"
        found: dict[bytes, Row] = {}
        for h, row, text, n, cut in self.db.execute(query, hashes):
            found[h] = LENIENT.decode(row) if text is None else answer_row(text, n, bool(cut))
        return found

    def get(self, hashes: list[bytes]) -> dict[bytes, Row]:
        """The standing row of each of these request hashes that has one."""
        if not hashes:
            return {}
        marks = ",".join("?" * len(hashes))
        query = f"SELECT hash, row FROM ans WHERE hash IN ({marks})"
        return {h: LENIENT.decode(row) for h, row in self.db.execute(query, hashes)}
