"""Exactly once on Anthropic and Gemini, under the tests OpenAI's path has (test_exactly_once.py):
two `make caption` at once on one build/, build/ deleted (the machine state kept, or gone too:
another machine), and a `kill -9` before a create, with a create sent and unanswered (the
emulator holds its answer back), after it, and while results download. Each ends with a rerun
and checks the emulator: one batch per chunk, every request processed once, every record
answered in merged.json. Real make, scripts, official SDKs and the emulator.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest
from conftest import ROOT, Emulator, input_dir, read_json, write_json

ROWS, PER_CHUNK = 12, 4
CHUNKS = ROWS // PER_CHUNK
HOLD = 8.0  # seconds the emulator holds an answer back at a kill point (the kill comes at once)
FILES = {"BR_GEMINI_INLINE_BYTES": "0"}  # every Gemini chunk through the File API


@dataclass(frozen=True)
class Side:
    """What differs per provider: its config header, its key and server, its routes."""

    header: str
    key: str
    base_url: str
    counter: str  # the emulator's stat of batches created
    create: str  # the route of a create
    results: str  # the route that serves an ended batch's results


SIDES = {
    "anthropic": Side(
        "model: claude-sonnet-4-5\nprovider: anthropic\n",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "message_batches_created",
        "POST /v1/messages/batches",
        "GET /v1/messages/batches/{id}/results",
    ),
    "gemini": Side(
        "model: gemini-2.5-flash\nprovider: gemini\n",
        "GEMINI_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "gemini_batches_created",
        "POST /{version}/models/{model}",
        "GET /{version}/files/{id}",  # the SDK downloads through files/{id}:download
    ),
}
STEP = """caption:
  is_multimodal: false
  user: 'Describe {title}'
  response_key: text
  max_tokens: 100
"""


class Project:
    """A dataset of ROWS records in chunks of PER_CHUNK, `make caption` on one provider."""

    def __init__(self, root: Path, emu: Emulator, side: Side) -> None:
        self.root, self.emu, self.side = root, emu, side
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.yaml").write_text(side.header + STEP)
        rows = [{"id": f"r{i:03d}", "title": f"Story {i:03d}"} for i in range(ROWS)]
        self.input = write_json(root / "data.json", rows)
        self.build = root / "build"
        self.b = input_dir(self.build, self.input) / "caption"
        self.state = emu.state_dir.parent / "br-state"
        self.extra: dict[str, str] = {}  # more of make's environment

    def env(self) -> dict[str, str]:
        server = {self.side.base_url: self.emu.root, self.side.key: "test-key"}
        return self.emu.env(**server, **self.extra)

    def args(self) -> list[str]:
        variables = {
            "BUILD": self.build, "INPUT": self.input, "CONFIG": self.root / "config.yaml",
            "STEP": "caption", "DATA_KEY": "id", "MAX_REQUESTS": PER_CHUNK,
        }  # fmt: skip
        return ["make", "--no-print-directory", "caption"] + [
            f"{k}={v}" for k, v in variables.items()
        ]

    def make(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.args(), cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=300
        )
        assert not check or done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        return done

    def start(self) -> subprocess.Popen[str]:
        """`make caption` in a new session, so one killpg reaches make and every script."""
        log = open(self.root / f"make-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
        try:
            return subprocess.Popen(
                self.args(), cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                text=True, start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()

    def created(self) -> int:
        return int(self.emu.stats().get(self.side.counter, 0))

    def calls(self, route: str) -> int:
        return int(self.emu.stats()["calls"].get(route, 0))

    def kill_when(self, due: Callable[[], bool], hold: str | None = None) -> None:
        """Run make until `due`, then SIGKILL the whole tree; `hold` is a route whose answers
        the emulator holds back meanwhile."""
        self.emu.faults(response_delay={hold: HOLD} if hold else {})
        run = self.start()
        started = time.monotonic()
        try:
            while not due():
                assert run.poll() is None, "make ended before the kill point"
                assert time.monotonic() - started < 120, "the kill point never came"
                time.sleep(0.02)
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait(30)
            self.emu.faults(response_delay={})

    def check(self) -> None:
        """One batch per chunk, every request paid for once, every record answered."""
        stats = self.emu.stats()
        assert stats.get(self.side.counter, 0) == CHUNKS, stats
        assert stats["requests_processed"] == ROWS, stats
        merged = read_json(self.b / "merged.json")
        assert [r["id"] for r in merged] == [f"r{i:03d}" for i in range(ROWS)]
        assert all(r.get("text") for r in merged), merged
        ids = {(self.b / f"batch_{n:03d}.id").read_text().strip() for n in range(1, CHUNKS + 1)}
        assert len(ids) == CHUNKS


@pytest.fixture(params=list(SIDES))
def project(
    request: pytest.FixtureRequest, emulator: Emulator, tmp_path: Path
) -> Iterator[Project]:
    yield Project(tmp_path, emulator, SIDES[request.param])


def test_two_runs_at_once_on_one_build(project: Project) -> None:
    runs = [project.start(), project.start()]
    assert [run.wait(300) for run in runs] == [0, 0], [
        p.read_text() for p in project.root.glob("make-*.log")
    ]
    project.check()


def test_build_deleted_then_rerun(project: Project) -> None:
    project.make()
    shutil.rmtree(project.build)
    project.make()
    project.check()


def test_build_and_machine_state_deleted_then_rerun(project: Project) -> None:
    """Another machine: no ledger, no machine index; the server's batches are all there is."""
    project.make()
    shutil.rmtree(project.build)
    shutil.rmtree(project.state)
    before = dict(project.emu.stats()["calls"])
    project.make()
    project.check()
    calls = {k: n - before.get(k, 0) for k, n in project.emu.stats()["calls"].items()}
    print(f"\n[once] another machine's rerun: {ROWS} requests in {CHUNKS} chunks, calls {calls}")
    assert not any(route.startswith("POST") for route, n in calls.items() if n)


KILLS: dict[str, Callable[[Project], Any]] = {
    "before-a-create": lambda p: p.kill_when(lambda: (p.b / "chunk_001.jsonl").exists()),
    "create-sent-unanswered": lambda p: p.kill_when(lambda: p.created() >= 1, p.side.create),
    "after-a-create": lambda p: p.kill_when(lambda: (p.b / "batch_001.id").exists()),
    "during-results-download": lambda p: p.kill_when(
        lambda: p.calls(p.side.results) >= 1, p.side.results
    ),
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_kill_then_rerun(project: Project, kill: str) -> None:
    if kill == "during-results-download":
        project.extra = FILES  # a Gemini chunk sent inline has its results inline: no download
    KILLS[kill](project)
    project.make()
    project.check()


def test_anthropic_on_another_machine_while_its_batches_run_stops_before_paying(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Anthropic's batches carry no label: a running batch of the chunk's size that no record
    explains cannot be told apart. The run stops with one line and the two ways forward, pays
    nothing; once the batches end, a rerun tells them by their results and adopts them."""
    project = Project(tmp_path, emulator, SIDES["anthropic"])
    emulator.faults(processing_seconds=6)
    project.kill_when(lambda: project.created() >= CHUNKS)
    shutil.rmtree(project.build)
    shutil.rmtree(project.state)
    done = project.make(check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    said = [line for line in done.stderr.splitlines() if "RESEND=1" in line]
    assert len(said) == 1 and said[0].startswith("error: chunk_001.jsonl: batch msgbatch_"), (
        done.stderr
    )
    assert "is still in_progress" in said[0] and "batch_001.id" in said[0]
    assert project.created() == CHUNKS
    client = anthropic.Anthropic(base_url=emulator.root, api_key="test-key")
    deadline = time.monotonic() + 60
    while any(b.processing_status != "ended" for b in client.messages.batches.list()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    project.make()
    project.check()
    ledger = [json.loads(line) for line in (project.b / "ledger.jsonl").read_text().splitlines()]
    assert sum(e.get("how") == "recalled" for e in ledger) == CHUNKS


def test_anthropic_another_job_running_on_this_machine_is_not_a_stranger(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Another dataset's batches, as large as ours, still running: this machine made them (its
    index says so), so they are not candidates and the second job creates its own at once."""
    first = Project(tmp_path / "first", emulator, SIDES["anthropic"])
    emulator.faults(processing_seconds=8)
    first.kill_when(lambda: (first.b / f"batch_{CHUNKS:03d}.id").exists())  # all answered
    emulator.faults(processing_seconds=0.5)
    second = Project(tmp_path / "second", emulator, SIDES["anthropic"])
    rows = [{"id": f"r{i:03d}", "title": f"Other story {i:03d}"} for i in range(ROWS)]
    second.input = write_json(second.input, rows)
    second.b = input_dir(second.build, second.input) / "caption"
    done = second.make(check=False)
    assert done.returncode == 0, done.stderr
    assert second.created() == 2 * CHUNKS
    assert all(r["text"] for r in read_json(second.b / "merged.json"))


def test_anthropic_strangers_of_the_same_size_are_read_once_a_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Another machine's ended batches as large as ours: each is a candidate for every chunk,
    but its results are read once a run (its first line is not ours), not once per chunk."""
    first = Project(tmp_path / "first", emulator, SIDES["anthropic"])
    first.make()
    shutil.rmtree(first.state)  # they were made elsewhere, as far as this machine knows
    second = Project(tmp_path / "second", emulator, SIDES["anthropic"])
    rows = [{"id": f"r{i:03d}", "title": f"Other story {i:03d}"} for i in range(ROWS)]
    second.input = write_json(second.input, rows)
    second.b = input_dir(second.build, second.input) / "caption"
    reads = second.calls(second.side.results)
    second.make()
    assert second.created() == 2 * CHUNKS
    # CHUNKS strangers read once each, then this job's own CHUNKS results.
    assert second.calls(second.side.results) - reads == 2 * CHUNKS
    assert all(r["text"] for r in read_json(second.b / "merged.json"))


@pytest.mark.parametrize("variance", ["relative_results_url", "no_results_url"])
def test_anthropic_results_url_relative_or_missing(
    variance: str, emulator: Emulator, tmp_path: Path
) -> None:
    """A server whose results_url is a path (resolved against the base URL) or missing (the
    documented route, /v1/messages/batches/{id}/results): every result read, once."""
    project = Project(tmp_path, emulator, SIDES["anthropic"])
    emulator.faults(**{variance: True})
    project.make()
    project.check()
    calls = emulator.stats()["calls"]
    assert calls["GET /v1/messages/batches/{id}/results"] == CHUNKS


def test_anthropic_results_url_is_resolved_against_the_base_url() -> None:
    """As a URL reference (RFC 3986): a path from the server's root, a relative one from the
    base URL; none: the documented route under the base URL; another host: not followed."""
    from br.batches.anthropic import Anthropic
    from br.batches.provider import Batch

    base = "http://proxy.test/anthropic/"
    provider = Anthropic(None, anthropic.Anthropic(base_url=base, api_key="k"))

    def url(results: str | None) -> str:
        return provider.results_url(Batch("b1", "completed", 0.0, output_file_id=results))

    route = base + "v1/messages/batches/b1/results"
    assert url(None) == route
    assert (
        url("/v1/messages/batches/b1/results") == "http://proxy.test/v1/messages/batches/b1/results"
    )
    assert url("v1/messages/batches/b1/results") == route
    assert url("http://proxy.test/r/b1") == "http://proxy.test/r/b1"
    assert url("https://elsewhere.test/v1/messages/batches/b1/results") == route


# ----------------------------------------------------------------------------- base_url per step

TWO_SERVERS = """model: gpt-4o-mini
base_url: {openai}
caption:
  provider: {provider}
  model: {model}
  is_multimodal: false
  user: 'Describe {{title}}'
  response_key: text
  max_tokens: 100
"""


@pytest.mark.parametrize(
    "provider, model, default",
    [
        ("anthropic", "claude-sonnet-4-5", "https://api.anthropic.com"),
        ("gemini", "gemini-2.5-flash", "https://generativelanguage.googleapis.com/"),
    ],
)
def test_a_top_level_base_url_is_only_the_top_level_providers(
    provider: str, model: str, default: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI's base_url: does not carry another provider's key to OpenAI's server: that step
    goes to its SDK's environment variable, else its default host; a step's own base_url: is
    that step's."""
    from br.batches.providers import provider_for
    from br.config import load_config

    for name in ("ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.chdir(tmp_path)  # no .env
    path = tmp_path / "config.yaml"
    openai_url = "http://openai-proxy.test/v1"
    path.write_text(TWO_SERVERS.format(openai=openai_url, provider=provider, model=model))
    assert provider_for(load_config(path), "caption").where.rstrip("/") == default.rstrip("/")
    assert str(provider_for(load_config(path), None).client.base_url).startswith(openai_url)
    own = "http://own-server.test/"
    path.write_text(path.read_text().replace("  max_tokens", f"  base_url: {own}\n  max_tokens"))
    assert provider_for(load_config(path), "caption").where == own
    env = {"ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL"}
    for name in env:
        monkeypatch.setenv(name, "http://from-environment.test/")
    assert provider_for(load_config(path), "caption").where == "http://from-environment.test/"


def test_a_steps_base_url_through_make_with_the_warning(emulator: Emulator, tmp_path: Path) -> None:
    """An Anthropic step with its own base_url: (the emulator), under a config whose top-level
    base_url: is OpenAI's: the step runs there, and the key's trip to a non-default host is
    warned about."""
    project = Project(tmp_path, emulator, SIDES["anthropic"])
    config = TWO_SERVERS.format(
        openai=emulator.url, provider="anthropic", model="claude-sonnet-4-5"
    ).replace("  max_tokens", f"  base_url: {emulator.root}\n  max_tokens")
    (tmp_path / "config.yaml").write_text(config)
    env = project.env()
    del env["ANTHROPIC_BASE_URL"]
    done = subprocess.run(
        project.args(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    project.check()
    assert "your API key is sent to 127.0.0.1, not api.anthropic.com" in done.stderr
    assert emulator.batches() == []  # nothing on OpenAI's API


def test_a_steps_base_url_must_be_a_url(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        TWO_SERVERS.format(
            openai="https://api.openai.com/v1", provider="openai", model="m"
        ).replace("  max_tokens", "  base_url: api.example.test\n  max_tokens")
    )
    from br.cli import UserError
    from br.config import load_config

    with pytest.raises(UserError, match="base_url must be an http"):
        load_config(path).step("caption")


def test_gemini_kill_with_an_upload_unanswered_uploads_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Before the first create, the chunk's upload is accepted and its answer held back: after
    the kill, the rerun finds the file by its display name and uploads no second one."""
    from google import genai

    project = Project(tmp_path, emulator, SIDES["gemini"])
    project.extra = FILES
    route = "POST /upload/{version}/files"  # a resumable upload: start, then the bytes (both
    project.kill_when(lambda: project.calls(route) >= 2, route)  # held: the kill is in the 2nd)
    assert project.created() == 0
    project.make()
    project.check()
    client = genai.Client(api_key="test-key", http_options={"base_url": emulator.root})
    names = [f.display_name for f in client.files.list() if f.display_name]  # not results
    assert len(names) == len(set(names)) == CHUNKS, names
