"""Exactly once: the upload and the batch create of each chunk, each paid for once.

For a chunk identity (the sha256 of its input file, and the attempt number), in this order:
1. the step's ledger (ledger.py) names a batch that did not fail: it is ours, no call;
2. under the chunk's machine-wide lock (machine.py), the machine's index names one: adopted
   after one retrieve (so two runs at once, or a run after build/ was deleted, pay once);
3. the ledger holds a create sent without an answer (a kill, a dropped connection): the batch
   list is read back to that moment only, matching the input file id or our metadata;
4. otherwise the chunk is uploaded (the same way: ledger, then the file list back to an
   unanswered upload) and the batch created, the intent fsynced to the ledger first. `create`
   goes out without the SDK's retries: after an unclear failure (5xx, dropped connection) the
   list is checked before trying again, so a lost answer never becomes a second paid batch.

On the happy path that is one upload and one create per chunk, whatever the account holds.
A server that cannot list batches (404, 405, 501) is worked with from the ledger alone; an
unanswered create there stops the run with one line and the two ways forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from br.batches.ledger import Ledger
from br.batches.machine import ChunkIndex
from br.cli import UserError, note
from br.config import ENDPOINT
from br.files import sha256_file
from br.prompts.tokens import estimate_tokens
from br.records import iter_jsonl

# Metadata keys that identify our batches (deterministic, so a rerun can recognise them).
META_STEP = "br_step"
META_CHUNK = "br_chunk_sha256"
META_TOKENS = "br_est_tokens"
META_MODEL = "br_model"
META_ATTEMPT = "br_attempt"
SLACK = 300  # seconds of clock skew allowed between us and the server
UNLISTABLE = {404, 405, 501}
T = TypeVar("T")


class Unlistable(Exception):
    """The server does not offer this listing (GET /v1/files or /v1/batches)."""


@dataclass
class ChunkInfo:
    path: Path
    sha: str
    model: str
    tokens: int
    endpoint: str = ENDPOINT


def chunk_info(path: Path) -> ChunkInfo:
    tokens, models, urls = 0, set(), set()
    for request in iter_jsonl(path):
        tokens += estimate_tokens(request.get("body") or {})
        models.add((request.get("body") or {}).get("model"))
        urls.add(request.get("url") or ENDPOINT)
    if len(models) != 1:
        raise UserError(f"{path} mixes models {sorted(map(str, models))}; one model per batch")
    if len(urls) != 1:
        raise UserError(f"{path} mixes endpoints {sorted(urls)}; one endpoint per batch")
    return ChunkInfo(path, sha256_file(path), str(models.pop()), tokens, urls.pop())


# --------------------------------------------------------------------------- listing, bounded


def listed(pages: Callable[[], Iterator[T]]) -> Iterator[T]:
    """Iterate a listing; a server without it raises Unlistable."""
    import openai

    try:
        yield from pages()
    except openai.APIStatusError as e:
        if e.status_code in UNLISTABLE:
            raise Unlistable(str(e.status_code))
        raise


def batches_since(client: Any, since: float) -> Iterator[Any]:
    """Batches newest first, back to `since` (the list is newest first)."""
    for batch in listed(lambda: iter(client.batches.list(limit=100))):
        if batch.created_at < since - SLACK:
            return
        yield batch


def find_batch(client: Any, sha: str, attempt: int, since: float, file_id: str | None) -> Any:
    """A batch of this identity made since `since` that did not fail, or None."""
    for batch in batches_since(client, since):
        meta = batch.metadata or {}
        ours = (file_id and batch.input_file_id == file_id) or (
            meta.get(META_CHUNK) == sha and meta.get(META_ATTEMPT, "0") == str(attempt)
        )
        if ours and batch.status != "failed":
            return batch
    return None


def find_file(client: Any, filename: str, size: int, since: float) -> Any:
    pages = lambda: iter(client.files.list(purpose="batch", order="desc", limit=100))  # noqa: E731
    for f in listed(pages):
        if f.created_at < since - SLACK:
            return None
        if f.filename == filename and f.bytes == size and f.status != "error":
            return f
    return None


# --------------------------------------------------------------------------- exactly once


def once(create: Callable[[], T], find: Callable[[], T | None], what: str, tries: int = 8) -> T:
    """Call `create` until it succeeds, checking with `find` after every unclear failure.

    A 429 is a refusal before anything was made (the rate limiter answers first), so it is
    retried after its retry-after without asking."""
    import openai

    delay = 1.0
    for n in range(tries):
        try:
            return create()
        except openai.RateLimitError as e:
            note(f"{what}: rate limited, trying again ({n + 1}/{tries})")
            time.sleep(retry_after(e) or delay)
        except (openai.APIConnectionError, openai.InternalServerError) as e:
            note(f"{what}: {type(e).__name__}, checking whether it went through ({n + 1}/{tries})")
            time.sleep(retry_after(e) or delay)
            found = find()
            if found is not None:
                return found
        delay = min(delay * 2, 30)
    raise UserError(f"{what} kept failing after {tries} tries; rerun make later to resume")


def retry_after(e: Exception) -> float | None:
    response = getattr(e, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


class Submitter:
    """Finds or creates the batch of each chunk identity, exactly once (see the docstring)."""

    def __init__(
        self, client: Any, ledger: Ledger, step: str, resend: bool = False, id_hint: str = ""
    ) -> None:
        self.client, self.ledger, self.step, self.resend = client, ledger, step, resend
        self.index = ChunkIndex(str(client.base_url))
        self.bare = client.with_options(max_retries=0)
        self.warned_metadata = False
        self.created: set[str] = set()  # batch ids this process created
        self.id_hint = id_hint  # where a user may write a batch id by hand, for messages

    def batch_id(self, chunk: ChunkInfo, attempt: int, id_file: Path | None = None) -> str:
        """The id of the batch holding this chunk and attempt: found, adopted or created."""
        sha, ledger = chunk.sha, self.ledger
        live = ledger.live(sha, attempt)
        if live:
            return live
        with self.index.locked(sha, attempt):
            by_hand = self.hand_written(id_file)
            if by_hand and self.usable(by_hand):
                return self.adopted(chunk, attempt, by_hand, "id file")
            found = self.index.get(sha, attempt)
            if found and self.usable(found):
                return self.adopted(chunk, attempt, found, "machine index")
            since = ledger.create(sha, attempt).unknown_since
            if since is None:
                since = self.index.intent(sha, attempt)  # the ledger went with build/
            if since is not None:
                batch = self.resolve(chunk, attempt, since, id_file)
                if batch is not None:
                    return self.adopted(chunk, attempt, batch.id, "batch list")
            return self.create(chunk, attempt)

    def hand_written(self, id_file: Path | None) -> str | None:
        """A batch id in the chunk's id file that the ledger does not know: the user's pick."""
        if id_file is None or not id_file.exists():
            return None
        batch_id = id_file.read_text(encoding="utf-8", errors="replace").strip()
        return batch_id if batch_id and batch_id not in self.ledger.chunk_of else None

    def usable(self, batch_id: str) -> bool:
        """Known not to have failed: from the ledger, else from one retrieve."""
        if batch_id in self.ledger.chunk_of:
            return self.ledger.usable(batch_id)
        import openai

        try:
            return self.client.batches.retrieve(batch_id).status != "failed"
        except openai.NotFoundError:
            return False

    def adopted(self, chunk: ChunkInfo, attempt: int, batch_id: str, how: str) -> str:
        if batch_id not in self.ledger.chunk_of:
            self.ledger.record(
                "create",
                phase="done",
                sha=chunk.sha,
                attempt=attempt,
                batch_id=batch_id,
                chunk=chunk.path.name,
                how=how,
            )
        self.index.put(chunk.sha, attempt, batch_id)
        return batch_id

    def resolve(self, chunk: ChunkInfo, attempt: int, since: float, id_file: Path | None) -> Any:
        """A create we sent without hearing back: find it in the list back to its time."""
        if self.resend:
            self.ledger.record("resend", sha=chunk.sha, attempt=attempt)
            return None
        intent_file = self.ledger.uploads.get(chunk.sha)
        try:
            return find_batch(self.client, chunk.sha, attempt, since, intent_file)
        except Unlistable:
            where = id_file or f"the id file of {chunk.path.name}"
            raise UserError(
                f"{chunk.path.name}: a batch create sent at {when(since)} got no answer, and this "
                f"server cannot list batches to say whether it went through; either write the "
                f"batch id (see the server's dashboard) into {where} and rerun, or rerun with "
                "RESEND=1 to send it again (it may then be paid twice)"
            )

    def upload(self, chunk: ChunkInfo) -> str:
        sha, ledger = chunk.sha, self.ledger
        if sha in ledger.uploads:
            return ledger.uploads[sha]
        filename = f"br_{self.step}_{chunk.path.stem}"[:80] + f"_{sha[:16]}.jsonl"
        size = chunk.path.stat().st_size
        intent = ledger.upload_intents.get(sha)

        def find(since: float) -> Any:
            try:
                return find_file(self.client, filename, size, since)
            except Unlistable:
                return None  # an extra upload costs nothing; a duplicate batch would

        found = find(float(intent["at"])) if intent else None
        if found is None:
            ledger.record(
                "upload", phase="intent", sha=sha, chunk=chunk.path.name, filename=filename,
                bytes=size,
            )  # fmt: skip
            started = time.time()
            found = once(
                lambda: self.bare.files.create(
                    file=(filename, chunk.path.read_bytes()), purpose="batch"
                ),
                lambda: find(started),
                f"uploading {chunk.path.name}",
            )
        ledger.record("upload", phase="done", sha=sha, file_id=found.id)
        return found.id

    def create(self, chunk: ChunkInfo, attempt: int) -> str:
        file_id = self.upload(chunk)
        metadata = {
            META_STEP: self.step[:512],
            META_CHUNK: chunk.sha,
            META_ATTEMPT: str(attempt),
            META_MODEL: chunk.model[:512],
            META_TOKENS: str(chunk.tokens),
            "br_chunk": chunk.path.name[:512],
        }
        self.ledger.record(
            "create",
            phase="intent",
            sha=chunk.sha,
            attempt=attempt,
            chunk=chunk.path.name,
            file_id=file_id,
            metadata=metadata,
        )
        started = time.time()
        self.index.put(chunk.sha, attempt, None, intent_at=started)

        def find() -> Any:
            try:
                return find_batch(self.client, chunk.sha, attempt, started, file_id)
            except Unlistable:
                raise UserError(
                    f"{chunk.path.name}: the batch create sent at {when(started)} got no answer, "
                    "and this server cannot list batches to check; rerun make: it will stop with "
                    "the ways forward"
                )

        import openai

        try:
            batch = once(
                lambda: self.bare.batches.create(
                    input_file_id=file_id,
                    endpoint=chunk.endpoint,  # type: ignore[arg-type]
                    completion_window="24h",
                    metadata=metadata,
                ),
                find,
                f"creating the batch for {chunk.path.name}",
            )
        except openai.BadRequestError as e:
            self.ledger.record(
                "create", phase="refused", sha=chunk.sha, attempt=attempt, error=str(e)[:500]
            )
            self.index.put(chunk.sha, attempt, None)
            raise UserError(f"the API refused the batch for {chunk.path.name}: {e.message}")
        if not batch.metadata and not self.warned_metadata:
            note(
                "warning: this server does not echo batch metadata back; recovery after a crash "
                "rests on the ledger alone (build/.../ledger.jsonl: keep it)"
            )
            self.warned_metadata = True
        self.created.add(batch.id)
        return self.adopted(chunk, attempt, batch.id, "created")
