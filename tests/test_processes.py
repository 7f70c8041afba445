"""How many Python processes `make caption` starts (issue 25: each pays its interpreter and its
imports, so on a small job their number is the cost). make runs every script through `PY=`, here
a shell recorder that logs the script and its flags, then execs the real interpreter: a first
run, a rerun with nothing to do, and the re-split collection started only when the step's
ledger may hold a batch to collect."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import write_if_changed
from br.cli import run
from br.files import sha256_file
from conftest import PYTHON, ROOT, Emulator, input_dir, make, read_json, write_json
from test_input_changes import Step, rows
from test_speed_paths import imported

CONFIG = """model: gpt-4o-mini
caption:
  is_multimodal: false
  user: 'Describe {title}.'
  response_key: text
"""
FLAGS = ("--collect", "--print-mode", "--check", "--writable", "--from")


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A `PY=` that logs each script it runs (name and FLAGS, one line) and execs Python."""
    log = tmp_path / "processes.log"
    py = tmp_path / "py"
    py.write_text(
        "#!/bin/sh\n"
        f'line="${{1##*/}}"; for a in "$@"; do case "$a" in {"|".join(FLAGS)}) '
        'line="$line $a";; esac; done\n'
        f"printf '%s\\n' \"$line\" >> '{log}'\n"
        f'exec {PYTHON} "$@"\n'
    )
    py.chmod(0o755)
    return py, log


class Job:
    def __init__(self, tmp_path: Path, emulator: Emulator, ids: list[str]) -> None:
        self.py, self.log = recorder(tmp_path)
        self.input = write_json(tmp_path / "data.json", [])
        self.rows(ids)
        (tmp_path / "config.yaml").write_text(CONFIG)
        self.env = emulator.env()
        self.variables = {
            "INPUT": str(self.input),
            "CONFIG": str(tmp_path / "config.yaml"),
            "BUILD": str(tmp_path / "build"),
            "DATA_KEY": "id",
            "PY": str(self.py),
        }
        self.step = input_dir(tmp_path / "build", self.input) / "caption"

    def rows(self, ids: list[str]) -> None:
        write_json(self.input, [{"id": i, "title": f"Story {i}"} for i in ids])

    def make(self, *targets: str) -> list[str]:
        """make's goals; the scripts it started, in order."""
        self.log.unlink(missing_ok=True)
        make(*(targets or ("caption",)), env=self.env, **self.variables)
        return self.log.read_text().splitlines() if self.log.exists() else []


def test_a_first_run_and_a_rerun_start_only_the_processes_they_need(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The five stamps from one process; no collection on a fresh step (no ledger yet); no
    cost check in batch mode without a cap (run.params says so); a rerun with nothing to do:
    the stamps, the paid step's look at its chunks, and the check that INPUT did not change
    meanwhile (which also copies OUTPUT, checked first by the cost check's process)."""
    job = Job(tmp_path, emulator, ["a", "b", "c"])
    first = job.make()
    assert first == [
        "write_if_changed.py",
        "make_requests.py",
        "split_requests.py",
        "run_batches.py",
        "merge_results.py",
        "write_if_changed.py --check",
    ], first
    merged = (job.step / "merged.json").read_bytes()
    assert [r["id"] for r in json.loads(merged)] == ["a", "b", "c"]
    # CONFIG parsed by the stamps' process, kept for the later scripts (br/config_cache.py).
    kept = json.loads((job.step / "config.json").read_text())
    assert kept["sha256"] == hashlib.sha256(CONFIG.encode()).hexdigest()
    assert kept["data"]["caption"]["response_key"] == "text"
    stamps = {p.name: p.stat().st_mtime_ns for p in job.step.glob("*.params")}
    again = job.make()
    assert again == [
        "write_if_changed.py",
        "run_batches.py",
        "write_if_changed.py --check",
    ], again
    assert (job.step / "merged.json").read_bytes() == merged
    assert {p.name: p.stat().st_mtime_ns for p in job.step.glob("*.params")} == stamps
    # OUTPUT: checked by the cost check's process, copied by the last check's.
    job.variables["OUTPUT"] = str(tmp_path / "out" / "merged.json")
    with_output = job.make()
    checked = [again[0], "plan.py --print-mode", *again[1:-1]]
    assert with_output == [*checked, "write_if_changed.py --check --from"], with_output
    assert (tmp_path / "out" / "merged.json").read_bytes() == merged
    del job.variables["OUTPUT"]
    # A cost cap: the cost check runs again, and run.params alone changes.
    job.variables["MAX_COST"] = "5"
    assert job.make() == [*checked, "write_if_changed.py --check"]
    assert (job.step / "run.params").read_text() == "RUN=check\n"
    changed = {p.name for p in job.step.glob("*.params") if p.stat().st_mtime_ns != stamps[p.name]}
    assert changed == {"run.params"}
    assert len(emulator.batches()) == 1


def test_the_re_split_collects_only_when_the_ledger_may_hold_an_unfetched_batch(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A batch sent and never fetched, then INPUT changes: the re-split starts the collection,
    which fetches that batch's rows into answers/ (nothing sent twice). A step that never sent
    anything has no ledger: no collection process at all."""
    job = Job(tmp_path, emulator, ["a", "b"])
    job.make(str(job.step / "batch_001.id"))  # sent, not fetched
    assert len(emulator.batches()) == 1 and (job.step / "ledger.jsonl").exists()
    job.rows(["a", "b", "c"])
    started = job.make()
    assert "run_batches.py --collect" in started, started
    assert started.index("run_batches.py --collect") < started.index("split_requests.py")
    merged = read_json(job.step / "merged.json")
    assert [r["id"] for r in merged] == ["a", "b", "c"]
    assert len(emulator.batches()) == 2  # a and b collected from the first; only c sent again
    assert os.path.getsize(job.step / "errors.jsonl") == 0


def test_the_stamps_come_from_one_process_and_a_mistake_writes_none_of_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """make's five stamps in one call: each worked out before any is written, so a provider
    mistake is one line and no stamp; then each rewritten only when its own bytes change."""
    data = write_json(tmp_path / "data.json", [{"id": "a"}])
    config = tmp_path / "config.yaml"
    config.write_text("model: gpt-4o-mini\nprovider: nosuch\n" + CONFIG.split("\n", 1)[1])
    step = tmp_path / "step"

    def stamps(max_requests: int = 1000, max_cost: str = "") -> list[str]:
        return [
            str(step / "requests.params"), "--hash", f"INPUT={data}", "STEP=caption",
            "--and", str(step / "images.stamp"), "--images", str(step / "images"),
            str(step / "preflight.json"),
            "--and", str(step / "split.params"), f"MAX_REQUESTS={max_requests}",
            "--provider", str(config), "caption",
            "--and", str(step / "merge.params"), "RESPONSE_KEY=",
            "--and", str(step / "run.params"), "--run", str(config), "caption", "", max_cost,
        ]  # fmt: skip

    assert run(write_if_changed.main, stamps()) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "provider 'nosuch'" in line and not step.exists()
    config.write_text(config.read_text().replace("nosuch", "anthropic"))
    assert run(write_if_changed.main, stamps()) == 0
    written = {p.name: p.read_text() for p in step.iterdir() if not p.name.startswith(".")}
    assert written == {
        "requests.params": f"STEP=caption\nINPUT_SHA256={sha256_file(data)}\n",
        "images.stamp": hashlib.sha256().hexdigest() + "\n",  # no image indexed
        "split.params": "MAX_REQUESTS=1000\nPROVIDER=anthropic\n",
        "merge.params": "RESPONSE_KEY=\n",
        "run.params": "RUN=batch\n",
    }
    mtimes = {p.name: p.stat().st_mtime_ns for p in step.iterdir()}
    folder = step.stat().st_mtime_ns
    time.sleep(0.01)
    # Nothing changed: not even a temporary file came and went (the folder's mtime stays).
    assert run(write_if_changed.main, stamps()) == 0
    assert step.stat().st_mtime_ns == folder
    assert run(write_if_changed.main, stamps(500)) == 0
    changed = [p.name for p in step.iterdir() if p.stat().st_mtime_ns != mtimes[p.name]]
    assert changed == ["split.params"]
    assert run(write_if_changed.main, stamps(500, max_cost="5")) == 0
    assert (step / "run.params").read_text() == "RUN=check\n"


@pytest.mark.parametrize(
    ("extra", "mode", "max_cost", "says"),
    [
        ("", "", "", "batch"),
        ("mode: batch\n", "batch", "", "batch"),
        ("mode: live\n", "", "", "check"),
        ("mode: [live]\n", "batch", "", "check"),  # not a mode at all: plan.py says so
        ("mode: {a: 1}\n", "", "", "check"),
        ("max_cost: 0\n", "", "", "check"),
        ("", "flex", "", "check"),
        ("", "", "abc", "check"),
    ],
)
def test_run_params_says_batch_only_for_batch_mode_without_a_cap(
    tmp_path: Path, extra: str, mode: str, max_cost: str, says: str
) -> None:
    """run.params lets make caption start run_batches.py without plan.py's check only for
    batch mode with no cap; anything else, a value that is no mode included, is checked."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + extra)
    target = tmp_path / "run.params"
    assert (
        run(write_if_changed.main, [str(target), "--run", str(config), "caption", mode, max_cost])
        == 0
    )
    assert target.read_text() == f"RUN={says}\n"


@pytest.mark.parametrize("extra", ["max_cost: 5\n", "mode: live\n"])
def test_a_plain_batch_run_stops_if_the_config_now_sets_a_cap_or_a_mode(
    tmp_path: Path, extra: str
) -> None:
    """run.params said RUN=batch when make started; CONFIG then gained a cap or a mode before
    the paid step: run_batches.py --plain stops in one line before anything is sent."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + extra)
    step = tmp_path / "step"
    step.mkdir()
    cmd = [PYTHON, str(ROOT / "scripts" / "run_batches.py"), "--dir", str(step)]
    cmd += ["--config", str(config), "--step", "caption", "--plain", ""]
    env = {**os.environ, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-x"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "changed while make ran" in done.stderr and "nothing was sent" in done.stderr
    assert list(step.iterdir()) == []
    config.write_text(CONFIG)  # as when make started: past the check, to the chunks (none)
    later = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert "changed while make ran" not in later.stderr and "chunks.mk" in later.stderr


def test_the_mode_without_a_cap_loads_neither_providers_nor_planner_nor_images(
    tmp_path: Path,
) -> None:
    """make caption asks plan.py for the step's mode when run.params says RUN=check (a cap,
    OUTPUT, or a mode: in the config): with no MAX_COST and no max_cost: it reads the config
    alone; with a cap it still prices what is left to send."""
    step = Step(tmp_path, rows(3))
    priced = step.config.read_text() + "prices:\n  gpt-4o-mini: {input: 0.15, output: 0.6}\n"
    step.config.write_text(priced)
    cost = ["--input", str(step.input), "--config", str(step.config), "--step", "caption"]
    cost += ["--requests", str(step.requests), "--answers", str(tmp_path / "none"), "--mode", ""]
    light = imported("plan.py", *cost, "--max-cost", "", "--print-mode")
    heavy = ("br.batches", "br.prompts.plan", "br.prompts.images", "sqlite3", "http")
    assert not sorted(m for m in light if m.startswith(heavy))
    cmd = [PYTHON, str(ROOT / "scripts" / "plan.py"), *cost, "--print-mode"]
    capped = subprocess.run([*cmd, "--max-cost", "5"], capture_output=True, text=True)
    assert capped.returncode == 0 and capped.stdout == "batch\n", capped.stderr
    assert capped.stderr.startswith("estimated cost $") and "within MAX_COST $5.00" in capped.stderr
    over = subprocess.run([*cmd, "--max-cost", "0"], capture_output=True, text=True)
    assert over.returncode != 0 and over.stdout == ""
    assert len(over.stderr.splitlines()) == 1 and "over MAX_COST $0.00" in over.stderr


def test_make_of_one_stamp_writes_the_five_in_one_process(
    emulator: Emulator, tmp_path: Path
) -> None:
    """`make <step>/<stamp>` still makes that stamp (and its four siblings, from the same one
    process); a second time rewrites none of them."""
    job = Job(tmp_path, emulator, ["a"])
    names = ["requests.params", "images.stamp", "split.params", "merge.params", "run.params"]
    for name in names:
        for path in job.step.glob("*"):
            path.unlink()
        assert job.make(str(job.step / name)) == ["write_if_changed.py"]
        assert sorted(p.name for p in job.step.iterdir() if p.suffix != ".json") == sorted(names)
    assert (job.step / "split.params").read_text() == (
        "MAX_REQUESTS=1000\nMAX_BYTES=180000000\nPROVIDER=openai\n"
    )
    mtimes = {p.name: p.stat().st_mtime_ns for p in job.step.iterdir()}
    time.sleep(0.01)
    job.make(str(job.step / "split.params"))
    assert {p.name: p.stat().st_mtime_ns for p in job.step.iterdir()} == mtimes


def test_a_stage_rebuilt_the_same_is_not_run_again_on_the_next_make(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The split or the merge older than one of its prerequisites (a script or the library
    edited, or the tool upgraded, after the run) runs once more; when its output comes out
    byte-identical, the file keeps its bytes and is given its newest prerequisite's mtime, so
    the next make runs neither again. Nothing is sent twice."""
    job = Job(tmp_path, emulator, ["a", "b"])
    job.make()
    merged = (job.step / "merged.json").read_bytes()
    # Twice: the first re-split leaves the answered requests out (no chunk is left to send),
    # the second comes out byte-identical.
    for _ in range(2):
        chunks = (job.step / "chunks.mk").read_bytes()
        for name in ("chunks.mk", "merged.json"):
            os.utime(job.step / name, (1_500_000_000, 1_500_000_000))  # before every script
        again = job.make()
        assert "split_requests.py" in again and "merge_results.py" in again, again
    assert (job.step / "chunks.mk").read_bytes() == chunks
    settled = job.make()
    assert settled == [
        "write_if_changed.py",
        "run_batches.py",
        "write_if_changed.py --check",
    ], settled
    assert (job.step / "merged.json").read_bytes() == merged
    assert len(emulator.batches()) == 1
