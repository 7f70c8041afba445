"""How `make bench` runs things: the real make in the project root under a recorder that logs
each script's wall, CPU and peak RSS (wait4), one emulator per part, and a Job per dataset
(its own build root and machine state)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from br.cli import UserError
from br.layout import StepDir, name_of

ROOT = Path(__file__).resolve().parents[3]
STEP = "caption"
KEY = "bench-key-not-secret"
RECORDER = """\
#!{python} -S
import json, os, resource, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
start = time.time()
pid = os.posix_spawn({python!r}, [{python!r}, *sys.argv[1:]], os.environ,
                     setsigdef=(signal.SIGINT,))
_, status, usage = os.wait4(pid, 0)
row = {{"script": os.path.basename(sys.argv[1]) if len(sys.argv) > 1 else "-",
       "collect": "--collect" in sys.argv, "start": start, "end": time.time(),
       "rss_kb": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime,
       "rc": os.waitstatus_to_exitcode(status)}}
me = resource.getrusage(resource.RUSAGE_SELF)
row["recorder_cpu"] = me.ru_utime + me.ru_stime
with open({log!r}, "a") as f:
    f.write(json.dumps(row) + "\\n")
sys.exit(row["rc"] if row["rc"] >= 0 else 128 - row["rc"])
"""
# The job written by hand, the cookbook way: one process, the openai SDK, nothing of ours.


def timed(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run a command (output to `log`); its wall, and user+sys CPU of it and every process it
    waited for (wait4). A failure is one line with the log's tail."""
    start = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise UserError(f"{' '.join(cmd)} exited {proc.returncode}; its last lines:\n{tail}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


class Emulator:
    def __init__(self, state_dir: Path, *options: str) -> None:
        cmd = [sys.executable, str(ROOT / "scripts" / "emulator.py"), "--port", "0"]
        cmd += ["--state-dir", str(state_dir), "--validating-seconds", "0"]
        cmd += ["--finalizing-seconds", "0", *options]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.proc.kill()
            raise UserError(f"the emulator did not start (it printed {self.url!r})")

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET an admin endpoint, or POST `body` to it."""
        request = urllib.request.Request(
            f"{self.url.removesuffix('/v1')}/_emulator/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def calls(self) -> dict[str, int]:
        return dict(self.admin("stats").get("calls", {}))

    def batches(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest batches (ours, on a fresh emulator)."""
        request = urllib.request.Request(
            f"{self.url}/batches?limit={limit}", headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return list(json.loads(response.read())["data"])


@dataclass
class Job:
    """One dataset pushed through make: its build root, machine state and recorder log."""

    work: Path
    name: str
    input: Path
    emulator: Emulator
    max_requests: int = 1000
    env: dict[str, str] = field(default_factory=dict)

    @property
    def build(self) -> Path:
        return self.work / f"build-{self.name}"

    @property
    def b(self) -> Path:
        return self.build / name_of(str(self.input))[0] / STEP

    @property
    def files(self) -> StepDir:
        return StepDir(self.b)

    @property
    def merged(self) -> Path:
        return self.files.merged(name_of(str(self.input))[1])

    @property
    def log(self) -> Path:
        return self.work / f"scripts-{self.name}.log"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MAKE", "BR_"))}
        env.update(OPENAI_BASE_URL=self.emulator.url, OPENAI_API_KEY=KEY)
        env.update(BR_STATE_DIR=str(self.work / f"state-{self.name}"), **self.env)
        return env

    def make(self, *args: str) -> dict[str, Any]:
        """The real make in the project root: its wall and CPU, and the recorder's rows."""
        recorder = self.work / f"py-{self.name}"
        recorder.write_text(RECORDER.format(python=sys.executable, log=str(self.log)))
        recorder.chmod(0o755)
        cmd = ["make", "--no-print-directory", *args, f"INPUT={self.input}"]
        cmd += [f"CONFIG={self.work / 'bench.yaml'}", f"STEP={STEP}", f"BUILD={self.build}"]
        cmd += [f"MAX_REQUESTS={self.max_requests}", f"PY={recorder}"]
        cmd += ["PREFLIGHT=0"]  # the synthetic image URLs have no server to check
        seen = len(self.log.read_text().splitlines()) if self.log.exists() else 0
        fig = timed(cmd, self.environment(), self.work / f"make-{self.name}.log")
        rows = [json.loads(line) for line in self.log.read_text().splitlines()[seen:]]
        # The recorder's own CPU (its interpreter, the wait) is the bench's, not the job's.
        fig["cpu"] -= sum(r.get("recorder_cpu", 0.0) for r in rows)
        return {**fig, "rows": rows, "peak_mb": max((r["rss_kb"] for r in rows), default=0) / 1024}


def stage(rows: list[dict[str, Any]], script: str) -> dict[str, Any]:
    """Wall (the sum of its runs), CPU and peak RSS of one script's runs."""
    mine = [r for r in rows if r["script"] == script]
    return {
        "runs": len(mine),
        "wall": sum(r["end"] - r["start"] for r in mine),
        "cpu": sum(r["cpu"] for r in mine),
        "rss_mb": max((r["rss_kb"] for r in mine), default=0) / 1024,
    }


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f) - (0 if path.suffix == ".jsonl" else 2)
