"""provider: anthropic end to end: real `make`, the scripts, the official `anthropic` SDK and the
emulator's Message Batches API (its base URL is the server root, without /v1)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anthropic
from conftest import EXAMPLE_STEPS, ROOT, Emulator, input_dir, make, read_json, write_json

KEY = "test-anthropic-key"
SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PIPELINE = (
    "model: claude-sonnet-4-5\nprovider: anthropic\nprices:\n"
    "  claude-sonnet-4-5: {input: 1.50, cached_input: 0.15, output: 7.50}\n" + EXAMPLE_STEPS
)
TEXT = """model: claude-sonnet-4-5
provider: anthropic
caption:
  is_multimodal: false
  user: 'Describe {title}'
  response_key: text
  max_tokens: 100
"""


def env(emu: Emulator, **extra: str) -> dict[str, str]:
    return emu.env(**{"ANTHROPIC_BASE_URL": emu.root, "ANTHROPIC_API_KEY": KEY, **extra})


def client(emu: Emulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.root, api_key=KEY)


def made(emu: Emulator) -> int:
    """Message batches the emulator has created (the counter appears with the first)."""
    return int(emu.stats().get("message_batches_created", 0))


def batches(emu: Emulator) -> list[Any]:
    return list(client(emu).messages.batches.list(limit=100))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def project(tmp_path: Path, config: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    (tmp_path / "config.yaml").write_text(config)
    data = write_json(tmp_path / "data.json", rows)
    return {
        "BUILD": tmp_path / "build",
        "INPUT": data,
        "CONFIG": tmp_path / "config.yaml",
        "STEP": "caption",
        "DATA_KEY": "id",
    }


def test_the_example_pipeline_runs_on_anthropic(emulator: Emulator, tmp_path: Path) -> None:
    """The example's two steps, with provider: anthropic: Anthropic's lines in the chunks,
    structured output through output_config, every record answered; a rerun pays nothing."""
    (tmp_path / "config.yaml").write_text(PIPELINE)
    variables = {"BUILD": tmp_path / "build", "CONFIG": tmp_path / "config.yaml"}
    make("pipeline", env=env(emulator), **variables)
    steps = input_dir(tmp_path / "build") / "pipeline"
    first, second = steps / "01-article_filter", steps / "02-caption"
    sent = lines(first / "chunk_001.jsonl")
    assert all(set(line) == {"custom_id", "params"} for line in sent)
    assert all(SAFE_ID.fullmatch(line["custom_id"]) for line in sent)
    params = sent[0]["params"]
    assert params["output_config"]["format"]["type"] == "json_schema"
    assert params["system"].startswith("You screen") and params["max_tokens"] == 200
    image = lines(second / "chunk_001.jsonl")[0]["params"]["messages"][0]["content"][-1]
    assert image["type"] == "image" and image["source"]["type"] == "url"
    merged = read_json(second / "merged.json")
    filtered = [r for r in merged if "article_filter" in r]
    assert filtered and all(isinstance(r["article_filter"]["keep"], bool) for r in filtered)
    kept = [r for r in filtered if r["article_filter"]["keep"]]
    assert kept and all(r["generated_caption"].startswith("Emulated answer") for r in kept)
    assert made(emulator) == 2 and emulator.batches() == []  # nothing went to OpenAI's API
    make("pipeline", env=env(emulator), **variables)
    assert made(emulator) == 2
    report = make("report", env=env(emulator), STEP="caption", **variables).stdout
    assert "caption" in report or "total" in report.lower()


def test_a_data_key_with_slashes_spaces_and_100_characters(
    emulator: Emulator, tmp_path: Path
) -> None:
    keys = [f"photos/2026 11/{i} " + "x" * 80 + f"/é {i}" for i in range(3)]
    keys = [k[:100].ljust(100, "z") for k in keys]
    rows = [{"id": key, "title": f"Story {i}"} for i, key in enumerate(keys)]
    variables = project(tmp_path, TEXT, rows)
    make("caption", env=env(emulator), **variables)
    b = input_dir(tmp_path / "build", variables["INPUT"]) / "caption"
    assert all(SAFE_ID.fullmatch(line["custom_id"]) for line in lines(b / "chunk_001.jsonl"))
    merged = read_json(b / "merged.json")
    assert [r["id"] for r in merged] == keys
    assert all(r["text"].startswith("Emulated answer") for r in merged)
    assert all(f"Story {i}" in r["text"] for i, r in enumerate(merged))


def test_expired_requests_go_again(emulator: Emulator, tmp_path: Path) -> None:
    """The emulator's expire fault ends the first batch half done, the rest `expired`: those
    go again in a follow-up batch (the fault is off by then), and every record is answered."""
    rows = [{"id": f"r{i}", "title": f"Story {i}"} for i in range(4)]
    variables = project(tmp_path, TEXT, rows)
    emulator.faults(expire=True, processing_seconds=2)
    args = ["make", "--no-print-directory", "caption", "RETRIES=1"]
    args += [f"{k}={v}" for k, v in variables.items()]
    run = subprocess.Popen(args, cwd=ROOT, env=env(emulator), text=True, stderr=subprocess.PIPE)
    started = time.monotonic()
    while made(emulator) < 1:
        assert run.poll() is None and time.monotonic() - started < 120, "no batch was made"
        time.sleep(0.02)
    emulator.faults(expire=False, processing_seconds=0.5)  # for the batches made from now on
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert "retrying 2 request(s)" in stderr
    b = input_dir(tmp_path / "build", variables["INPUT"]) / "caption"
    merged = read_json(b / "merged.json")
    assert all(r["text"].startswith("Emulated answer") for r in merged)
    first = [r for r in lines(b / "results_001.jsonl") if r["attempts"] == 2]
    assert len(first) == 2
    sizes = sorted(sum(vars(b.request_counts).values()) for b in batches(emulator))
    assert sizes == [2, 4]  # the two expired requests, and only they, were sent again


def test_a_kill_with_a_create_unanswered_pays_once(emulator: Emulator, tmp_path: Path) -> None:
    """Anthropic's batches carry no label: after a kill -9 with the create sent and its answer
    held back, the rerun finds the batch by its results and creates no second one."""
    rows = [{"id": f"r{i}", "title": f"Story {i}"} for i in range(6)]
    variables = project(tmp_path, TEXT, rows)
    b = input_dir(tmp_path / "build", variables["INPUT"]) / "caption"
    emulator.faults(response_delay={"POST /v1/messages/batches": 20.0})
    args = ["make", "--no-print-directory", "caption", "MAX_REQUESTS=3"]
    args += [f"{k}={v}" for k, v in variables.items()]
    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115
    run = subprocess.Popen(
        args, cwd=ROOT, env=env(emulator), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        started = time.monotonic()
        while made(emulator) < 1:
            assert run.poll() is None and time.monotonic() - started < 120, "no batch was made"
            time.sleep(0.02)
        assert not (b / "batch_001.id").exists()
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(30)
    finally:
        log.close()
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)
    emulator.faults(response_delay={})
    done = make("caption", env=env(emulator), MAX_REQUESTS=3, **variables)
    assert done.returncode == 0
    found = [e for e in lines(b / "ledger.jsonl") if e.get("how") == "batch list"]
    assert len(found) == 1  # the unanswered create, found by its results
    assert made(emulator) == 2  # one batch per chunk
    merged = read_json(b / "merged.json")
    assert all(r["text"].startswith("Emulated answer") for r in merged)
    held = {(b / "batch_001.id").read_text().strip(), (b / "batch_002.id").read_text().strip()}
    assert held == {batch.id for batch in batches(emulator)}


def test_status_check_and_cancel(emulator: Emulator, tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "title": f"Story {i}"} for i in range(3)]
    variables = project(tmp_path, TEXT, rows)
    emulator.faults(processing_seconds=60)
    b = input_dir(tmp_path / "build", variables["INPUT"]) / "caption"
    make(str(b / "batch_001.id"), env=env(emulator), **variables)
    batch_id = (b / "batch_001.id").read_text().strip()
    assert batch_id.startswith("msgbatch_")
    status = make("status", env=env(emulator), **variables).stdout
    assert batch_id in status and "in_progress" in status and "0+0/3" in status
    shown = make("check", env=env(emulator), BATCH=batch_id, **variables).stdout
    check = json.loads(shown[shown.index("\n{") :])
    assert check["id"] == batch_id and check["processing_status"] == "in_progress"
    cancel = make("cancel", env=env(emulator), **variables).stdout
    assert f"batch_001.id: {batch_id} cancelling" in cancel and "cancelled 1 batch" in cancel
    assert client(emulator).messages.batches.retrieve(batch_id).cancel_initiated_at
    tidy = make("tidy", env=env(emulator), **variables)
    assert "nothing to delete" in tidy.stderr


def test_mistakes_are_one_line_before_anything_is_paid(tmp_path: Path) -> None:
    emulator = Emulator(tmp_path / "emulator", "--api-key", KEY).start()
    try:
        mistakes(emulator, tmp_path)
    finally:
        emulator.stop()


def mistakes(emulator: Emulator, tmp_path: Path) -> None:
    rows = [{"id": "r0", "title": "Story"}]
    for config, expected in [
        (TEXT.replace("provider: anthropic", "provider: antropic"), "did you mean 'anthropic'"),
        (TEXT.replace("  max_tokens: 100\n", ""), "Anthropic requires max_tokens"),
        (TEXT + "  temperature: 0\n", "'temperature' has no equivalent"),
    ]:
        variables = project(tmp_path, config, rows)
        done = make("caption", env=env(emulator), check=False, **variables)
        assert done.returncode != 0 and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    variables = project(tmp_path, TEXT, rows)
    no_key = env(emulator)
    del no_key["ANTHROPIC_API_KEY"]
    done = make("caption", env=no_key, check=False, **variables)
    assert "ANTHROPIC_API_KEY is not set" in done.stderr and "Traceback" not in done.stderr
    done = make("caption", env=env(emulator, ANTHROPIC_API_KEY="wrong"), check=False, **variables)
    assert "ANTHROPIC_API_KEY" in done.stderr and "rejected" in done.stderr
    assert made(emulator) == 0
