"""Failures inside the API: every request ends with a result or a recorded, explained failure.

Each test prints its figures (requests, batches, retried, failed, duplicates) for the notes.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import ROOT, Emulator, input_dir, make, read_json, write_json

CONFIG = """\
model: gpt-4o-mini
describe:
  is_multimodal: false
  user: 'Summarise: {text}'
  response_key: summary
"""


def job(tmp_path: Path, n: int, bad: set[int] | None = None, marker: str = "") -> dict[str, Any]:
    """A text-only dataset of n records; records in `bad` carry an emulator error marker."""
    records = [
        {"id": f"r{i:03d}", "text": f"story {i}" + (f" {marker}" if i in (bad or set()) else "")}
        for i in range(n)
    ]
    data = write_json(tmp_path / "stories.json", records)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    return {
        "BUILD": tmp_path / "build",
        "INPUT": data,
        "CONFIG": config,
        "STEP": "describe",
        "DATA_KEY": "id",
    }


def out_dir(tmp_path: Path) -> Path:
    return input_dir(tmp_path / "build", tmp_path / "stories.json") / "describe"


def duplicates(batches: list[Any]) -> int:
    """Non-failed batches beyond one per (input hash, attempt)."""
    keys = Counter(
        (b.metadata["br_chunk_sha256"], b.metadata["br_attempt"])
        for b in batches
        if b.status != "failed"
    )
    return sum(n - 1 for n in keys.values())


def figures(name: str, emu: Emulator, tmp_path: Path) -> dict[str, int]:
    batches = emu.batches()
    results = [r for p in out_dir(tmp_path).glob("results_*.jsonl") for r in read_json(p)]
    numbers = {
        "requests sent": emu.stats()["requests_processed"],
        "batches": len(batches),
        "retried": sum(r["attempts"] > 1 for r in results),
        "failed in the end": sum(r["outcome"] == "failed" for r in results),
        "duplicates": duplicates(batches),
    }
    print(f"\n{name}: {numbers}")
    return numbers


def answered(tmp_path: Path) -> list[dict[str, Any]]:
    return [r for r in read_json(out_dir(tmp_path) / "merged.json") if "summary" in r]


def test_retryable_request_errors_are_sent_again(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "0.3").start()
    try:
        emu.faults(request_error_rate=0.3, seed=7)
        make("caption", env=emu.env(), MAX_REQUESTS=20, RETRIES=5, **job(tmp_path, 40))
        # Random faults: nearly always all answered; a request unlucky six times in a row is
        # recorded as a retryable failure that used every retry, never lost.
        errors = read_json(out_dir(tmp_path) / "errors.jsonl")
        assert len(answered(tmp_path)) + len(errors) == 40
        assert all(e["retryable"] and e["attempts"] == 6 for e in errors)
        numbers = figures("request errors at 30%", emu, tmp_path)
        assert numbers["retried"] > 0 and numbers["duplicates"] == 0
        assert list(out_dir(tmp_path).glob("retry_*_1.jsonl"))
        # Every retry batch holds only what failed before it.
        assert numbers["requests sent"] == 40 + sum(
            len(read_json(p)) for p in out_dir(tmp_path).glob("retry_*.jsonl")
        )
    finally:
        emu.stop()


def test_permanent_errors_are_recorded_not_retried(emulator: Emulator, tmp_path: Path) -> None:
    variables = job(tmp_path, 10, bad={2, 5}, marker="EMULATOR_ERROR:context_length_exceeded")
    result = make("caption", env=emulator.env(), **variables)
    assert "2 failed (2 context_length_exceeded)" in result.stderr
    errors = read_json(out_dir(tmp_path) / "errors.jsonl")
    assert [(e["custom_id"], e["code"], e["status"], e["attempts"]) for e in errors] == [
        ("r002", "context_length_exceeded", 400, 1),
        ("r005", "context_length_exceeded", 400, 1),
    ]
    assert len(answered(tmp_path)) == 8
    assert len(emulator.batches()) == 1  # nothing retried
    figures("permanent 400s", emulator, tmp_path)
    strict = make("caption", env=emulator.env(), check=False, STRICT=1, **variables)
    assert strict.returncode != 0 and "STRICT=1 and 2 request(s) failed" in strict.stderr


def test_retries_run_out(emulator: Emulator, tmp_path: Path) -> None:
    variables = job(tmp_path, 6, bad={1}, marker="EMULATOR_ERROR:500")
    make("caption", env=emulator.env(), RETRIES=2, **variables)
    errors = read_json(out_dir(tmp_path) / "errors.jsonl")
    assert [(e["custom_id"], e["status"], e["retryable"], e["attempts"]) for e in errors] == [
        ("r001", 500, True, 3)
    ]
    assert len(emulator.batches()) == 3  # the chunk, then two retries of the one request
    assert figures("a request that always 500s", emulator, tmp_path)["duplicates"] == 0


def test_every_request_failing_leaves_no_output_file(emulator: Emulator, tmp_path: Path) -> None:
    variables = job(tmp_path, 4, bad=set(range(4)), marker="EMULATOR_ERROR:context_length_exceeded")
    make("caption", env=emulator.env(), **variables)
    (batch,) = emulator.batches()
    assert batch.status == "completed" and batch.output_file_id is None
    assert len(read_json(out_dir(tmp_path) / "errors.jsonl")) == 4
    merged = read_json(out_dir(tmp_path) / "merged.json")
    assert merged == read_json(variables["INPUT"])  # nothing merged, nothing lost


def test_validation_failure_stops_then_a_fixed_rerun_works(
    emulator: Emulator, tmp_path: Path
) -> None:
    variables = job(tmp_path, 5)
    emulator.faults(fail="mismatched_model")
    result = make("caption", env=emulator.env(), check=False, **variables)
    assert result.returncode != 0
    line = next(x for x in result.stderr.splitlines() if x.startswith("error: "))
    assert "failed validation" in line and "mismatched_model" in line and "rerun make" in line
    assert not (out_dir(tmp_path) / "merged.json").exists()
    assert not (out_dir(tmp_path) / "batch_001.id").exists()
    emulator.faults(fail=None)
    make("caption", env=emulator.env(), **variables)
    assert len(answered(tmp_path)) == 5
    assert sorted(b.status for b in emulator.batches()) == ["completed", "failed"]


def test_token_limit_failures_are_recreated(tmp_path: Path) -> None:
    # Each 10-request chunk is ~70 tokens; the limit lets one batch in at a time.
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "0.5", "--token-limit", "100")
    emu.start()
    try:
        make("caption", env=emu.env(), MAX_REQUESTS=10, **job(tmp_path, 40))
        assert len(answered(tmp_path)) == 40
        numbers = figures("token limit, no budget", emu, tmp_path)
        batches = emu.batches()
        failed = [b for b in batches if b.status == "failed"]
        assert all(b.errors.data[0].code == "token_limit_exceeded" for b in failed)
        assert numbers["duplicates"] == 0
        assert len([b for b in batches if b.status == "completed"]) == 4
    finally:
        emu.stop()


def test_token_budget_keeps_the_queue_under_the_limit(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "0.5", "--token-limit", "160")
    emu.start()
    try:
        make("caption", env=emu.env(), MAX_REQUESTS=10, TOKEN_BUDGET=160, **job(tmp_path, 60))
        assert len(answered(tmp_path)) == 60
        batches = emu.batches()
        assert [b for b in batches if b.status == "failed"] == []
        assert len(batches) == 6
        figures("token budget 160", emu, tmp_path)
    finally:
        emu.stop()


def test_expired_batch_keeps_its_results_and_resends_the_rest(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "1").start()
    try:
        emu.faults(expire=True)
        variables = job(tmp_path, 20)
        args = ["make", "--no-print-directory", "caption"] + [
            f"{k}={v}" for k, v in variables.items()
        ]
        run = subprocess.Popen(args, cwd=ROOT, env=emu.env(), stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not emu.batches():
            assert time.time() < deadline
            time.sleep(0.05)
        emu.faults(expire=False)
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
        assert len(answered(tmp_path)) == 20
        first, retry = sorted(emu.batches(), key=lambda b: b.created_at)
        assert first.status == "expired" and retry.status == "completed"
        kept = first.request_counts.completed
        assert 0 < kept < 20 and retry.request_counts.total == 20 - kept
        assert figures("an expired batch", emu, tmp_path)["requests sent"] == 20
    finally:
        emu.stop()


def test_http_faults_on_every_endpoint(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "0.3", "--seed", "3").start()
    try:
        emu.faults(http_error_rate=0.2, http_error_kinds=["429", "500", "drop", "drop_after"])
        make("caption", "-j3", env=emu.env(), MAX_REQUESTS=5, **job(tmp_path, 30))
        assert len(answered(tmp_path)) == 30
        numbers = figures("HTTP faults at 20%", emu, tmp_path)
        assert numbers["duplicates"] == 0 and numbers["batches"] == 6
        assert emu.stats()["http_faults_injected"] > 0
    finally:
        emu.stop()
