"""What the original tool's two commands share (send_batch_requests.py starts a run,
recover_batch_requests.py resumes it): the last run's state, BUILD/last_run.json (make variables
only, never the key; "running", then "completed" or "failed" with make's exit code), one run per
build root at a time, and running `make caption` with those variables in the project root.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, note

# isort: split

import contextlib
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from br.files import write_text

ROOT = Path(__file__).resolve().parents[2]
TARGET = "caption"


def build_root() -> Path:
    build = Path(os.environ.get("BUILD") or "build")
    return build if build.is_absolute() else ROOT / build


def state_path() -> Path:
    return build_root() / "last_run.json"


def save_state(variables: dict[str, str], status: str, code: int | None = None) -> None:
    state = {"target": TARGET, "variables": variables, "status": status, "exit_code": code}
    state["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_text(state_path(), json.dumps(state, indent=1, ensure_ascii=False) + "\n")


def load_state() -> dict[str, Any]:
    path = state_path()
    if not path.exists():
        raise UserError(
            f"no run to recover: {path} does not exist; start one with "
            "scripts/send_batch_requests.py -i INPUT -s STEP -c CONFIG"
        )
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(state.get("variables"), dict):
            raise ValueError
    except ValueError:
        raise UserError(f"{path} is damaged; rerun scripts/send_batch_requests.py instead")
    return state


@contextlib.contextmanager
def run_lock() -> Iterator[None]:
    """One run per build root at a time: recover must not race a run still going."""
    lock_dir = build_root() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "last_run.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"a send or recover run is still going in {build_root()}; wait for it to end"
            )
        yield


def run_make(variables: dict[str, str]) -> int:
    """Run the step through make, recording the run; returns make's exit code."""
    with run_lock():
        save_state(variables, "running")
        args = ["make", "--no-print-directory", TARGET, *(f"{k}={v}" for k, v in variables.items())]
        proc = subprocess.Popen(args, cwd=ROOT)
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # make got the same SIGINT: let it stop cleanly
            proc.wait()
            note("interrupted: run scripts/recover_batch_requests.py to resume")
            return 130
        save_state(variables, "completed" if code == 0 else "failed", code)
    if code != 0:
        note(
            f"error: make {TARGET} exited {code} (see above); fix the cause, then run "
            "scripts/recover_batch_requests.py to resume (nothing paid for is sent twice)"
        )
    return code


def absolute(path: str, what: str) -> str:
    """The absolute path, for make's command line: make expands `$` there, so none may be in it
    (spaces and the rest reach the recipes quoted, through the environment)."""
    full = Path(path).expanduser().resolve()
    if "$" in str(full):
        raise UserError(f"{what} path {full} has a $ in it, which make would expand; rename it")
    return str(full)
