"""A chunk's life (br/batches/chunk.py, engine.py, ended.py) against a fake provider: the other
side of the seam (provider.py), in memory. No server, no network, no make.

The fake keeps batches and files as a provider would, answers every request of an ended batch
(or fails the ones a test names), and counts the calls: the exactly-once protocol above the
seam is the real one (ledger, machine index under BR_STATE_DIR, the list back to an unanswered
create).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from br.batches.chunk import Chunk, Done, InFlight, Queued, Stopped, Waiting, chunk_info
from br.batches.engine import Engine
from br.batches.provider import (
    Batch,
    Counts,
    Label,
    Limits,
    NotFound,
    Problem,
    Trouble,
    Unlistable,
    Upload,
    failed,
)
from br.config import Config
from br.layout import StepDir
from br.records import dumps


class Dropped(Exception):
    """The connection dropped after the server acted: the answer is lost."""


class Killed(BaseException):
    """The process died (kill -9) right after the server acted."""


class Fake:
    """A provider in memory. Each batch goes validating -> in_progress -> `end` over polls."""

    where = "fake://provider"
    limits = Limits(50_000, 200_000_000, 50_000)

    def __init__(self) -> None:
        self.batches: dict[str, Batch] = {}
        self.inputs: dict[str, bytes] = {}  # file id -> bytes
        self.uploaded: list[Upload] = []
        self.calls: Counter[str] = Counter()
        self.end: list[tuple[str, tuple[Problem, ...]]] = []  # how the next batches end
        self.failing: dict[tuple[str, int], int] = {}  # (custom_id, attempt) -> HTTP status
        self.after_create: type[BaseException] | None = None  # what the next create's answer hits
        self.listable = True
        self.ends: dict[str, tuple[str, tuple[Problem, ...]]] = {}

    def tick(self) -> float:
        return time.time()  # a batch's age decides its deadline (polling.deadline)

    def shape(self, request: dict[str, Any]) -> dict[str, Any]:
        return request

    def label_fields(self, label: Label) -> dict[str, str]:
        return {"sha": label.sha, "attempt": str(label.attempt)}

    def upload(self, path: Path, filename: str) -> str:
        self.calls["upload"] += 1
        file_id = f"file-{len(self.inputs) + 1}"
        self.inputs[file_id] = path.read_bytes()
        self.uploaded.append(Upload(file_id, filename, len(self.inputs[file_id]), self.tick()))
        return file_id

    def create(self, file_id: str, endpoint: str, label: Label) -> Batch:
        self.calls["create"] += 1
        batch = Batch(
            id=f"batch_{len(self.batches) + 1}",
            status="validating",
            created_at=self.tick(),
            input_file_id=file_id,
            key=(label.sha, label.attempt),
        )
        self.batches[batch.id] = batch
        self.ends[batch.id] = self.end.pop(0) if self.end else ("completed", ())
        if self.after_create is not None:
            lost, self.after_create = self.after_create, None
            raise lost()
        return batch

    def uploads(self) -> Iterator[Upload]:
        if not self.listable:
            raise Unlistable("no file list")
        yield from reversed(self.uploaded)

    def pages(self, size: int = 100) -> Iterator[list[Batch]]:
        self.calls["list"] += 1
        if not self.listable:
            raise Unlistable("no batch list")
        yield sorted(self.batches.values(), key=lambda b: b.created_at, reverse=True)

    def retrieve(self, batch_id: str) -> Batch:
        self.calls["retrieve"] += 1
        if batch_id not in self.batches:
            raise NotFound(batch_id)
        batch = self.batches[batch_id]
        if batch.status == "validating":
            batch = replace(batch, status="in_progress", in_progress_at=self.tick())
        elif batch.status == "in_progress":
            status, problems = self.ends[batch_id]
            done = status == "completed"
            total = len(self.requests(batch))
            batch = replace(
                batch,
                status=status,
                problems=problems,
                request_counts=Counts(total, total if done else 0, 0),
                output_file_id=f"out-{batch_id}" if done else None,
            )
        self.batches[batch_id] = batch
        return batch

    def requests(self, batch: Batch) -> list[dict[str, Any]]:
        raw = self.inputs[batch.input_file_id or ""].decode()
        return [json.loads(line) for line in raw.splitlines()]

    def result_rows(self, batch: Batch) -> Iterator[tuple[str | None, dict[str, Any]]]:
        self.calls["download"] += 1
        assert batch.key is not None
        for request in self.requests(batch):
            cid = request["custom_id"]
            status = self.failing.get((cid, batch.key[1]))
            if status:
                yield cid, failed(f"http_{status}", "try again", status, True)
            else:
                yield (
                    cid,
                    {
                        "outcome": "succeeded",
                        "response": f"answer to {cid}",
                        "error": None,
                        "retryable": False,
                        "usage": None,
                    },
                )

    def results_kept(self, batch: Batch) -> bool:
        return True

    def cancel(self, batch_id: str) -> Batch:
        self.batches[batch_id] = replace(self.batches[batch_id], status="cancelled")
        return self.batches[batch_id]

    def delete_file(self, file_id: str) -> None:
        self.inputs.pop(file_id, None)

    def download(self, file_id: str) -> bytes:
        return self.inputs[file_id]

    def describe(self, batch_id: str, nones: bool = True) -> dict[str, Any]:
        return {"id": batch_id}

    def listing(self, limit: int) -> Iterator[dict[str, Any]]:
        yield from ()

    def trouble(self, error: Exception) -> Trouble | None:
        return Trouble(unclear=True, retry_after=0.01) if isinstance(error, Dropped) else None


@pytest.fixture(autouse=True)
def quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's state in the test's own directory, and polls without pauses."""
    monkeypatch.setenv("BR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BR_POLL_MIN", "0")
    monkeypatch.setenv("BR_POLL_MAX", "0")


def split(step: StepDir, *chunks: list[str]) -> list[Chunk]:
    """Chunk files of chat requests, one list of custom_ids per chunk."""
    step.root.mkdir(parents=True, exist_ok=True)
    out = []
    for n, ids in enumerate(chunks, 1):
        nnn = f"{n:03d}"
        requests = [
            {
                "custom_id": cid,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"say {cid}" * 5}]},
            }
            for cid in ids
        ]
        step.chunk(nnn).write_text("".join(dumps(r) + "\n" for r in requests))
        out.append(Chunk(nnn=nnn, path=step.chunk(nnn)))
    return out


def engine(step: StepDir, provider: Fake, **options: Any) -> Engine:
    return Engine(step, Config(Path("test.yaml"), {}), provider, "caption", **options)


def results(step: StepDir, nnn: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in step.results(nnn).read_text().splitlines()]


def test_queued_then_waiting_for_budget_then_in_flight_then_done(tmp_path: Path) -> None:
    step, fake = StepDir(tmp_path / "caption"), Fake()
    one, two = split(step, ["a", "b"], ["c", "d"])
    run = engine(step, fake, token_budget=one.info.tokens)  # room for one chunk at a time
    run.begin([one, two])
    assert isinstance(one.state, Queued) and isinstance(two.state, Queued)

    run.submit_ready()
    assert isinstance(one.state, InFlight) and two.state == Waiting()  # for the budget
    assert step.batch_id("001").read_text() == one.state.batch_id + "\n"
    assert not step.batch_id("002").exists() and fake.calls["create"] == 1

    while not isinstance(one.state, Done):
        run.poll()
    run.submit_ready()  # the first batch ended: its budget is free
    assert isinstance(two.state, InFlight)

    assert run.run() == []
    assert isinstance(two.state, Done)
    assert [r["response"] for r in results(step, "001") + results(step, "002")] == [
        "answer to a", "answer to b", "answer to c", "answer to d",
    ]  # fmt: skip
    assert (fake.calls["upload"], fake.calls["create"], fake.calls["download"]) == (2, 2, 2)
    assert len(step.answer_files()) == 2

    # A rerun of the finished step (its answers kept) sends nothing.
    again = Fake()
    rerun = engine(step, again)
    rerun.begin(split(step, ["a", "b"], ["c", "d"]))
    assert rerun.run() == [] and sum(again.calls.values()) == 0


def test_a_validation_failure_stops_the_chunk_with_its_reason(tmp_path: Path) -> None:
    step, fake = StepDir(tmp_path / "caption"), Fake()
    fake.end = [("failed", (Problem("invalid_request", "no such model", 1),))]
    (chunk,) = split(step, ["a", "b"])
    run = engine(step, fake)
    run.begin([chunk])
    reasons = run.run()
    assert isinstance(chunk.state, Stopped) and reasons == [chunk.state.reason]
    assert "failed validation: line 1: invalid_request: no such model" in reasons[0]
    # Its id file is set aside, so a rerun after a fix sends afresh; nothing more was sent.
    assert not step.batch_id("001").exists()
    assert [p.name.endswith("batch_001.id") for p in (step.root / "superseded").iterdir()] == [True]
    assert not step.results("001").exists() and fake.calls["create"] == 1


def test_an_unanswered_create_is_found_by_listing_and_paid_once(tmp_path: Path) -> None:
    step, fake = StepDir(tmp_path / "caption"), Fake()
    (chunk,) = split(step, ["a", "b"])
    fake.after_create = Killed  # the batch is made, and the run dies before it hears so
    with pytest.raises(Killed):
        run = engine(step, fake)
        run.begin([chunk])
        run.run()
    intent = [json.loads(x) for x in step.ledger.read_text().splitlines()][-1]
    assert (intent["op"], intent["phase"]) == ("create", "intent")

    rerun = engine(step, fake)
    rerun.begin(split(step, ["a", "b"]))
    assert rerun.run() == []
    assert fake.calls["create"] == 1 and fake.calls["list"] >= 1
    assert step.batch_id("001").read_text() == "batch_1\n"
    assert [r["outcome"] for r in results(step, "001")] == ["succeeded", "succeeded"]


def test_a_dropped_create_answer_is_looked_for_before_trying_again(tmp_path: Path) -> None:
    step, fake = StepDir(tmp_path / "caption"), Fake()
    (chunk,) = split(step, ["a"])
    fake.after_create = Dropped
    run = engine(step, fake)
    run.begin([chunk])
    assert run.run() == []
    assert fake.calls["create"] == 1 and len(fake.batches) == 1


def test_a_retryable_failure_goes_again_in_a_follow_up_attempt(tmp_path: Path) -> None:
    step, fake = StepDir(tmp_path / "caption"), Fake()
    fake.failing = {("b", 0): 500}  # b fails on the first attempt only
    (chunk,) = split(step, ["a", "b", "c"])
    run = engine(step, fake, retries=2)
    run.begin([chunk])
    assert run.run() == []

    retry = step.retry("001", 1)
    lines = step.chunk("001").read_text().splitlines(keepends=True)
    assert retry.read_text() == lines[1]  # the chunk's own line, as it was sent
    again = chunk_info(retry)
    assert chunk.attempts[1].sha == again.sha and chunk.attempts[1].tokens == again.tokens
    assert [b.key for b in fake.batches.values()] == [(chunk.attempts[0].sha, 0), (again.sha, 1)]
    rows = results(step, "001")
    assert [r["custom_id"] for r in rows] == ["a", "b", "c"]
    assert [r["outcome"] for r in rows] == ["succeeded"] * 3
    assert [r["attempts"] for r in rows] == [1, 2, 1]
    assert step.retry_id("001", 1).read_text() == "batch_2\n"
    assert fake.calls["create"] == 2 and len(step.answer_files()) == 2
