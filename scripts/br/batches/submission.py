"""Exactly once: which batch holds a chunk, and the upload and create of each, paid for once.

A chunk identity is the sha256 of its input file and the attempt number; every batch is
labelled with it (provider.Label), so a rerun recognises its own. For each, in this order:
1. the step's ledger (ledger.py) names a batch made for it that did not fail: it is ours, no
   call;
2. an id file (batch_NNN.id) naming a batch the ledger does not know, written by hand (or by a
   run before the ledger existed): checked with one retrieve, adopted unless it failed;
3. under the chunk's machine-wide lock, the machine's index (machine.py) names one: adopted
   after one retrieve;
4. a create was sent without an answer (a `kill -9`, a dropped connection; the ledger, or the
   machine's index once build/ is gone, holds its moment): the batch list is read back to that
   moment only, matching the input file id or the label, and what it finds is adopted;
5. nothing on this machine knows of a create (build/ and the machine state deleted, or another
   machine): a provider that sets `recall` (Anthropic, Gemini) has its list read once per run
   for an earlier run's batch of this chunk (recall.py), which is adopted; a running one that
   cannot be told apart stops the run with the two ways forward below (OpenAI's list is not
   read: a duplicate is cancelled on the first poll, below);
6. otherwise the chunk is uploaded (the same way: the ledger, then the file list back to an
   unanswered upload) and its batch created, each intent fsynced to the ledger first. Both go
   out without the SDK's retries (`once`): after an unclear failure (5xx, dropped connection)
   the list is checked before trying again, so a lost answer never becomes a second paid
   batch; a 429 is retried after its retry-after (the rate limiter refuses before anything is
   made).

So the calls per chunk on the happy path are constant, whatever the account holds: one upload,
one create, its polls, its downloads.

Across machines, where no lock reaches, the first poll's page of the batch list shows two live
batches of one chunk (`duplicates`): the newer is cancelled and the older kept (what the newer
finished within that poll interval is paid for); the run whose batch was cancelled adopts the
one kept, and its token reservation goes.

A server that cannot list batches or files (404, 405, 501) is worked with from the ledger
alone; where a create's outcome is unknown there, the run stops with one line naming the chunk
and the time of the create, and the two ways forward: write the batch id you find into the
chunk's id file and rerun (a hand-written id is checked and adopted), or rerun with RESEND=1 to
send it again (paid twice, maybe). A server that does not echo the label back gets one
warning: recovery then rests on the ledger alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from br.batches.chunk import ChunkInfo
from br.batches.ledger import Ledger
from br.batches.machine import ChunkIndex
from br.batches.polling import interval
from br.batches.provider import (
    GONE,
    TERMINAL,
    Batch,
    Label,
    NotFound,
    Provider,
    Refused,
    Unlistable,
)
from br.batches.recall import SLACK, Ambiguous, Recall, ambiguous, batches_since, when
from br.cli import UserError, note

T = TypeVar("T")


# --------------------------------------------------------------------------- the list, bounded


def find_batch(
    provider: Provider,
    sha: str,
    attempt: int,
    since: float,
    file_id: str | None,
    known: frozenset[str] = frozenset(),
) -> Batch | None:
    """A batch of this identity made since `since` that did not fail, or None."""
    if not getattr(provider, "labels", True):
        return find_by_results(provider, since, file_id, known)
    for batch in batches_since(provider, since):
        ours = (file_id and batch.input_file_id == file_id) or batch.key == (sha, attempt)
        if ours and batch.status != "failed":
            return batch
    return None


def find_by_results(
    provider: Provider, since: float, file_id: str | None, known: frozenset[str]
) -> Batch | None:
    """For a provider whose batches carry no label (Anthropic): the batch made since `since`,
    not one the ledger knows, whose results hold exactly the requests of `file_id`
    (provider.holds). A candidate still running cannot be told yet: wait for it to end,
    sending nothing meanwhile (a second batch might pay twice). Unlistable when the server
    cannot say (its results are gone): the caller stops with the two ways forward."""
    while True:
        pending = []
        for batch in batches_since(provider, since):
            if batch.id in known or batch.status == "failed":
                continue
            try:
                held = provider.holds(batch, file_id)  # type: ignore[attr-defined]
            except NotFound:
                raise Unlistable(f"the results of {batch.id} cannot be read to tell") from None
            if held:
                return batch
            if held is None:
                pending.append(batch.id)
        if not pending:
            return None
        note(
            f"a create sent at {when(since)} got no answer; {', '.join(pending[:3])} may be its "
            "batch: waiting for it to end to read its results (nothing is sent meanwhile)"
        )
        time.sleep(interval(time.time() - since))


def find_upload(provider: Provider, filename: str, size: int, since: float) -> str | None:
    """The file id of an upload of these bytes made since `since`, or None (also when the
    server cannot list files: an extra upload costs nothing; a duplicate batch would)."""
    try:
        for f in provider.uploads():
            if f.created_at < since - SLACK:
                return None
            if f.filename == filename and f.bytes == size and f.usable:
                return f.id
    except Unlistable:
        return None
    return None


def once(provider: Provider, create: Callable[[], T], find: Callable[[], T | None], what: str) -> T:
    """Call `create` until it succeeds, checking with `find` after every unclear failure."""
    delay, tries = 1.0, 8
    for n in range(tries):
        try:
            return create()
        except Exception as e:
            trouble = provider.trouble(e)
            if trouble is None:
                raise
            tried = f"({n + 1}/{tries})"
            if not trouble.unclear:  # refused before anything was made: just try again
                note(f"{what}: rate limited, trying again {tried}")
                time.sleep(trouble.retry_after or delay)
            else:
                note(f"{what}: {type(e).__name__}, checking whether it went through {tried}")
                time.sleep(trouble.retry_after or delay)
                found = find()
                if found is not None:
                    return found
        delay = min(delay * 2, 30)
    raise UserError(f"{what} kept failing after {tries} tries; rerun make later to resume")


# --------------------------------------------------------------------------- exactly once


class Submitter:
    """Finds, adopts or creates the batch of each chunk identity, exactly once."""

    def __init__(self, provider: Provider, ledger: Ledger, step: str, resend: bool = False) -> None:
        self.provider, self.ledger, self.step, self.resend = provider, ledger, step, resend
        # Noted with each create in the ledger: whose API holds the batch.
        name = getattr(provider, "name", None)
        self.noted: dict[str, str] = {"provider": name} if name else {}
        self._index: ChunkIndex | None = None
        self._recall: Recall | None = None
        self.warned_labels = False
        self.created: set[str] = set()  # batch ids this process created

    @property
    def index(self) -> ChunkIndex:
        if self._index is None:  # the provider's URL: asked only when a batch is looked for
            self._index = ChunkIndex(self.provider.where)
        return self._index

    def retrieve(self, batch_id: str, named_by: object) -> Batch:
        """A batch a file of ours names; one line when the server does not have it."""
        try:
            return self.provider.retrieve(batch_id)
        except NotFound:
            raise UserError(
                f"{named_by} names {batch_id}, which this server does not have (another "
                "OPENAI_BASE_URL or account?); point at the right one, or delete the file to "
                "send the chunk again"
            )

    def known(self, chunk: ChunkInfo, attempt: int, id_file: Path | None) -> str | None:
        """The batch this identity has already, asking the server only about an id file
        written by hand (checked, and adopted unless it failed); None: not submitted yet."""
        by_hand = self.hand_written(id_file)
        if by_hand and self.retrieve(by_hand, id_file).status != "failed":
            self.adopted(chunk, attempt, by_hand, "id file")
        return self.ledger.live(chunk.sha, attempt)

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
            elif not self.resend:
                batch = self.recall(chunk, attempt, id_file)
                if batch is not None:
                    return self.adopted(chunk, attempt, batch.id, "recalled")
            return self.create(chunk, attempt)

    def recall(self, chunk: ChunkInfo, attempt: int, id_file: Path | None) -> Batch | None:
        """A batch of this identity made by a run this machine has no record of (recall.py)."""
        if self._recall is None:
            self._recall = Recall(self.provider, self.index.batches)
        if not self._recall.horizon:
            return None
        try:
            known = frozenset(self.ledger.chunk_of)
            return self._recall.find(chunk, attempt, self.file_id(chunk), known)
        except Ambiguous as e:
            raise UserError(ambiguous(chunk, e.batch, id_file or "the chunk's id file")) from None

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
        try:
            return self.provider.retrieve(batch_id).status != "failed"
        except NotFound:
            return False

    def adopted(self, chunk: ChunkInfo, attempt: int, batch_id: str, how: str) -> str:
        if batch_id not in self.ledger.chunk_of:
            self.ledger.record(
                "create", phase="done", sha=chunk.sha, attempt=attempt, batch_id=batch_id,
                chunk=chunk.path.name, how=how, durable=False, **self.noted,
            )  # fmt: skip
        self.index.put(chunk.sha, attempt, batch_id)
        return batch_id

    def resolve(
        self, chunk: ChunkInfo, attempt: int, since: float, id_file: Path | None
    ) -> Batch | None:
        """A create we sent without hearing back: find it in the list back to its time."""
        if self.resend:
            self.ledger.record("resend", sha=chunk.sha, attempt=attempt)
            return None
        try:
            return find_batch(
                self.provider, chunk.sha, attempt, since, self.file_id(chunk), self.ours()
            )
        except Unlistable:
            where = id_file or f"the id file of {chunk.path.name}"
            raise UserError(
                f"{chunk.path.name}: a batch create sent at {when(since)} got no answer, and this "
                f"server cannot list batches to say whether it went through; either write the "
                f"batch id (see the server's dashboard) into {where} and rerun, or rerun with "
                "RESEND=1 to send it again (it may then be paid twice)"
            )

    def ours(self) -> frozenset[str]:
        """The batches the ledger and the machine's index know: none of them is an unanswered
        create's (after build/ was deleted, an earlier attempt's batch, whose requests a retry
        may repeat exactly, is known to the index only)."""
        return frozenset(self.ledger.chunk_of) | self.index.batches()

    def file_id(self, chunk: ChunkInfo) -> str | None:
        """The chunk's uploaded file, as the ledger knows it; a provider without labels
        (Anthropic) keeps its chunks locally, and names one without a call."""
        found = self.ledger.uploads.get(chunk.sha)
        if found is None and not getattr(self.provider, "labels", True):
            found = self.provider.upload(chunk.path, chunk.path.name)
        return found

    def upload(self, chunk: ChunkInfo) -> str:
        sha, ledger = chunk.sha, self.ledger
        if sha in ledger.uploads:
            return ledger.uploads[sha]
        filename = f"br_{self.step}_{chunk.path.stem}"[:80] + f"_{sha[:16]}.jsonl"
        size = chunk.path.stat().st_size
        intent = ledger.upload_intents.get(sha)
        found = find_upload(self.provider, filename, size, float(intent["at"])) if intent else None
        if found is None:
            ledger.record(
                "upload", phase="intent", sha=sha, chunk=chunk.path.name, filename=filename,
                bytes=size,
            )  # fmt: skip
            started = time.time()
            found = once(
                self.provider,
                lambda: self.provider.upload(chunk.path, filename),
                lambda: find_upload(self.provider, filename, size, started),
                f"uploading {chunk.path.name}",
            )
        ledger.record("upload", phase="done", sha=sha, file_id=found, durable=False)
        return found

    def create(self, chunk: ChunkInfo, attempt: int) -> str:
        file_id = self.upload(chunk)
        label = Label(self.step, chunk.sha, attempt, chunk.model, chunk.tokens, chunk.path.name)
        self.ledger.record(
            "create", phase="intent", sha=chunk.sha, attempt=attempt, chunk=chunk.path.name,
            file_id=file_id, metadata=self.provider.label_fields(label), **self.noted,
        )  # fmt: skip
        started = time.time()
        self.index.put(chunk.sha, attempt, None, intent_at=started)

        def find() -> Batch | None:
            try:
                return find_batch(self.provider, chunk.sha, attempt, started, file_id, self.ours())
            except Unlistable:
                raise UserError(
                    f"{chunk.path.name}: the batch create sent at {when(started)} got no answer, "
                    "and this server cannot list batches to check; rerun make: it will stop with "
                    "the ways forward"
                )

        try:
            batch = once(
                self.provider,
                lambda: self.provider.create(file_id, chunk.endpoint, label),
                find,
                f"creating the batch for {chunk.path.name}",
            )
        except Refused as e:
            self.ledger.record(
                "create", phase="refused", sha=chunk.sha, attempt=attempt, error=str(e)[:500]
            )
            self.index.put(chunk.sha, attempt, None)
            raise UserError(f"the API refused the batch for {chunk.path.name}: {e}")
        if batch.key is None and not self.warned_labels:
            note(
                "warning: this server does not echo batch metadata back; recovery after a crash "
                f"rests on the ledger alone ({self.ledger.path}: keep it)"
            )
            self.warned_labels = True
        self.created.add(batch.id)
        return self.adopted(chunk, attempt, batch.id, "created")

    def duplicates(
        self, chunk: ChunkInfo, attempt: int, mine: str, page: dict[str, Batch]
    ) -> Batch | None:
        """Two live batches for one chunk on a page of the list (runs on two machines): keep
        the older, cancel the newer. The batch the chunk follows now, if not `mine`."""
        kept: Batch | None = None
        for batch in page.values():
            if batch.key != (chunk.sha, attempt) or batch.id == mine or batch.status in GONE:
                continue
            if batch.id in self.ledger.lost or not self.provider.results_kept(batch):
                continue  # its results are gone: the newer one was sent on purpose
            own = page.get(mine)
            if own is not None and own.status in GONE:
                # Ours was cancelled (the other run's duplicate check, or by hand) while another
                # batch holds the same chunk: that one's answers serve, nothing is sent again.
                note(
                    f"{chunk.path.name}: its batch {own.id} was cancelled and {batch.id} holds "
                    f"the same chunk; adopting {batch.id}"
                )
                kept = batch
            else:
                older = own is None or (batch.created_at, batch.id) < (own.created_at, own.id)
                keep = batch if older or own is None else own
                newer, ended = (mine, own) if keep is batch else (batch.id, batch)
                if ended is not None and ended.status in TERMINAL:
                    # The newer ended: it is paid for, and a cancel could only be refused.
                    note(f"{chunk.path.name}: two batches for one chunk ({keep.id}, {newer})")
                else:
                    note(
                        f"{chunk.path.name}: two batches for one chunk ({keep.id}, {newer}); "
                        f"cancelling the newer, {newer}"
                    )
                    with contextlib.suppress(Refused):
                        self.provider.cancel(newer)  # it may have ended meanwhile
                if keep.id == mine:
                    continue
                kept = keep
            mine = self.adopted(chunk, attempt, kept.id, "duplicate kept")
        return kept
