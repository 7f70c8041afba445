"""Shared test set-up: scripts/ on sys.path, a real emulator process, and real `make` runs.

Every test gets its own emulator (port 0, its own state dir) and its own BUILD directory, so
tests are safe under `pytest -n 2`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
PYTHON = str(ROOT / ".venv" / "bin" / "python")
TEST_KEY = "test-key-not-secret"
# The example's two steps (configs/example.yaml, trimmed), for a pipeline on any provider: a
# config is a provider's header (model:, provider:, prices:) and these.
EXAMPLE_STEPS = """pipeline: [article_filter, caption]
article_filter:
  is_multimodal: false
  system: You screen news articles. Answer in JSON.
  user: |
    Title: {title}
    Article: {article}
  response_format:
    type: object
    properties:
      keep: {type: boolean}
      reason: {type: string}
    required: [keep, reason]
    additionalProperties: false
  response_key: article_filter
  max_tokens: 200
caption:
  where: .article_filter.keep != false
  system: You write factual captions for news photographs.
  user: 'Headline: {title}'
  response_key: generated_caption
  max_tokens: 300
"""


class Emulator:
    """A running `scripts/emulator.py`, with its admin endpoint and an SDK client."""

    def __init__(self, state_dir: Path, *options: str) -> None:
        self.state_dir = state_dir
        self.options = list(options)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> Emulator:
        cmd = [PYTHON, str(ROOT / "scripts" / "emulator.py"), "--port", "0"]
        cmd += ["--state-dir", str(self.state_dir), *self.options]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url
        return self

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET an admin endpoint, or POST `body` to it as JSON (with the key, when one is set)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.root}/_emulator/{path}", data=data)
        request.add_header("Content-Type", "application/json")
        for flag in ("--admin-token", "--api-key"):
            if flag in self.options:
                request.add_header(
                    "Authorization", f"Bearer {self.options[self.options.index(flag) + 1]}"
                )
                break
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def faults(self, **settings: Any) -> Any:
        return self.admin("faults", settings)

    def stats(self) -> dict[str, Any]:
        return self.admin("stats")

    def client(self, key: str = TEST_KEY) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=5)

    def batches(self) -> list[Any]:
        return list(self.client().batches.list(limit=100))

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MAKE"))}
        env.update(OPENAI_BASE_URL=self.url, OPENAI_API_KEY=TEST_KEY, BR_POLL_MIN="0.1")
        # The machine-wide index and budget (scripts/machine.py), per test.
        env.update(BR_STATE_DIR=str(self.state_dir.parent / "br-state"))
        # The emulator fetches no image URL and the tests' hosts (img.test) do not exist: the
        # preflight is off unless a test turns it on (PREFLIGHT="1").
        env.update(PREFLIGHT="0")
        env.update(extra)
        return env


@pytest.fixture(autouse=True)
def fresh_number_latches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a fresh process does: no ExactFloat and no NaN read yet (records.py
    latches both for the rest of a process, and tests share one)."""
    from br import records

    monkeypatch.setattr(records, "_exact_read", False)
    monkeypatch.setattr(records, "_nonfinite_read", False)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """A fast emulator: batches take about half a second."""
    emu = Emulator(tmp_path / "emulator", "--processing-seconds", "0.5").start()
    yield emu
    emu.stop()


def make(
    *targets: str, env: dict[str, str], check: bool = True, **variables: Any
) -> subprocess.CompletedProcess[str]:
    """Run the real `make` in the project root, with variables such as BUILD=tmp/build."""
    args = ["make", "--no-print-directory", *targets]
    args += [f"{k}={v}" for k, v in variables.items()]
    env = {"PREFLIGHT": "0", **env}  # no image host exists in a test unless it starts one
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout}"
            f"\n--- stderr\n{result.stderr}"
        )
    return result


def input_dir(build: Path, input: Path | str = "data/example.json") -> Path:
    """The build directory `make` gives INPUT (scripts/build_name.py): BUILD/<stem>-<hash>."""
    from br.layout import name_of

    path = Path(input) if Path(input).is_absolute() else ROOT / input
    return Path(build) / name_of(str(path))[0]


def read_json(path: Path) -> Any:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def write_json(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    return path


def live_answered(answers: Path) -> int:
    """How many answers the live runs' journals in `answers` hold (whole lines only)."""
    total = 0
    for path in answers.glob("live-run-*.jsonl"):
        data = path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        total += sum(1 for line in whole.splitlines() if b'"outcome"' in line)
    return total
