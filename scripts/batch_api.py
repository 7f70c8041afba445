"""The Batch API calls the scripts share: find-or-create (exactly once), token budget, waiting.

Exactly once: every batch we create carries deterministic metadata (the sha256 of its input
file and the attempt number). Before creating one we look for it on the server, and `create`
itself is sent without the SDK's automatic retries: after any failure whose outcome is unknown
(dropped connection, 5xx, 429) we look again before trying again, so a lost response never
becomes a second paid batch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from cli import UserError, note
from config import ENDPOINT
from files import sha256_file
from records import iter_jsonl
from tokens import estimate_tokens

# Statuses in which a batch still holds enqueued tokens.
IN_FLIGHT = {"validating", "in_progress", "finalizing", "cancelling"}
# Metadata keys that identify our batches (deterministic, so a rerun can find them).
META_STEP = "br_step"
META_CHUNK = "br_chunk_sha256"
META_TOKENS = "br_est_tokens"
META_MODEL = "br_model"
META_ATTEMPT = "br_attempt"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
ADOPT_HORIZON = 29 * 86400  # output files live 30 days; older batches are no use to adopt
T = TypeVar("T")


# --------------------------------------------------------------------------- finding our batches


def recent_batches(client: Any, horizon: float = ADOPT_HORIZON) -> Iterator[Any]:
    """Batches newest first, stopping at the horizon (the list is newest first)."""
    oldest = time.time() - horizon
    for batch in client.batches.list(limit=100):
        if batch.created_at < oldest:
            return
        yield batch


def find_batch(client: Any, sha: str, attempt: int, since: float | None = None) -> Any | None:
    """The newest batch made from this input file and attempt that did not fail.

    `since`: the input file's mtime. Its batch is not older than the file (chunks keep their
    mtime while their bytes stay the same), so the scan stops a day before it (slack for clock
    skew, and for a build directory deleted and rebuilt within a day) instead of reading the
    account's whole history for every chunk.
    """
    horizon = ADOPT_HORIZON if since is None else min(ADOPT_HORIZON, time.time() - since + 86400)
    for batch in recent_batches(client, horizon):
        meta = batch.metadata or {}
        if (
            meta.get(META_CHUNK) == sha
            and meta.get(META_ATTEMPT, "0") == str(attempt)
            and batch.status != "failed"
        ):
            return batch
    return None


def in_flight(client: Any, model: str, exclude: str | None = None) -> tuple[int, int, float]:
    """(batches, estimated tokens, oldest created_at) of our in-flight batches for `model`."""
    count = tokens = 0
    oldest = time.time()
    for batch in recent_batches(client, horizon=86400 + 3600):
        meta = batch.metadata or {}
        if batch.status in IN_FLIGHT and meta.get(META_MODEL) == model and batch.id != exclude:
            count += 1
            tokens += int(meta.get(META_TOKENS) or 0)
            oldest = min(oldest, batch.created_at)
    return count, tokens, oldest


def in_flight_tokens(client: Any, model: str, exclude: str | None = None) -> tuple[int, int]:
    """(batches, estimated tokens) of our batches for `model` still holding enqueued tokens."""
    count, tokens, _ = in_flight(client, model, exclude)
    return count, tokens


# --------------------------------------------------------------------------- exactly once


def once(create: Callable[[], T], find: Callable[[], T | None], what: str, tries: int = 8) -> T:
    """Call `create` until it succeeds, checking with `find` after every unclear failure."""
    import openai

    delay = 1.0
    for n in range(tries):
        try:
            return create()
        except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as e:
            wait = retry_after(e) or delay
            note(f"{what}: {type(e).__name__}, checking whether it went through ({n + 1}/{tries})")
            time.sleep(wait)
            delay = min(delay * 2, 30)
            found = find()
            if found is not None:
                return found
    raise UserError(f"{what} kept failing after {tries} tries; rerun make later to resume")


def retry_after(e: Exception) -> float | None:
    response = getattr(e, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None


def find_file(client: Any, filename: str, size: int) -> Any | None:
    for f in client.files.list(purpose="batch"):
        if f.filename == filename and f.bytes == size and f.status != "error":
            return f
    return None


def upload(client: Any, path: Path, sha: str, label: str) -> Any:
    """Upload a chunk once: a file with the same name (holding its hash) and size is reused."""
    filename = f"br_{label}_{sha[:16]}.jsonl"
    size = path.stat().st_size
    existing = find_file(client, filename, size)
    if existing:
        return existing
    bare = client.with_options(max_retries=0)
    return once(
        lambda: bare.files.create(file=(filename, path.read_bytes()), purpose="batch"),
        lambda: find_file(client, filename, size),
        f"uploading {path.name}",
    )


@dataclass
class ChunkInfo:
    path: Path
    sha: str
    model: str
    tokens: int


def chunk_info(path: Path) -> ChunkInfo:
    tokens, models = 0, set()
    for request in iter_jsonl(path):
        tokens += estimate_tokens(request.get("body") or {})
        models.add((request.get("body") or {}).get("model"))
    if len(models) != 1:
        raise UserError(f"{path} mixes models {sorted(map(str, models))}; one model per batch")
    return ChunkInfo(path, sha256_file(path), str(models.pop()), tokens)


def submit(
    client: Any,
    chunk: ChunkInfo,
    step: str,
    attempt: int = 0,
    budget: int | None = None,
    lock_dir: Path | None = None,
) -> Any:
    """The batch for this chunk and attempt: an existing one we made, else a new one."""
    since = chunk.path.stat().st_mtime
    existing = find_batch(client, chunk.sha, attempt, since)
    if existing is not None:
        return existing
    with token_room(client, chunk, budget, lock_dir):
        # While we waited for the budget, a parallel job with the same chunk may have made it.
        existing = find_batch(client, chunk.sha, attempt, since) if budget else None
        if existing is not None:
            return existing
        label = f"{step}_{chunk.path.stem}"[:80]
        uploaded = upload(client, chunk.path, chunk.sha, label)
        metadata = {
            META_STEP: step[:512],
            META_CHUNK: chunk.sha,
            META_ATTEMPT: str(attempt),
            META_MODEL: chunk.model[:512],
            META_TOKENS: str(chunk.tokens),
            "br_chunk": chunk.path.name[:512],
        }
        bare = client.with_options(max_retries=0)
        batch = once(
            lambda: bare.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata=metadata,
            ),
            lambda: find_batch(client, chunk.sha, attempt, since),
            f"creating the batch for {chunk.path.name}",
        )
    return batch


@contextlib.contextmanager
def token_room(
    client: Any, chunk: ChunkInfo, budget: int | None, lock_dir: Path | None
) -> Iterator[None]:
    """Hold a lock shared by parallel make jobs until our batch fits in the token budget.

    The tokens in flight are read from the server (our batches' metadata), so a crash never
    leaves a stale reservation behind. A chunk bigger than the whole budget waits for an empty
    queue rather than forever.
    """
    if not budget or lock_dir is None:
        yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock_path = lock_dir / f"tokens-{chunk.model.replace('/', '_')}.lock"
    said = False
    with open(lock_path, "a") as lock:
        # Waiters queue on the lock and the kernel wakes them in turn: a newcomer never
        # overtakes a job that has waited longer, and only the holder polls the server.
        fcntl.flock(lock, fcntl.LOCK_EX)
        while True:
            count, tokens, oldest = in_flight(client, chunk.model)
            if count == 0 or tokens + chunk.tokens <= budget:
                yield
                return
            if not said:
                note(
                    f"{chunk.path.name}: waiting for token budget ({tokens} in flight + "
                    f"{chunk.tokens} > {budget} for {chunk.model})"
                )
                said = True
            # Room comes back when a batch ends: poll as one would for the oldest in flight.
            time.sleep(next_poll(SimpleNamespace(created_at=oldest)))


# --------------------------------------------------------------------------- waiting


def poll_min() -> float:
    return float(os.environ.get("BR_POLL_MIN", "0.25"))


def poll_max() -> float:
    return float(os.environ.get("BR_POLL_MAX", "120"))


def next_poll(batch: Any) -> float:
    """Poll at a fifth of the batch's age, within bounds: an hour-long batch costs ~60 calls."""
    age = max(0.0, time.time() - batch.created_at)
    return min(max(0.2 * age, poll_min()), poll_max())


class Progress:
    """A progress bar per batch on a terminal; plain lines in logs, CI or under make -j."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.time()
        parallel = "-j" in os.environ.get("MAKEFLAGS", "") or "jobserver" in os.environ.get(
            "MAKEFLAGS", ""
        )
        self.bar: Any = None
        if sys.stderr.isatty() and not parallel:
            from tqdm import tqdm

            # A terminal that reports no size (some ptys) would otherwise get an empty bar.
            size = shutil.get_terminal_size()
            self.bar = tqdm(
                desc=label,
                unit="req",
                file=sys.stderr,
                leave=True,
                ncols=min(size.columns, 120),
                nrows=max(size.lines, 10),
            )
        self.last_line = ""
        self.last_time = 0.0

    def update(self, batch: Any) -> None:
        counts = batch.request_counts
        done, failed, total = (
            (counts.completed, counts.failed, counts.total) if counts else (0, 0, 0)
        )
        if self.bar is not None:
            self.bar.total = total or None
            self.bar.n = done + failed
            self.bar.set_postfix_str(f"{batch.status} failed={failed}", refresh=False)
            self.bar.refresh()
            return
        elapsed = time.time() - self.started
        line = f"{self.label}: {batch.status} {done + failed}/{total} done, {failed} failed"
        left = eta(elapsed, done + failed, total)
        if line != self.last_line or time.time() - self.last_time > 60:
            note(f"{line}, {elapsed:.0f}s elapsed" + (f", ~{left:.0f}s left" if left else ""))
            self.last_line, self.last_time = line, time.time()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def eta(elapsed: float, done: int, total: int) -> float | None:
    if not done or not total or done >= total:
        return None
    return elapsed * (total - done) / done


def wait(client: Any, batch_id: str, label: str, patience: int = 10) -> Any:
    """Poll until the batch ends. A wait can last hours: a network blip that outlasts the
    SDK's own retries is waited out too, up to `patience` failed polls in a row."""
    import openai

    transient = (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError)
    progress = Progress(label)
    failures = 0
    try:
        while True:
            try:
                batch = client.batches.retrieve(batch_id)
            except transient as e:
                failures += 1
                if failures >= patience:
                    raise
                note(f"{label}: {type(e).__name__} while polling; trying again ({failures})")
                time.sleep(min(2.0**failures, 60.0))
                continue
            failures = 0
            progress.update(batch)
            if batch.status in TERMINAL:
                return batch
            time.sleep(next_poll(batch))
    finally:
        progress.close()


def file_lines(client: Any, file_id: str | None) -> Iterator[dict[str, Any]]:
    """The JSON lines of an output or error file, streamed; none for a missing file."""
    if not file_id:
        return
    with client.files.with_streaming_response.content(file_id) as response:
        for line in response.iter_lines():
            if line.strip():
                yield json.loads(line)
