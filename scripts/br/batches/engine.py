"""Send a step's chunks and fetch their results, all in one process: the loop over the chunks'
states (chunk.py), speaking to the provider only through its seam (provider.py).

Every chunk is submitted (within the token budget) before any wait, so a plain `make caption`
keeps the whole queue in flight. The batches are then polled together, each on the schedule
of polling.py: where several are in flight, one page of the batch list serves every batch on
it (more than 100: the pages that hold them, at most one page per 100 chunks of the run, so
the cost follows our own queue, never the account's history); the rest are retrieved one by
one. What an ended batch means for its chunk is ended.py's.

A chunk's batch is found or created exactly once (submission.py). The token budget
(TOKEN_BUDGET, or the config's token_budget per model) counts the estimated input tokens of
every batch in flight on this machine (machine.Budget): a chunk that does not fit waits for
one to end; one that fits is reserved under the budget's lock, then created.

A network failure while polling that outlasts the SDK's retries is tried again, up to PATIENCE
times in a row (a wait can last hours). Ctrl+C during a wait says how to resume (br.cli); the
batches keep running on the server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from br.batches import ended
from br.batches.chunk import Chunk, ChunkInfo, Done, InFlight, Queued, Spill, Stopped, Waiting
from br.batches.ledger import Ledger
from br.batches.machine import Budget, ChunkIndex, ended_on_server
from br.batches.polling import Progress, deadline, interval, next_poll
from br.batches.provider import TERMINAL, Batch, Provider, Unlistable
from br.batches.submission import Submitter
from br.cli import note
from br.config import Config
from br.files import write_text
from br.layout import StepDir

PATIENCE = 10  # failed polls in a row before giving up
# Requests of the run's chunks held in memory (about 100 bytes each): beyond this, a chunk
# queued or in flight lets its requests go to a temporary file (chunk.Spill) until its batch
# ends, so memory stays flat in the number of chunks, and each chunk is still read once.
HOLD = 20_000


class Engine:
    """The chunks of one run, moved from Queued to Done (or Stopped) by small steps."""

    def __init__(
        self,
        step: StepDir,
        config: Config,
        provider: Provider,
        step_name: str,
        retries: int = 3,
        resend: bool = False,
        token_budget: int | None = None,
    ) -> None:
        self.step, self.config, self.provider = step, config, provider
        self.retries, self.resend, self.token_budget = retries, resend, token_budget
        self.ledger = Ledger(step.ledger)
        self.submitter = Submitter(provider, self.ledger, step_name, resend)
        self.chunks: list[Chunk] = []
        self.can_list = True
        self.started = time.time()
        self._ended: Callable[[str], bool] | None = None
        self.spill: Spill | None = None  # requests of chunks in flight beyond HOLD
        self.index: ChunkIndex | None = None  # once a batch was fetched: marked, then swept

    def budget(self, model: str) -> int | None:
        return self.token_budget or self.config.token_budget(model)

    def id_file(self, chunk: Chunk) -> Path | None:
        """batch_NNN.id or retry_NNN_K.id (collecting: none, the ledger names the batch)."""
        return None if chunk.earlier else self.step.attempt_id(chunk.nnn, chunk.attempt)

    # -------------------------------------------------------------- which chunks are where

    def ready(self) -> list[Chunk]:
        """Queued, or Waiting: not submitted at their current attempt."""
        return [c for c in self.chunks if isinstance(c.state, (Queued, Waiting))]

    def in_flight(self) -> list[Chunk]:
        return [c for c in self.chunks if isinstance(c.state, InFlight)]

    def stopped(self) -> list[str]:
        return [c.state.reason for c in self.chunks if isinstance(c.state, Stopped)]

    # -------------------------------------------------------------- moves

    def begin(self, chunks: list[Chunk]) -> None:
        """The run's chunks; each Queued one starts (Done ones were judged fresh, earlier
        batches are in flight already)."""
        self.chunks = chunks
        held = 0  # requests read and kept: queued chunks' too, HOLD at most
        for chunk in chunks:
            if isinstance(chunk.state, Queued):
                self.start(chunk)
            held += chunk.requests
            if held > HOLD and chunk.requests:
                held -= chunk.requests
                self.let_go(chunk)

    def start(self, chunk: Chunk) -> None:
        """Begin (or resume) a chunk at its current attempt: its rows already in answers/, a
        batch it already has (InFlight), or Queued."""
        info = chunk.info
        live = self.submitter.known(info, chunk.attempt, self.id_file(chunk))
        kept = self.step.answers_file(info.sha, chunk.attempt)
        if kept.exists():
            ended.after_rows(self, chunk, ended.rows_in(kept))
        elif live:
            self.fly(chunk, live)
        else:
            chunk.state = Queued()

    def fly(
        self, chunk: Chunk, batch_id: str, batch: Batch | None = None, reserved: bool = False
    ) -> None:
        id_file = self.id_file(chunk)
        if id_file is not None:
            write_text(id_file, batch_id + "\n")
        # Just created (or seen): its state is known, so the first poll waits; adopted: ask now.
        known = batch is not None or batch_id in self.submitter.created
        next_at = time.time() + (interval(0) if known else 0.0)
        chunk.state = InFlight(batch_id, batch, next_at, reserved=reserved)
        if sum(c.requests for c in self.in_flight()) > HOLD:
            self.let_go(chunk)

    def let_go(self, chunk: Chunk) -> None:
        """Its requests wait in the spill file till its batch ends."""
        self.spill = self.spill or Spill()
        chunk.slim(self.spill)

    def drained(self, chunk: Chunk) -> bool:
        """After a token-limit failure: has one of ours in flight ended since?"""
        state = chunk.state
        if not isinstance(state, Waiting) or state.below is None:
            return True
        if state.below == 0:
            return time.time() >= state.until
        model = chunk.info.model
        return sum(c.info.model == model for c in self.in_flight()) < state.below

    def submit_ready(self) -> None:
        """Submit every ready chunk the token budget has room for, in order."""
        full: set[str] = set()
        for chunk in self.ready():
            info = chunk.info
            if info.model in full or not self.drained(chunk):
                continue
            budget = self.budget(info.model)
            if budget is None:
                self.fly(chunk, self.submitter.batch_id(info, chunk.attempt, self.id_file(chunk)))
                continue
            room = Budget(self.provider.where, info.model)
            with room.locked():
                mine = {c.flight.batch_id for c in self.in_flight()}
                count, tokens = room.held(self.ended_on_server, mine)
                if count and tokens + info.tokens > budget:
                    if not any(c.info.model == info.model for c in self.in_flight()):
                        note(
                            f"{info.path.name}: waiting for token budget ({tokens} in flight "
                            f"+ {info.tokens} > {budget} for {info.model})"
                        )
                    full.add(info.model)
                    if isinstance(chunk.state, Queued):
                        chunk.state = Waiting()
                    continue
                batch_id = self.submitter.batch_id(info, chunk.attempt, self.id_file(chunk))
                room.reserve(batch_id, info.tokens)
            self.fly(chunk, batch_id, reserved=True)

    def fetched(self, info: ChunkInfo, attempt: int, batch_id: str) -> None:
        """Its rows are in answers/: the machine's index may forget it (machine.FORGET)."""
        self.index = self.index or ChunkIndex(self.provider.where)
        self.index.fetched(info.sha, attempt, batch_id)

    def ended_on_server(self, batch_id: str) -> bool:
        if self._ended is None:
            self._ended = ended_on_server(self.provider)
        return self._ended(batch_id)

    # -------------------------------------------------------------- polling

    def poll(self) -> None:
        now = time.time()
        flying = self.in_flight()
        due = [c for c in flying if c.flight.next_at <= now]
        if not due:
            return
        page: dict[str, Batch] = {}
        if self.can_list and (len(flying) > 1 or not all(c.flight.listed for c in due)):
            try:
                page = self.listed({c.flight.batch_id for c in due})
            except Unlistable:  # a server without the list: retrieve one by one
                self.can_list = False
            self.deduplicate(flying, page)
        for chunk in flying:
            flight = chunk.flight
            if flight.batch_id in page:
                flight.listed = True
                self.seen(chunk, page[flight.batch_id])
            elif chunk in due:
                self.seen(chunk, self.submitter.retrieve(flight.batch_id, self.step.ledger))

    def listed(self, due: set[str]) -> dict[str, Batch]:
        """The batch list, newest first, page by page while a page saves more than one status
        call (two due batches not seen yet), up to one page per 100 chunks of this run. A due
        batch not on the pages read is retrieved on its own."""
        listed: dict[str, Batch] = {}
        pages = self.provider.pages()
        for _, page in zip(range(math.ceil(len(self.chunks) / 100)), pages, strict=False):
            listed.update((b.id, b) for b in page)
            if len(due - listed.keys()) < 2:
                break
        return listed

    def deduplicate(self, flying: list[Chunk], page: dict[str, Batch]) -> None:
        """A chunk whose batch has a live twin on the page follows the one kept
        (submission.Submitter.duplicates decides which)."""
        for chunk in flying:
            if chunk.earlier:
                continue
            flight = chunk.flight
            kept = self.submitter.duplicates(chunk.info, chunk.attempt, flight.batch_id, page)
            if kept is None:
                continue
            if flight.reserved:
                Budget(self.provider.where, chunk.info.model).release(flight.batch_id)
            self.fly(chunk, kept.id, kept)

    def seen(self, chunk: Chunk, batch: Batch) -> None:
        """A poll's answer: reschedule the chunk, give it up, or (ended) move it on."""
        flight = chunk.flight
        flight.batch = batch
        now = time.time()
        if batch.status not in TERMINAL:
            if not flight.reserved and not chunk.earlier and self.budget(chunk.info.model):
                # Adopted in flight (a resumed run): its tokens count against the budget too.
                Budget(self.provider.where, chunk.info.model).reserve(batch.id, chunk.info.tokens)
                flight.reserved = True
            if now > deadline(batch):
                chunk.state = Stopped(
                    f"batch {batch.id} ({chunk.info.path.name}) is still {batch.status} past its "
                    "24-hour window: the server may have lost it; cancel it (make cancel "
                    "STEP=...) and rerun to send its requests again, or check it with make check "
                    "BATCH=" + batch.id
                )
                return
            flight.next_at = now + next_poll(batch, now, flight.done_seen)
            counts = batch.request_counts
            flight.done_seen = counts.completed + counts.failed if counts else -1
            return
        if self.ledger.ended.get(batch.id) != batch.status:
            self.ledger.record("ended", batch_id=batch.id, status=batch.status, durable=False)
        if not chunk.earlier:
            Budget(self.provider.where, chunk.info.model).release(batch.id)
        flight.reserved = False
        ended.ended(self, chunk, batch)

    # -------------------------------------------------------------- the loop

    def run(self) -> list[str]:
        """Until every chunk is Done or Stopped; the Stopped ones' reasons."""
        progress = Progress(self.step.root.name, len(self.chunks)) if self.chunks else None
        stalls = 0
        try:
            while True:
                self.submit_ready()
                if not self.in_flight() and not self.ready():
                    break
                before = len(self.in_flight())
                try:
                    self.poll()
                    stalls = 0
                except Exception as e:  # a network blip that outlasts the SDK's retries
                    stalls += 1
                    if self.provider.trouble(e) is None or stalls >= PATIENCE:
                        raise
                    note(f"{self.step.root.name}: {type(e).__name__} while polling; trying again")
                    time.sleep(min(2.0**stalls, 60.0))
                if progress:
                    self.report(progress)
                if not self.in_flight() and not self.ready():
                    break  # the last batch ended at this poll: nothing to wait for
                if self.ready() and len(self.in_flight()) < before:
                    continue  # a batch ended: its budget is free, submit before sleeping
                waits = [c.flight.next_at for c in self.in_flight()]
                waits += [
                    c.state.until
                    for c in self.ready()
                    if isinstance(c.state, Waiting) and c.state.below is not None
                ]
                pause = min(waits, default=time.time() + interval(0)) - time.time()
                if pause > 0:
                    time.sleep(pause)
        finally:
            if progress:
                self.report(progress)
                progress.close()
        if self.index is not None:
            self.index.sweep()  # at most once a day: entries fetched long ago are forgotten
        return self.stopped()

    def report(self, progress: Progress) -> None:
        flying = self.in_flight()
        counts = [c.flight.batch.request_counts for c in flying if c.flight.batch]
        ends = [n for n in counts if n is not None]
        progress.update(
            chunks_done=sum(isinstance(c.state, Done) for c in self.chunks),
            stopped=len(self.stopped()),
            flight=len(flying),
            queued=len(self.ready()),
            requests=(sum(n.completed + n.failed for n in ends), sum(n.total for n in ends)),
        )
