"""State shared by every run on this machine, outside build/: it survives deleting build/.

`$BR_STATE_DIR` (default `${XDG_STATE_HOME:-~/.local/state}/batch-requests`) holds, per API
base URL:

- `chunks/<key>.json` (+ `.lock`): the batch made for one chunk identity (the sha256 of its
  input file and the attempt), written under a lock that every checkout and every process on
  the machine takes before creating that batch. Two `make caption` of the same job at once, in
  one build directory or in two checkouts, therefore create one batch per chunk; and a run
  after build/ was deleted finds its batches here without reading the account. It keeps the
  moment of a create sent and never answered too, so the walk back through the batch list to
  that moment (submission.py) holds after build/, and the ledger with it, was deleted.
  An entry is forgotten (both files removed, `ChunkIndex.sweep`, at most once a day) once its
  batch's rows reached answers/ (`fetched_at`) and FORGET (30 days) after it was made: by
  then the server has deleted the batch's output (OpenAI 30 days after it completed,
  Anthropic 29 days after it was created), so the entry could only say the results are gone.
  A rerun after deleting build/ that late sends the chunk again, as a new job would. An entry
  never fetched, or whose create has no answer (`intent_at`), is kept.
- `inflight/<model>/<batch id>.json` (+ `<model>.lock`): the estimated tokens of each batch in
  flight, for the token budget shared by parallel runs. A reservation is dropped when a run
  sees its batch end; one left by a run that died is checked on the server (one call) when it
  stands in the way, and none outlives its batch's 24-hour window.

No key, and nothing that identifies the account, is written here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from br.batches.provider import IN_FLIGHT, Provider
from br.files import write_text

WINDOW = 86400 + 3600  # a batch's 24-hour completion window, and an hour of slack
FORGET = 30 * 86400 + WINDOW  # a fetched entry this old is forgotten (see the top)
SWEEP_EVERY = 86400  # the index is swept at most once a day


def state_dir(base_url: str) -> Path:
    root = os.environ.get("BR_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "batch-requests"
    )
    return Path(root) / hashlib.sha256(base_url.encode()).hexdigest()[:16]


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in name)[:100]


class ChunkIndex:
    """The machine-wide record of which batch holds which chunk identity."""

    def __init__(self, base_url: str) -> None:
        self.dir = state_dir(base_url) / "chunks"

    def key(self, sha: str, attempt: int) -> str:
        return f"{sha[:40]}-{attempt}"

    @contextlib.contextmanager
    def locked(self, sha: str, attempt: int) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with hold(self.dir / f"{self.key(sha, attempt)}.lock"):
            yield

    def read(self, sha: str, attempt: int) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / f"{self.key(sha, attempt)}.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, sha: str, attempt: int) -> str | None:
        batch = self.read(sha, attempt).get("batch")
        return batch if isinstance(batch, str) else None

    def batches(self) -> frozenset[str]:
        """Every batch the index names, whatever its chunk: this machine's own."""
        found = set()
        for path in self.dir.glob("*.json"):
            try:
                batch = json.loads(path.read_text()).get("batch")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(batch, str):
                found.add(batch)
        return frozenset(found)

    def intent(self, sha: str, attempt: int) -> float | None:
        """When a create for this identity was sent and not answered (the run died), if one
        was: a run after build/ was deleted asks the server about it, back to that time."""
        data = self.read(sha, attempt)
        at = data.get("intent_at")
        return float(at) if data.get("batch") is None and isinstance(at, (int, float)) else None

    def put(self, sha: str, attempt: int, batch_id: str | None, intent_at: float = 0) -> None:
        """The batch of this identity; None with `intent_at`: a create about to be sent; None
        alone: no create outstanding (refused)."""
        data: dict[str, Any] = {"batch": batch_id, "at": round(time.time())}
        if batch_id is None and intent_at:
            data["intent_at"] = intent_at
        write_text(self.dir / f"{self.key(sha, attempt)}.json", json.dumps(data) + "\n")

    def fetched(self, sha: str, attempt: int, batch_id: str) -> None:
        """The batch's rows are in answers/: the entry may be forgotten after FORGET."""
        data = self.read(sha, attempt)
        if data.get("batch") == batch_id and "fetched_at" not in data:
            data["fetched_at"] = round(time.time())
            write_text(self.dir / f"{self.key(sha, attempt)}.json", json.dumps(data) + "\n")

    def sweep(self, now: float | None = None) -> int:
        """Forget the entries fetched and older than FORGET (at most once a day; `now` given:
        at once); how many were forgotten."""
        stamp = self.dir / ".swept"
        if now is None:
            now = time.time()
            with contextlib.suppress(FileNotFoundError):
                if now - stamp.stat().st_mtime < SWEEP_EVERY:
                    return 0
        if not self.dir.is_dir():
            return 0
        forgotten = 0
        for path in self.dir.glob("*.json"):
            if forgettable(path, now):
                with hold(path.with_suffix(".lock"), remove=True):
                    if forgettable(path, now):  # read again under the lock
                        path.unlink(missing_ok=True)
                        forgotten += 1
        stamp.touch()
        os.utime(stamp, (now, now))
        return forgotten


def forgettable(path: Path, now: float) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    at, fetched = data.get("at"), data.get("fetched_at")
    return (
        isinstance(data.get("batch"), str)
        and isinstance(at, (int, float))
        and isinstance(fetched, (int, float))
        and now - at > FORGET
    )


@contextlib.contextmanager
def hold(path: Path, remove: bool = False) -> Iterator[None]:
    """An exclusive flock on `path`, on the file that is at `path` when it is held (one removed
    by a sweep while we waited is opened again); `remove`: the file is removed before it is
    let go, so whoever waited on it opens a new one."""
    while True:
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                continue
            try:
                yield
            finally:
                if remove:
                    path.unlink(missing_ok=True)
            return


class Budget:
    """Estimated tokens in flight per model, across every run on the machine."""

    def __init__(self, base_url: str, model: str) -> None:
        self.dir = state_dir(base_url) / "inflight" / safe(model)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir.parent / f"{self.dir.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def held(self, ended: Callable[[str], bool], mine: set[str]) -> tuple[int, int]:
        """(batches, tokens) reserved. Reservations of dead runs are checked with `ended`."""
        count = tokens = 0
        now = time.time()
        for path in self.dir.glob("*.json"):
            try:
                r = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            batch_id = path.stem
            stale = now - r.get("at", 0) > WINDOW
            pid = r.get("pid", 0)
            if not stale and batch_id not in mine:
                # This process's own, for a batch it no longer follows, is a leak; a dead
                # run's is checked on the server.
                stale = pid == os.getpid() or not alive(pid) and ended(batch_id)
            if stale:
                path.unlink(missing_ok=True)
                continue
            count += 1
            tokens += int(r.get("tokens", 0))
        return count, tokens

    def reserve(self, batch_id: str, tokens: int) -> None:
        data = {"tokens": tokens, "at": round(time.time()), "pid": os.getpid()}
        write_text(self.dir / f"{safe(batch_id)}.json", json.dumps(data) + "\n")

    def release(self, batch_id: str) -> None:
        (self.dir / f"{safe(batch_id)}.json").unlink(missing_ok=True)


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ended_on_server(provider: Provider) -> Callable[[str], bool]:
    """Has a batch a dead run reserved ended? One retrieve, asked only when it stands in the way."""

    def ended(batch_id: str) -> bool:
        try:
            return provider.retrieve(batch_id).status not in IN_FLIGHT
        except Exception:  # gone, or unreachable: do not let it block the budget
            return True

    return ended
