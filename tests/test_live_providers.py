"""`make sample` and MODE=live on Anthropic (Messages API) and Gemini (generateContent): the
real make, the official SDKs and the emulator's synchronous routes, with its rate limits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Emulator, input_dir, live_answered, make, read_json, write_json

PROVIDERS = {
    "openai": ("gpt-4o-mini", "batches_created"),
    "anthropic": ("claude-sonnet-4-5", "message_batches_created"),
    "gemini": ("gemini-2.5-flash", "gemini_batches_created"),
}
KEY = "test-provider-key"
CONFIG = """\
model: {model}
provider: {provider}
prices:
  {model}: {{input: 1.0, output: 4.0}}
verdict:
  is_multimodal: false
  user: "Is this news? {{title}}"
  response_key: verdict
  max_tokens: 40
  response_format:
    type: object
    properties: {{keep: {{type: boolean}}}}
    required: [keep]
"""


def env(emu: Emulator) -> dict[str, str]:
    return emu.env(
        ANTHROPIC_BASE_URL=emu.root,
        ANTHROPIC_API_KEY=KEY,
        GOOGLE_GEMINI_BASE_URL=emu.root,
        GEMINI_API_KEY=KEY,
    )


def chunk_id(line: dict[str, Any]) -> str:
    """The id a chunk line carries: `custom_id`, or Gemini's `key`."""
    return str(line.get("custom_id") or line.get("key"))


def setup(tmp_path: Path, provider: str, n: int) -> dict[str, Any]:
    data = write_json(
        tmp_path / "news.json", [{"id": f"r{i}", "title": f"t {i}"} for i in range(n)]
    )
    cfg = tmp_path / "news.yaml"
    cfg.write_text(CONFIG.format(model=PROVIDERS[provider][0], provider=provider))
    return dict(BUILD=tmp_path / "build", INPUT=data, CONFIG=cfg, STEP="verdict", DATA_KEY="id")


def step_dir(variables: dict[str, Any]) -> Path:
    return input_dir(Path(str(variables["BUILD"])), Path(str(variables["INPUT"]))) / "verdict"


def batches(emulator: Emulator, provider: str) -> int:
    stats = emulator.stats()
    return int(stats.get(PROVIDERS[provider][1], 0)) + int(stats["batches_created"])


def all_answered(variables: dict[str, Any], n: int) -> None:
    merged = read_json(step_dir(variables) / "merged.json")
    assert len(merged) == n and all(isinstance(r["verdict"]["keep"], bool) for r in merged)


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_sample_then_live_under_429s_answers_every_record_without_a_batch(
    emulator: Emulator, tmp_path: Path, provider: str
) -> None:
    variables = setup(tmp_path, provider, 12)
    r = make("sample", env=env(emulator), N=3, **variables)
    assert "3 record(s), 0 failed" in r.stdout and '"keep":' in r.stdout
    stats = emulator.stats()
    assert stats["live_calls"] == 3 and batches(emulator, provider) == 0
    # 4 requests a second per model: the run is throttled, and waits each 429 out.
    emulator.faults(rpm_limit=4, rate_window_seconds=1, live_seconds=0.05)
    r = make("caption", env=env(emulator), MODE="live", CONCURRENCY=4, **variables)
    all_answered(variables, 12)
    stats = emulator.stats()
    assert stats["live_rate_limited"] > 0 and stats["requests_processed"] == 12
    assert batches(emulator, provider) == 0 and "live: 9/9 answered (0 failed)" in r.stderr
    # Each row under its chunk line's own id (Gemini's: its key).
    rows = read_json(step_dir(variables) / "results_001.jsonl")
    sent = (step_dir(variables) / "chunk_001.jsonl").read_text().splitlines()
    assert sorted(r["custom_id"] for r in rows) == sorted(chunk_id(json.loads(x)) for x in sent)
    r = make("report", env=env(emulator), **variables)
    assert "paid twice" not in r.stdout + r.stderr and "9 answered live" in r.stdout
    # Every answer was paid at live prices: twice the config's batch prices (1.0 and 4.0).
    usage = [row["usage"] for row in read_json(step_dir(variables) / "results_001.jsonl")]
    tokens = [
        (
            u.get("prompt_tokens", u.get("input_tokens")),
            u.get("completion_tokens", u.get("output_tokens")),
        )
        for u in usage
    ]
    live_usd = 2 * sum(i * 1.0 + o * 4.0 for i, o in tokens) / 1e6
    total = read_json(step_dir(variables) / "report.json")["total"]
    assert total["cost_usd"] == pytest.approx(live_usd)
    # A rerun sends nothing, and neither does a switch to batch mode.
    make("caption", env=env(emulator), MODE="live", **variables)
    make("caption", env=env(emulator), **variables)
    stats = emulator.stats()
    assert stats["requests_processed"] == 12 and batches(emulator, provider) == 0


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def test_each_provider_answers_a_429_in_its_own_words(emulator: Emulator) -> None:
    emulator.faults(rpm_limit=1, rate_window_seconds=30)
    url = f"{emulator.root}/v1/messages"
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    status, answer, first = post(url, body, headers)
    assert status == 200 and answer["type"] == "message"
    assert first["anthropic-ratelimit-requests-remaining"] == "0"
    status, answer, second = post(url, body, headers)
    assert status == 429 and answer["error"]["type"] == "rate_limit_error"
    assert 1 <= int(second["retry-after"]) <= 30
    assert second["anthropic-ratelimit-requests-limit"] == "1"
    assert second["anthropic-ratelimit-requests-reset"].endswith("Z")
    url = f"{emulator.root}/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    status, answer, _ = post(url, body, {"x-goog-api-key": KEY})
    assert status == 200 and answer["candidates"][0]["content"]["parts"][0]["text"]
    status, answer, _ = post(url, body, {"x-goog-api-key": KEY})
    assert status == 429 and answer["error"]["status"] == "RESOURCE_EXHAUSTED"
    delays = [d["retryDelay"] for d in answer["error"]["details"] if "retryDelay" in d]
    assert len(delays) == 1 and delays[0].endswith("s")
    stats = emulator.stats()
    assert stats["live_calls"] == 4 and stats["live_rate_limited"] == 2


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_kill_9_mid_run_then_rerun_costs_at_most_concurrency_and_report_says_so(
    emulator: Emulator, tmp_path: Path, provider: str
) -> None:
    n, concurrency = 30, 4
    variables = setup(tmp_path, provider, n)
    emulator.faults(live_seconds=0.3)
    answers = step_dir(variables) / "answers"
    args = ["make", "--no-print-directory", "caption", "MODE=live", f"CONCURRENCY={concurrency}"]
    args += [f"{k}={v}" for k, v in variables.items()]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env={"PREFLIGHT": "0", **env(emulator)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while live_answered(answers) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    answered = live_answered(answers)
    assert 8 <= answered < n
    time.sleep(0.5)  # let the requests in flight end on the server
    emulator.faults(live_seconds=0)
    make("caption", env=env(emulator), MODE="live", CONCURRENCY=concurrency, **variables)
    all_answered(variables, n)
    calls = emulator.stats()["live_calls"]
    assert n <= calls <= n + concurrency and batches(emulator, provider) == 0
    report = make("report", env=env(emulator), **variables).stdout
    said = [line for line in report.splitlines() if "may have been paid twice" in line]
    assert len(said) == 1, report
    twice = int(said[0].split()[0])
    assert calls - n <= twice <= concurrency
    assert said[0] == (
        f"{twice} requests may have been paid twice (sent by a run that was killed before it "
        "answered)"
    )


def total_cost(plan_output: str) -> float:
    line = next(x for x in plan_output.splitlines() if "total cost, at most" in x)
    return float(line.split("$")[1])


def test_plan_and_max_cost_price_a_live_run_at_live_prices(
    emulator: Emulator, tmp_path: Path
) -> None:
    variables = setup(tmp_path, "anthropic", 4)
    batch = make("plan", env=env(emulator), **variables).stdout
    live = make("plan", env=env(emulator), MODE="live", **variables).stdout
    assert "input cost (batch prices)" in batch and "input cost (live prices" in live
    assert total_cost(live) == pytest.approx(2 * total_cost(batch), rel=0.02)
    cap = f"{1.5 * total_cost(batch):.6f}"  # above the batch estimate, under the live one
    r = make("caption", env=env(emulator), check=False, MODE="live", MAX_COST=cap, **variables)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(errors) == 1
    assert "at live prices" in errors[0] and "over MAX_COST" in errors[0]
    cfg = Path(str(variables["CONFIG"]))
    cfg.write_text(
        cfg.read_text().replace("provider: anthropic\n", "provider: anthropic\nmode: live\n")
    )
    r = make("caption", env=env(emulator), check=False, MAX_COST=cap, **variables)
    assert r.returncode != 0 and "at live prices" in r.stderr
    assert emulator.stats().get("live_calls", 0) == 0  # nothing was sent
    r = make("caption", env=env(emulator), MODE="batch", MAX_COST=cap, **variables)
    assert "within MAX_COST" in r.stderr
    all_answered(variables, 4)
    assert emulator.stats().get("live_calls", 0) == 0 and batches(emulator, "anthropic") == 1


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_the_token_budget_holds_a_live_run_within_the_tokens_per_minute(
    emulator: Emulator, tmp_path: Path, provider: str
) -> None:
    """TOKEN_BUDGET in live mode is tokens sent per minute (a 2-second minute here, on both
    sides): a run within it meets no 429 where the same run without it does."""
    n = 8  # each request: ~15 prompt tokens + max_tokens 40 (8 of them: over 330 a window)
    emulator.faults(tpm_limit=330, rate_window_seconds=2, live_seconds=0.05)
    paced = {**env(emulator), "BR_RATE_WINDOW": "2"}
    variables = setup(tmp_path / "paced", provider, n)
    make("caption", env=paced, MODE="live", CONCURRENCY=4, TOKEN_BUDGET=160, **variables)
    all_answered(variables, n)
    stats = emulator.stats()
    assert stats["live_calls"] == n and stats.get("live_rate_limited", 0) == 0
    variables = setup(tmp_path / "unpaced", provider, n)
    make("caption", env=paced, MODE="live", CONCURRENCY=4, **variables)
    all_answered(variables, n)
    assert emulator.stats()["live_rate_limited"] > 0


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_rejected_key_ends_a_live_run_in_one_line(tmp_path: Path, provider: str) -> None:
    emulator = Emulator(tmp_path / "emu", "--api-key", KEY).start()
    try:
        variables = setup(tmp_path, provider, 5)
        wrong = {**env(emulator), "OPENAI_API_KEY": "wrong", "ANTHROPIC_API_KEY": "wrong"}
        wrong["GEMINI_API_KEY"] = "wrong"
        for target, extra in (("caption", {"MODE": "live"}), ("sample", {})):
            r = make(target, env=wrong, check=False, **variables, **extra)
            errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
            assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
            assert len(errors) == 1 and "rejected" in errors[0], r.stderr
        assert emulator.stats().get("requests_processed", 0) == 0
    finally:
        emulator.stop()
