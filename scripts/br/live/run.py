"""`make caption MODE=live` (or flex): a step's chunks answered through the synchronous API.

Reads chunks.mk, the chunks and answers/; sends every request that answers/ has no final
answer for (a success, or a failure retrying cannot fix), CONCURRENCY at once, and writes each
answer the moment it arrives to the run's journal in answers/ (br/journal.py: appended,
fsynced). Then results_NNN.jsonl for every chunk (its requests' standing rows, as a batch's) and
results.list, so the merge, report, gallery and pipelines read a live run as a batch run.

Exactly once as far as a synchronous API allows: an answer is on disk before the next request
takes its place, so a kill -9 loses at most the CONCURRENCY requests in flight, and a rerun
sends only what has no answer. Each request is marked sent in the journal before it goes, so
`make report` can say how many a kill may have had paid twice. Before the first request,
live.sent is touched: chunks.mk is then remade on the next run, in any mode, and its split
leaves out what was answered here, so switching to MODE=batch pays nothing twice.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

from br.answers import store
from br.batches.chunk import fresh
from br.batches.providers import line_identity
from br.cli import UserError, note
from br.config import Config
from br.files import write_jsonl
from br.journal import Journal
from br.layout import StepDir
from br.live.call import Caller
from br.live.pace import Pace
from br.records import iter_jsonl

PROGRESS_EVERY = 5.0  # seconds between progress lines
BLOCK = 1000  # chunk lines read, looked up and queued at a time


class Tally:
    """Progress on stderr: answered of total, failed, 429s waited out."""

    def __init__(self, total: int, mode: str) -> None:
        self.total, self.mode = total, mode
        self.answered = self.failed = 0
        self.started = self.last = time.monotonic()

    def add(self, row: dict[str, Any], caller: Caller) -> None:
        self.answered += 1
        self.failed += not store.succeeded(row)
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY or self.answered == self.total:
            self.last = now
            rate = self.answered / max(now - self.started, 1e-6)
            note(
                f"{self.mode}: {self.answered}/{self.total} answered ({self.failed} failed), "
                f"{rate:.1f} requests/s, {caller.waited} rate limit wait(s)"
            )


Line = tuple[bytes, dict[str, Any]]  # (request hash, the chunk's line)


def todo_chunks(step: StepDir, ids: list[str]) -> list[str]:
    """The chunks whose results are not yet made (Make's rule: older than the chunk)."""
    out = []
    for nnn in ids:
        path = step.chunk(nnn)
        if not path.exists():
            raise UserError(f"{path} does not exist; run make to split the requests")
        if not fresh(step.results(nnn), path, step.batch_id(nnn)):
            out.append(nnn)
    return out


def blocks(step: StepDir, nnn: str) -> Iterator[list[Line]]:
    """A chunk's lines with their hashes, BLOCK at a time: memory stays flat however many."""
    lines = iter_jsonl(step.chunk(nnn))
    while block := list(islice(lines, BLOCK)):
        yield [(bytes.fromhex(line_identity(r)[1]), r) for r in block]


class Queue:
    """The requests of this run with no final answer, each once (a hash repeated across
    records or chunks is sent once), in an SQLite table beside the index."""

    def __init__(self, db: sqlite3.Connection, index: store.Index) -> None:
        self.db, self.index = db, index
        db.execute("CREATE TABLE queued(hash BLOB PRIMARY KEY, taken INT DEFAULT 0)")

    def add(self, block: list[Line]) -> int:
        """Queue the block's unanswered requests; how many were new."""
        standing = self.index.get([h for h, _ in block])
        before = self.db.total_changes
        self.db.executemany(
            "INSERT OR IGNORE INTO queued(hash) VALUES (?)",
            ((h,) for h, _ in block if not store.final(standing.get(h, {}))),
        )
        return self.db.total_changes - before

    def take(self, block: list[Line]) -> Iterator[dict[str, Any]]:
        """The block's queued requests not yet sent, each marked as sent."""
        for h, request in block:
            cursor = self.db.execute(
                "UPDATE queued SET taken = 1 WHERE hash = ? AND taken = 0", (h,)
            )
            if cursor.rowcount:
                yield request


def run_live(
    step: StepDir,
    config: Config,
    step_name: str,
    mode: str,
    concurrency: int,
    retries: int,
    token_budget: int | None = None,
) -> list[str]:
    """Answer the step's chunks live; the chunk ids written (their results files)."""
    ids = step.chunk_ids()
    if ids is None:
        raise UserError(f"{step.manifest} does not exist; run make to split the requests first")
    todo = todo_chunks(step, ids)
    with tempfile.NamedTemporaryFile(dir=step.root, prefix=".live-", suffix=".db") as tmp:
        db = sqlite3.connect(tmp.name)
        db.execute("PRAGMA journal_mode=OFF")
        index = store.Index(db)
        index.add(store.rows(step))
        queue = Queue(db, index)
        total = sum(queue.add(block) for nnn in todo for block in blocks(step, nnn))
        if total:
            step.live_sent.touch()
            note(f"{step.root}: sending {total} request(s) {mode}, {concurrency} at once")
            caller = Caller(config.for_step(step_name), mode, retries, config.provider(step_name))
            tally = Tally(total, mode)
            pace = Pace(lambda model: token_budget or config.token_budget(model))
            with Journal(step.live_journal(), step.live_journals()) as log:

                def before(request: dict[str, Any]) -> None:
                    pace.hold(request)  # the token budget, per minute (pace.py)
                    log.sent(line_identity(request)[1])

                def done(request: dict[str, Any], row: dict[str, Any]) -> None:
                    cid, h = line_identity(request)[:2]  # Gemini's custom_id is its key
                    kept = store.stored(str(cid or ""), h, row)
                    log.add([kept])
                    index.add([kept])
                    tally.add(row, caller)

                pending = (r for nnn in todo for b in blocks(step, nnn) for r in queue.take(b))
                caller.send_all(pending, concurrency, done, before)
        for nnn in todo:
            write_jsonl(step.results(nnn), results(index, blocks(step, nnn)))
        db.close()
    return ids


def results(index: store.Index, chunk: Iterator[list[Line]]) -> Iterator[dict[str, Any]]:
    """A chunk's results rows: each request's standing row, under the chunk line's custom_id."""
    for block in chunk:
        rows = index.get([h for h, _ in block])
        for h, request in block:
            yield {**rows[h], "custom_id": line_identity(request)[0]}
