"""The merge's matching: which answer belongs to which record, and what it becomes there.

Each record's request is built again from the record as it is now, exactly as make_requests.py
builds it, and an answer is attached only when that request is the one in requests.jsonl for
the record's data key: the answer found by its request-body hash in answers/ (store.py). A
record whose request now differs from the one sent (INPUT, CONFIG or an image changed while
the batches ran) stops the merge before anything is written (`Changed`).

What an answer becomes there is values.py's (`Merger`). While requests.hashes describes what
INPUT, CONFIG and the images are (prompts/made.py), each record's request hash is read from it
instead of building the request again (`merge_made`). The indexes live in a temporary SQLite
file, so memory stays flat (the answers of a small step in memory: Answers).
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError

# isort: split

import hashlib
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import IO, Any, TypeVar

from br.answers import store
from br.answers.values import Merger
from br.config import Step
from br.files import atomic_output
from br.layout import StepDir
from br.prompts import made
from br.prompts.build import Built, custom_id_of, step_requests
from br.prompts.images.cache import LocalImages
from br.prompts.images.identity import request_hash
from br.records import RecordWriter, dumps, is_jsonl, iter_jsonl, iter_records

BATCH = 500
T = TypeVar("T")


class OutOfStep(Exception):
    """requests.jsonl or skipped.jsonl is not in INPUT's order as it is now: the indexed
    path (`Indexed`) serves instead."""


UNTOUCHED, CHANGED = "untouched", "changed"  # a record's verdict, else its request's hash
Keyed = tuple[int, dict[str, Any], "Built | None", str | None]  # index, record, built, cid


class Streamed:
    """requests.jsonl and skipped.jsonl read alongside INPUT, in record order (make_requests
    writes both in that order): the usual case, with no index and no JSON decode of a request.

    A record's request is the one sent when its line is byte-equal to requests.jsonl's next
    line (the custom_id is in the line: the same line is the same record's same request); a
    record skipped for its image is the next custom_id of skipped.jsonl with a reason. Anything
    else (a record edited, added, left out or moved, a line left over at the end) raises
    OutOfStep, and the merge starts again on `Indexed`, which says which records changed.
    """

    def __init__(self, requests: Path, skipped: Path) -> None:
        self.file = open(requests, "rb")  # noqa: SIM115 (closed in close())
        self.line = self.file.readline()
        found = iter_jsonl(skipped) if skipped.exists() else iter(())
        self.skips = (row["custom_id"] for row in found if row.get("reason"))
        self.skip = next(self.skips, None)

    def verdicts(self, keyed: list[Keyed], now: dict[int, bytes]) -> list[bytes | str]:
        out: list[bytes | str] = []
        for index, _, built, _ in keyed:
            if index not in now:
                out.append(UNTOUCHED)
                continue
            assert built is not None
            if self.line and self.line == built.line.encode():
                self.line = self.file.readline()
                out.append(now[index])
            elif self.skip is not None and self.skip == built.custom_id:
                self.skip = next(self.skips, None)
                out.append(UNTOUCHED)
            else:
                raise OutOfStep
        return out

    def finish(self) -> None:
        if self.line:
            raise OutOfStep  # a request sent for a record no longer there (or not selected)

    def close(self) -> None:
        self.file.close()


class Indexed:
    """What requests.jsonl and skipped.jsonl hold per custom_id, in tables of the answers'
    on-disk index: any order, and every record whose request changed is found and counted."""

    def __init__(self, db: sqlite3.Connection, requests: Path, skipped: Path) -> None:
        self.db = db
        self.db.execute("CREATE TABLE req(cid TEXT PRIMARY KEY, hash BLOB)")
        # Records make_requests left out for their image (a failed preflight among them): the
        # merge, which checks no URL, would build their requests.
        self.db.execute("CREATE TABLE skip(cid TEXT PRIMARY KEY)")
        self.db.executemany(
            "INSERT OR REPLACE INTO req VALUES (?, ?)",
            ((r["custom_id"], bytes.fromhex(request_hash(r))) for r in iter_jsonl(requests)),
        )
        if skipped.exists():
            self.db.executemany(
                "INSERT OR IGNORE INTO skip VALUES (?)",
                ((r["custom_id"],) for r in iter_jsonl(skipped) if r.get("reason")),
            )

    def select(self, query: str, keys: list[Any]) -> dict[Any, Any]:
        marks = ",".join("?" * len(keys))
        return dict(self.db.execute(query.format(marks=marks), keys)) if keys else {}

    def verdicts(self, keyed: list[Keyed], now: dict[int, bytes]) -> list[bytes | str]:
        cids = [cid for *_, cid in keyed if cid is not None]
        sent = self.select("SELECT cid, hash FROM req WHERE cid IN ({marks})", cids)
        skipped = set(self.select("SELECT cid, 1 FROM skip WHERE cid IN ({marks})", cids))
        out: list[bytes | str] = []
        for index, _, _, cid in keyed:
            was = sent.get(cid) if cid is not None else None
            if index not in now or (was is None and cid in skipped):
                # Not selected, or skipped (for a field, or its image): untouched, unless its
                # request was sent: then the record changed since.
                out.append(CHANGED if index not in now and was is not None else UNTOUCHED)
            else:  # edited, added or newly selected: never answered
                out.append(CHANGED if was != now[index] else was)
        return out

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


class Answers:
    """The standing answer per request hash, and the requests sent: `Streamed` first,
    `Indexed` (`indexed()`) when INPUT is out of step. The answers are indexed in memory
    (store.Memory) while their files are under store.IN_MEMORY_BYTES, else in a temporary
    SQLite file (store.Index), which also holds Indexed's tables."""

    def __init__(self, directory: Path, requests: Path, answers: StepDir, skipped: Path) -> None:
        self.directory, self.requests, self.skipped = directory, requests, skipped
        self.tmp: IO[bytes] | None = None
        self._db: sqlite3.Connection | None = None
        files = answers.answer_files()
        if sum(path.stat().st_size for path in files) <= store.IN_MEMORY_BYTES:
            self.index: store.Memory | store.Index = store.Memory()
        else:
            self.index = store.Index(self.db)
        self.index.add_files(files)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            where = {"dir": self.directory, "prefix": ".merge-", "suffix": ".db"}
            self.tmp = tempfile.NamedTemporaryFile(**where)  # noqa: SIM115 (closed in close())
            self._db = sqlite3.connect(self.tmp.name)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
        return self._db

    def streamed(self) -> Streamed:
        return Streamed(self.requests, self.skipped)

    def indexed(self) -> Indexed:
        return Indexed(self.db, self.requests, self.skipped)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        if self.tmp is not None:
            self.tmp.close()


def rebuilt(
    path: Path, step: Step, data_key: str, local: LocalImages
) -> Iterator[tuple[int, dict[str, Any], Built | None]]:
    """Every record of INPUT, in order, with the request make_requests.py builds for it now
    (None: not selected by `where:`; a Built without request: skipped)."""
    held: dict[int, dict[str, Any]] = {}  # read, and not yet built: one or two records

    def records() -> Iterator[dict[str, Any]]:
        for index, record in enumerate(iter_records(path)):
            held[index] = record
            yield record

    quiet = step_requests(
        records(), step, data_key, local, None, warn=lambda _: None, every=True, window=False
    )
    for built, _ in quiet:
        yield built.index, held.pop(built.index), built if built.selected else None


class Changed:
    """Records whose request now is not the one in requests.jsonl: counted, the first named."""

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[int, str | None] | None = None

    def add(self, index: int, cid: str | None) -> None:
        self.count += 1
        self.first = self.first or (index, cid)

    def check(self, input_path: Path) -> None:
        if self.first is None:
            return
        index, cid = self.first
        raise UserError(
            f"{self.count} record(s) of {input_path} changed since requests.jsonl was built "
            f"(first: record {index} '{cid}'): INPUT, CONFIG or an image changed while the "
            "step ran, so nothing was merged; rerun the same make command to send their "
            "requests (answers already paid for are reused)"
        )


@dataclass
class Merged:
    """What a merge did: records answered, of them cut short, and failures by code."""

    answered: int = 0
    cut: int = 0
    failed: Counter[str] = field(default_factory=Counter)


def merge(
    input_path: Path,
    merger: Merger,
    answers: Answers,
    local: LocalImages,
    output: Path,
    errors_path: Path,
    hashes: made.Hashes | None = None,
) -> Merged:
    """Write `output` (every record of INPUT, in order, answered where its answer is there)
    and `errors_path` (one row per failure); neither when a record changed (UserError).
    On requests.hashes when it can be trusted (`hashes`), else Streamed; out of step, the same
    merge again on the index (nothing was written)."""
    if hashes is not None:
        try:
            return merge_made(input_path, merger, answers, hashes, output, errors_path)
        except (OutOfStep, made.Untrusted):
            pass
        finally:
            hashes.close()
    sent: Streamed | Indexed = answers.streamed()
    try:
        return merge_with(input_path, merger, answers, sent, local, output, errors_path)
    except OutOfStep:
        pass
    finally:
        sent.close()
    indexed = answers.indexed()
    return merge_with(input_path, merger, answers, indexed, local, output, errors_path)


def merge_with(
    input_path: Path,
    merger: Merger,
    answers: Answers,
    sent: Streamed | Indexed,
    local: LocalImages,
    output: Path,
    errors_path: Path,
) -> Merged:
    done = Merged()
    changed = Changed()
    streamed = isinstance(sent, Streamed)
    # errors.jsonl is committed first (the inner block ends first): once merged.json is
    # committed make takes the step as done, so a kill between them must not lose errors.
    with atomic_output(output) as f, atomic_output(errors_path) as errors:
        writer = RecordWriter(f, is_jsonl(output))
        for batch in batched(rebuilt(input_path, merger.step, merger.data_key, local)):
            keyed = [
                (i, r, b, b.custom_id if b else None if streamed else custom_id_of(r, merger.key))
                for i, r, b in batch
            ]
            now = {
                i: bytes.fromhex(request_hash(b.request))
                for i, _, b, _ in keyed
                if b is not None and b.request is not None
            }
            verdicts = sent.verdicts(keyed, now)
            rows = answers.index.answers([v for v in set(verdicts) if isinstance(v, bytes)])
            for (index, record, _, cid), verdict in zip(keyed, verdicts, strict=True):
                if verdict == CHANGED:
                    changed.add(index, cid)
                    continue
                if verdict == UNTOUCHED:
                    writer.write(record)
                    continue
                assert cid is not None and isinstance(verdict, bytes)
                row = rows.get(verdict)
                writer.write(answered(merger, done, errors, index, record, row, cid))
        sent.finish()
        changed.check(input_path)  # before either file is committed: nothing is written
        writer.close()
    return done


def merge_made(
    input_path: Path,
    merger: Merger,
    answers: Answers,
    hashes: made.Hashes,
    output: Path,
    errors_path: Path,
) -> Merged:
    """The merge on requests.hashes (made.py): each record's request hash read, not built.
    INPUT's bytes are hashed as they are read: not the ones make_requests read, or not as many
    records as lines, and it raises OutOfStep before anything is committed."""
    assert hashes.made is not None
    done = Merged()
    digest = hashlib.sha256()
    end = object()
    with atomic_output(output) as f, atomic_output(errors_path) as errors:
        writer = RecordWriter(f, is_jsonl(output))
        records = enumerate(iter_records(input_path, digest))
        for batch in batched(zip_longest(records, hashes.records(), fillvalue=end)):
            if any(end in pair for pair in batch):
                raise OutOfStep
            rows = answers.index.answers(list({sent[0] for _, sent in batch if sent is not None}))
            for (index, record), sent in batch:
                if sent is not None:
                    row = rows.get(sent[0])
                    cid = custom_id_of(record, merger.key)
                    record = answered(merger, done, errors, index, record, row, cid)
                writer.write(record)
        if digest.hexdigest() != hashes.made.input:
            raise OutOfStep
        writer.close()
    return done


def answered(
    merger: Merger,
    done: Merged,
    errors: IO[str],
    index: int,
    record: dict[str, Any],
    row: dict[str, Any] | None,
    cid: str | None,
) -> dict[str, Any]:
    """The record with its answer (`row`, None if none came back), or as it was with its
    failure written to errors.jsonl; counted in `done`."""
    try:
        if row is None:
            raise ValueError("no_result", "no result came back for this request")
        if not store.succeeded(row):
            raise ValueError(*store.failure(row)[:2])
        record = merger.apply(record, merger.value(row["response"]))
        done.answered += 1
        done.cut += bool(row.get("cut_short"))
    except ValueError as e:
        code, message = e.args if len(e.args) == 2 else ("error", str(e))
        errors.write(dumps(error_row(str(cid), index, code, message, row)) + "\n")
        done.failed[code] += 1
    return record


def batched(items: Iterator[T]) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def error_row(
    cid: str, index: int, code: str, message: str, row: dict[str, Any] | None
) -> dict[str, Any]:
    api = row is not None and not store.succeeded(row)
    return {
        "custom_id": cid,
        "index": index,
        "stage": "api" if api else "response",
        "code": code,
        "message": message,
        "status": store.failure(row).status if row is not None and api else None,
        "retryable": bool(row and row.get("retryable")) if api else False,
        "attempts": (row or {}).get("attempts"),
    }


def summary(output: Path, merged: Merged, errors_path: Path) -> list[str]:
    """What the merge says on stderr: counts, and a warning for answers cut short."""
    line = f"{output}: {merged.answered} record(s) answered"
    if merged.failed:
        why = ", ".join(f"{n} {code}" for code, n in merged.failed.most_common())
        line += f", {sum(merged.failed.values())} failed ({why}); see {errors_path}"
    lines = [line]
    if merged.cut:
        lines.append(
            f"warning: {merged.cut} answer(s) stopped at the step's max_tokens and are cut "
            "short (kept as they came); raise max_tokens to have them whole"
        )
    return lines
