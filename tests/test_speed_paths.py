"""The fast paths of issue 25 give what the slow ones gave: the merge streamed alongside
requests.jsonl (and on its index when out of order) writes the same bytes, and a process loads
only what its stage uses (python -X importtime on the real commands); the machine's index
forgets what it no longer needs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from br.batches.machine import FORGET, ChunkIndex
from conftest import ROOT, Emulator, make, read_json
from test_input_changes import Step, rows

HEAVY = ("PIL", "jsonschema", "http.client", "openai", "anthropic", "google.genai")


def test_the_merge_writes_the_same_bytes_whatever_the_order_of_requests_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [*rows(6), {"id": "r6"}, {"id": "r7", "title": "x", "skip": True}, *rows(12)[8:]]
    step = Step(tmp_path, records)
    # r3 left out for its image (as the preflight leaves a record out): in skipped.jsonl with
    # a reason, not in requests.jsonl; r4's answer failed.
    lines = step.requests.read_text().splitlines(keepends=True)
    r3 = next(line for line in lines if '"r3"' in line)
    step.requests.write_text("".join(line for line in lines if line != r3))
    skipped = [json.loads(line) for line in step.skipped.read_text().splitlines()]
    skipped.append({"index": 3, "custom_id": "r3", "missing": [], "reason": "HTTP 404"})
    step.skipped.write_text("".join(json.dumps(r) + "\n" for r in skipped))
    answers = step.dir / "answers" / "results_001.jsonl"
    found = read_json(answers)
    found[4].update(outcome="failed", response=None, error={"code": "server_error"})
    answers.write_text("".join(json.dumps(r) + "\n" for r in found))

    code, err = step.merge(capsys)
    assert code == 0, err
    in_order = step.merged.read_bytes(), step.errors.read_bytes()
    merged = read_json(step.merged)
    assert [r.get("out") is not None for r in merged] == [
        True, True, True, False, False, True, False, False, True, True, True, True,
    ]  # fmt: skip
    assert merged[3] == records[3] and merged[6:8] == records[6:8]
    assert json.loads(step.errors.read_text())["custom_id"] == "r4"

    # The same files in another order: the merge on the index, the same bytes.
    shuffled = step.requests.read_text().splitlines(keepends=True)
    random.Random(5).shuffle(shuffled)
    step.requests.write_text("".join(reversed(shuffled)))
    step.skipped.write_text("".join(json.dumps(r) + "\n" for r in reversed(skipped)))
    step.merged.unlink()
    step.errors.unlink()
    code, err = step.merge(capsys)
    assert code == 0, err
    assert (step.merged.read_bytes(), step.errors.read_bytes()) == in_order


def test_a_request_left_over_in_requests_jsonl_merges_the_records_there_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last record's request was sent, and the record is gone from INPUT now: the streamed
    merge finds a line left over and the index merges the rest, as it always did."""
    records = rows(4)
    step = Step(tmp_path, records)
    step.input.write_text(json.dumps(records[:3]))
    code, err = step.merge(capsys)
    assert code == 0, err
    assert [r["out"] for r in read_json(step.merged)] == [
        f"answer to: Describe story {i}." for i in range(3)
    ]


def imported(script: str, *args: str) -> set[str]:
    """The modules a real command loads (python -X importtime), after it exited 0."""
    cmd = [sys.executable, "-X", "importtime", str(ROOT / "scripts" / script), *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }


def test_a_text_only_step_loads_no_image_schema_network_or_sdk_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = Step(tmp_path, rows(3))
    requests = str(tmp_path / "again.jsonl")
    made = imported("make_requests.py", *step.common, "-o", requests, "--skipped", requests + ".s")
    merged = imported(
        "merge_results.py",
        *step.common,
        "--requests",
        str(step.requests),
        "--answers",
        str(step.dir / "answers"),
        "--errors",
        str(step.errors),
        "-o",
        str(step.merged),
    )
    for name, modules in (("make_requests", made), ("merge_results", merged)):
        loaded = sorted(m for m in modules if m.split(".")[0] in {h.split(".")[0] for h in HEAVY})
        assert not [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)], (
            name,
            loaded,
        )
    assert Path(requests).read_bytes() == step.requests.read_bytes()


# ----------------------------------------------------------------------------- machine state


def entry(index: ChunkIndex, sha: str, data: dict[str, Any]) -> Path:
    index.dir.mkdir(parents=True, exist_ok=True)
    (index.dir / f"{index.key(sha, 0)}.lock").touch()
    path = index.dir / f"{index.key(sha, 0)}.json"
    path.write_text(json.dumps(data) + "\n")
    return path


def test_the_machine_index_forgets_fetched_entries_after_30_days_and_keeps_live_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BR_STATE_DIR", str(tmp_path / "state"))
    index = ChunkIndex("http://api.test/v1")
    now = time.time()
    old = now - FORGET - 3600
    forgotten = entry(index, "a" * 64, {"batch": "batch_a", "at": old, "fetched_at": old + 9})
    kept = [
        entry(index, "b" * 64, {"batch": "batch_b", "at": old}),  # never fetched: results lost?
        entry(index, "c" * 64, {"batch": "batch_c", "at": now - 60, "fetched_at": now}),  # new
        entry(index, "d" * 64, {"batch": None, "at": old, "intent_at": old}),  # no answer
    ]
    assert index.sweep(now) == 1
    assert not forgotten.exists() and not forgotten.with_suffix(".lock").exists()
    assert all(p.exists() and p.with_suffix(".lock").exists() for p in kept)
    assert index.get("b" * 64, 0) == "batch_b" and index.get("c" * 64, 0) == "batch_c"
    entry(index, "a" * 64, {"batch": "batch_a", "at": old, "fetched_at": old + 9})
    assert index.sweep() == 0  # swept today already: not again before a day has passed


def test_a_run_marks_each_fetched_batch_in_the_machine_index(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = emulator.env()
    make("caption", env=env, BUILD=tmp_path / "build", STEP="caption")
    entries = [json.loads(p.read_text()) for p in Path(env["BR_STATE_DIR"]).rglob("chunks/*.json")]
    assert entries and all(e["batch"] and e["fetched_at"] >= e["at"] for e in entries), entries


# ----------------------------------------------------------------------------- run_batches


def test_chunks_in_flight_beyond_the_hold_let_their_requests_go_and_finish_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory flat in the number of chunks: past HOLD requests in flight, a chunk keeps only
    its identity and tokens in memory (its requests in the run's spill file, read back when its
    batch ends), and finishes with the same rows (a retry among them)."""
    from br.batches import engine as engine_module
    from br.layout import StepDir
    from test_chunk_state import Fake, engine, results, split

    monkeypatch.setenv("BR_POLL_MIN", "0")
    monkeypatch.setenv("BR_POLL_MAX", "0")
    rows_of: dict[int, list[list[dict[str, Any]]]] = {}
    for hold in (engine_module.HOLD, 0):
        monkeypatch.setattr(engine_module, "HOLD", hold)
        step, fake = StepDir(tmp_path / f"hold{hold}" / "caption"), Fake()
        fake.failing = {("b", 0): 500}  # b fails on the first attempt only
        fake.listable = False  # each batch retrieved (the fake moves a batch on a retrieve)
        chunks = split(step, ["a", "b", "c"], ["d", "e"], ["f"])
        run = engine(step, fake, retries=2)
        run.begin(chunks)
        run.submit_ready()
        held = [c.requests for c in chunks]
        assert held == ([3, 2, 1] if hold else [0, 0, 0]), held
        assert run.run() == []
        assert all(c.requests == 0 for c in chunks)  # done: let go
        rows_of[hold] = [results(step, c.nnn) for c in chunks]
        assert [r["attempts"] for r in rows_of[hold][0]] == [1, 2, 1]
    strip = [[{k: v for k, v in r.items() if k != "batch_id"} for r in rs] for rs in rows_of[0]]
    assert strip == [
        [{k: v for k, v in r.items() if k != "batch_id"} for r in rs]
        for rs in rows_of[engine_module.HOLD]
    ]


def test_queued_chunks_beyond_the_hold_wait_in_the_spill_file_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every chunk is read when the run begins: past HOLD requests, a queued chunk's wait in the
    spill file too (1,000 chunks held 182 MB), and the run ends with every row."""
    from br.batches import engine as engine_module
    from br.layout import StepDir
    from test_chunk_state import Fake, engine, results, split

    monkeypatch.setenv("BR_POLL_MIN", "0")
    monkeypatch.setenv("BR_POLL_MAX", "0")
    monkeypatch.setattr(engine_module, "HOLD", 3)
    step, fake = StepDir(tmp_path / "caption"), Fake()
    fake.listable = False
    chunks = split(step, ["a", "b", "c"], ["d", "e"], ["f"])
    run = engine(step, fake, retries=2)
    run.begin(chunks)
    assert [c.requests for c in chunks] == [3, 0, 0]
    assert run.run() == []
    assert [[r["custom_id"] for r in results(step, c.nnn)] for c in chunks] == [
        ["a", "b", "c"], ["d", "e"], ["f"],
    ]  # fmt: skip


def test_a_run_ends_at_the_poll_that_sees_its_last_batch_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing in flight and nothing queued after a poll: the run ends there, without one more
    pause of the polling interval (a second on every run)."""
    from br.batches import engine as engine_module
    from br.batches.chunk import Done
    from br.layout import StepDir
    from test_chunk_state import Fake, engine, split

    monkeypatch.setenv("BR_POLL_MIN", "0.05")
    step, fake = StepDir(tmp_path / "caption"), Fake()
    fake.listable = False
    chunks = split(step, ["a", "b"], ["c"])
    run = engine(step, fake, retries=2)
    run.begin(chunks)
    idle: list[float] = []  # pauses taken with every chunk already done
    real = time.sleep

    def sleep(seconds: float) -> None:
        if all(isinstance(c.state, Done) for c in chunks):
            idle.append(seconds)
        real(seconds)

    monkeypatch.setattr(engine_module.time, "sleep", sleep)
    assert run.run() == []
    assert all(isinstance(c.state, Done) for c in chunks)
    assert idle == []
