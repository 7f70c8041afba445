"""MODE=live and MODE=flex: `make caption` through the synchronous API, into the same files."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import ROOT, Emulator, input_dir, live_answered, make, read_json, write_json

CHAT = "POST /v1/chat/completions"
CONFIG = """\
model: {model}
prices:
  {model}: {{input: 0.075, output: 0.30}}
verdict:
  is_multimodal: false
  user: "Is this news? {{title}}"
  response_key: verdict
  max_tokens: 20
"""


def setup(tmp_path: Path, n: int, model: str = "gpt-4o-mini", extra: str = "") -> dict[str, object]:
    data = write_json(
        tmp_path / "news.json", [{"id": f"r{i}", "title": f"t {i}"} for i in range(n)]
    )
    cfg = tmp_path / "news.yaml"
    cfg.write_text(CONFIG.format(model=model) + extra)
    return dict(BUILD=tmp_path / "build", INPUT=data, CONFIG=cfg, STEP="verdict", DATA_KEY="id")


def step_dir(variables: dict[str, object]) -> Path:
    return input_dir(Path(str(variables["BUILD"])), Path(str(variables["INPUT"]))) / "verdict"


def calls(emulator: Emulator) -> int:
    return int(emulator.stats()["calls"].get(CHAT, 0))


def all_answered(variables: dict[str, object], n: int) -> None:
    merged = read_json(step_dir(variables) / "merged.json")
    assert len(merged) == n and all(str(r["verdict"]).startswith("Emulated") for r in merged)


def test_live_run_under_429s_answers_every_record(emulator: Emulator, tmp_path: Path) -> None:
    variables = setup(tmp_path, 12)
    # 4 requests a second per model: the run is throttled, and waits each 429 out.
    emulator.faults(rpm_limit=4, rate_window_seconds=1, live_seconds=0.05)
    r = make("caption", env=emulator.env(), MODE="live", CONCURRENCY=4, **variables)
    all_answered(variables, 12)
    stats = emulator.stats()
    assert stats["batches_created"] == 0 and stats["files_created"] == 0
    assert stats["live_rate_limited"] > 0 and stats["requests_processed"] == 12
    assert "live: 12/12 answered" in r.stderr
    # The same files as a batch run: results, results.list, errors; report reads them.
    b = step_dir(variables)
    assert len(read_json(b / "results_001.jsonl")) == 12 and (b / "results.list").exists()
    assert (b / "errors.jsonl").read_text() == ""
    make("report", env=emulator.env(), **variables)
    # A rerun sends nothing, and neither does a switch to batch mode.
    make("caption", env=emulator.env(), MODE="live", **variables)
    make("caption", env=emulator.env(), **variables)
    stats = emulator.stats()
    assert stats["requests_processed"] == 12 and stats["batches_created"] == 0


def test_kill_9_mid_run_costs_at_most_concurrency(emulator: Emulator, tmp_path: Path) -> None:
    n, concurrency = 40, 4
    variables = setup(tmp_path, n)
    emulator.faults(live_seconds=0.3)
    answers = step_dir(variables) / "answers"
    args = ["make", "--no-print-directory", "caption", "MODE=live", f"CONCURRENCY={concurrency}"]
    args += [f"{k}={v}" for k, v in variables.items()]
    env = {"PREFLIGHT": "0", **emulator.env()}
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while live_answered(answers) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    answered = live_answered(answers)
    assert 10 <= answered < n
    time.sleep(0.5)  # let the requests in flight end on the server
    # The rest in batch mode: a switch of modes; only what has no answer is sent.
    emulator.faults(live_seconds=0)
    make("caption", env=emulator.env(), **variables)
    all_answered(variables, n)
    stats = emulator.stats()
    assert stats["requests_processed"] <= n + concurrency
    batched = stats["requests_processed"] - calls(emulator)
    assert batched == n - answered  # the batch held exactly the unanswered requests


def test_mode_live_in_the_config(emulator: Emulator, tmp_path: Path) -> None:
    variables = setup(tmp_path, 5)
    cfg = Path(str(variables["CONFIG"]))
    cfg.write_text(cfg.read_text() + "  mode: live\n")
    make("caption", env=emulator.env(), **variables)
    all_answered(variables, 5)
    assert emulator.stats()["batches_created"] == 0 and calls(emulator) == 5


def test_flex_waits_out_unavailable_and_is_refused_without_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    variables = setup(tmp_path, 3)
    r = make("caption", env=emulator.env(), check=False, MODE="flex", **variables)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "error: MODE=flex: gpt-4o-mini has no flex tier" in r.stderr
    assert calls(emulator) == 0
    flex = setup(tmp_path / "flex", 6, model="o4-mini")
    emulator.faults(flex_unavailable_rate=0.4, seed=3)
    make("caption", env=emulator.env(), MODE="flex", **flex)
    all_answered(flex, 6)
    stats = emulator.stats()
    assert stats["live_rate_limited"] > 0 and stats["batches_created"] == 0
    rows = read_json(step_dir(flex) / "results_001.jsonl")
    assert {r["outcome"] for r in rows} == {"succeeded"}
