"""Send a step's chunks and fetch their results, all in one process:
chunk_NNN.jsonl -> batch_NNN.id -> results_NNN.jsonl, and results.list naming them.

Every chunk is submitted (within the token budget) before any wait, so a plain `make caption`
keeps the whole queue in flight. The batches are then polled together: one page of the batch
list serves every batch on it (the rest are retrieved one by one), each on the schedule of
polling.py. An ended batch's output and error files are matched to its requests by custom_id;
the rows of each attempt go to answers/ at once (keyed by the hash of what was sent), retryable
failures (429, 5xx, expired or cancelled before they ran; one of unknown cause once) go again
in follow-up batches, retry_NNN_K.jsonl / .id, up to --retries, and results_NNN.jsonl is
written when its chunk has a final outcome for every request. A batch that failed on the
enqueued-token limit is recreated once others of ours drain; one that failed validation, was
cancelled outside the run, or never ends stops its chunk with one line (the others go on, and
the exit status says so). Uploads and creates are exactly once (submission.py).

A chunk whose results file is newer than the chunk (and its id file) is done: a rerun sends and
asks nothing for it. results.list is rewritten only when a results file changed.

--collect, run before a re-split (a changed input or prompt): every batch in the step's ledger
that was never fetched is waited for and its rows put in answers/, so the split sends only the
requests no earlier batch holds. No paid batch is abandoned.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, note

# isort: split

import argparse
import contextlib
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from br.answers.outcomes import TERMINAL, UNKNOWN, collect
from br.batches.account import acknowledge
from br.batches.client import make_client
from br.batches.ledger import Ledger
from br.batches.machine import Budget, ended_on_server
from br.batches.polling import Progress, deadline, interval, next_poll
from br.batches.submission import (
    META_ATTEMPT,
    META_CHUNK,
    ChunkInfo,
    Submitter,
    Unlistable,
    chunk_info,
)
from br.config import load_config
from br.files import move_aside, sha256_file, write_jsonl, write_text
from br.prompts.images.identity import request_hash
from br.records import iter_jsonl

PATIENCE = 10  # failed polls in a row before giving up (a wait can last hours)
GONE = {"failed", "cancelled", "cancelling", "expired"}  # not a batch to keep for a chunk


@dataclass
class Job:
    """One chunk (or, collecting, one earlier batch) on its way to a final outcome."""

    nnn: str
    chunk: Path
    attempt: int = 0
    path: Path = Path()  # the file of the current attempt: the chunk or retry_NNN_K.jsonl
    info: ChunkInfo | None = None
    batch_id: str | None = None
    batch: Any = None
    next_at: float = 0.0
    checked: bool = False  # looked for a duplicate of its batch on a list page
    tried_unknown: dict[str, int] = field(default_factory=dict)
    drain_below: int | None = None  # failed on the token limit: wait till fewer are in flight
    lonely: int = 0  # token-limit failures with nothing of ours in flight
    orphan: bool = False  # --collect: only its rows matter
    reserved: bool = False  # its tokens are reserved in the machine's budget
    done_seen: int = -1  # requests ended at the last poll (polling.next_poll)
    error: str | None = None
    done: bool = False

    def id_file(self, out: Path) -> Path:
        if self.orphan:
            return Path()
        if self.attempt == 0:
            return out / f"batch_{self.nnn}.id"
        return out / f"retry_{self.nnn}_{self.attempt}.id"


class Engine:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.dir
        self.answers: Path = args.dir / "answers"
        self.config = load_config(args.config)
        self.ledger = Ledger(self.out / "ledger.jsonl")
        self._client: Any = None
        self._submitter: Submitter | None = None
        self.jobs: list[Job] = []
        self.can_list = True
        self.errors: list[str] = []
        self.started = time.time()

    # -------------------------------------------------------------- set-up, lazily

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.config)
        return self._client

    @property
    def submitter(self) -> Submitter:
        if self._submitter is None:
            self._submitter = Submitter(self.client, self.ledger, self.args.step, self.args.resend)
        return self._submitter

    def budget(self, model: str) -> int | None:
        return self.args.token_budget or self.config.token_budget(model)

    # -------------------------------------------------------------- the queue

    def start(self, job: Job) -> None:
        """Begin (or resume) a job at its current attempt."""
        job.path = job.chunk if job.attempt == 0 else self.retry_path(job)
        job.info = chunk_info(job.path)
        job.batch_id, job.batch, job.checked = None, None, False
        self.adopt_id_file(job)
        cached = self.answers_path(job.path, job.attempt)
        if cached.exists():
            self.after_rows(job, {r["custom_id"]: r for r in iter_jsonl(cached)})
            return
        live = self.ledger.live(job.info.sha, job.attempt)
        if live:
            self.fly(job, live)

    def adopt_id_file(self, job: Job) -> None:
        """An id file naming a batch the ledger does not know: written by hand (or by a run
        before the ledger existed). It is checked, and adopted unless it failed."""
        path = job.id_file(self.out)
        if not path.exists() or job.info is None:
            return
        batch_id = path.read_text(encoding="utf-8", errors="replace").strip()
        unknown = batch_id and batch_id not in self.ledger.chunk_of
        if unknown and self.retrieve(batch_id, str(path)).status != "failed":
            self.submitter.adopted(job.info, job.attempt, batch_id, "id file")

    def retry_path(self, job: Job) -> Path:
        return self.out / f"retry_{job.nnn}_{job.attempt}.jsonl"

    def answers_path(self, path: Path, attempt: int) -> Path:
        """Where the rows of a batch are kept: keyed by its identity, the sha256 of the file
        sent and the attempt (a retry of every request has the chunk's own bytes)."""
        return self.answers / f"{sha256_file(path)[:32]}-{attempt}.jsonl"

    def queued(self) -> list[Job]:
        return [j for j in self.jobs if not j.done and j.error is None and j.batch_id is None]

    def flying(self) -> list[Job]:
        return [j for j in self.jobs if not j.done and j.error is None and j.batch_id]

    def submit_queued(self) -> None:
        """Submit every queued chunk the token budget has room for, in order."""
        full: set[str] = set()
        for job in self.queued():
            assert job.info is not None
            if job.info.model in full or not self.drained(job):
                continue
            budget = self.budget(job.info.model)
            if budget is None:
                self.fly(job, self.submitter.batch_id(job.info, job.attempt, job.id_file(self.out)))
                continue
            room = Budget(str(self.client.base_url), job.info.model)
            with room.locked():
                mine = {j.batch_id for j in self.flying() if j.batch_id}
                count, tokens = room.held(ended_on_server(self.client), mine)
                if count and tokens + job.info.tokens > budget:
                    if not any(j.info and j.info.model == job.info.model for j in self.flying()):
                        note(
                            f"{job.info.path.name}: waiting for token budget ({tokens} in flight "
                            f"+ {job.info.tokens} > {budget} for {job.info.model})"
                        )
                    full.add(job.info.model)
                    continue
                batch_id = self.submitter.batch_id(job.info, job.attempt, job.id_file(self.out))
                room.reserve(batch_id, job.info.tokens)
            job.reserved = True
            self.fly(job, batch_id)

    def drained(self, job: Job) -> bool:
        """After a token-limit failure: has one of ours in flight ended since?"""
        if job.drain_below is None:
            return True
        if job.drain_below == 0:
            return time.time() >= job.next_at
        return sum(1 for j in self.flying() if j.info and j.info.model == job.info.model) < (  # type: ignore[union-attr]
            job.drain_below
        )

    def fly(self, job: Job, batch_id: str, batch: Any = None) -> None:
        job.batch_id, job.batch, job.drain_below = batch_id, batch, None
        if not job.orphan:
            write_text(job.id_file(self.out), batch_id + "\n")
        # Just created (or seen): its state is known, so the first poll waits; adopted: ask now.
        known = batch is not None or (self._submitter and batch_id in self._submitter.created)
        job.next_at = time.time() + (interval(0) if known else 0.0)

    # -------------------------------------------------------------- polling

    def poll(self) -> None:
        now = time.time()
        flying = self.flying()
        due = [j for j in flying if j.next_at <= now]
        if not due:
            return
        page: dict[str, Any] = {}
        if self.can_list and (len(flying) > 1 or not all(j.checked for j in due)):
            try:
                page = self.listed({j.batch_id for j in due})
            except Exception as e:  # a server without the list: retrieve one by one
                if getattr(e, "status_code", None) not in (404, 405, 501):
                    raise
                self.can_list = False
            self.deduplicate(flying, page)
        for job in flying:
            if job.batch_id in page:
                job.checked = True
                self.seen(job, page[job.batch_id])
            elif job in due:
                self.seen(job, self.retrieve(job.batch_id or ""))

    def listed(self, due: set[str | None]) -> dict[str, Any]:
        """The batch list, newest first, page by page while a page saves more than one status
        call (two due batches not seen yet), up to one page per 100 chunks of this run: the
        cost follows our own queue, never the account's history. A due batch not on the pages
        read is retrieved on its own."""
        listed: dict[str, Any] = {}
        pages = self.client.batches.list(limit=100).iter_pages()
        for _, page in zip(range(math.ceil(len(self.jobs) / 100)), pages, strict=False):
            listed.update((b.id, b) for b in page.data)
            if len(due - listed.keys()) < 2:
                break
        return listed

    def retrieve(self, batch_id: str, named_by: str = "") -> Any:
        import openai

        try:
            return self.client.batches.retrieve(batch_id)
        except openai.NotFoundError:
            where = named_by or f"{self.out / 'ledger.jsonl'}"
            raise UserError(
                f"{where} names {batch_id}, which this server does not have (another "
                "OPENAI_BASE_URL or account?); point at the right one, or delete the file to "
                "send the chunk again"
            )

    def deduplicate(self, flying: list[Job], page: dict[str, Any]) -> None:
        """Two live batches for one chunk (runs on two machines): keep the older, cancel the
        newer. It has run for at most one poll interval; what it finished by then is paid."""
        by_key = {
            (j.info.sha, str(j.attempt)): j for j in flying if j.info is not None and not j.orphan
        }
        for batch in page.values():
            meta = batch.metadata or {}
            job = by_key.get((meta.get(META_CHUNK), meta.get(META_ATTEMPT, "0")))
            if job is None or batch.id == job.batch_id or batch.status in GONE:
                continue
            if batch.id in self.ledger.lost or not self.has_results(batch):
                continue  # its results are gone: the newer one was sent on purpose
            mine = page.get(job.batch_id or "")
            if mine is not None and mine.status in GONE:
                # Ours was cancelled (the other run's duplicate check, or by hand) while another
                # batch holds the same chunk: that one's answers serve, nothing is sent again.
                note(
                    f"{job.path.name}: its batch {mine.id} was cancelled and {batch.id} holds the "
                    f"same chunk; adopting {batch.id}"
                )
                self.switch(job, batch)
                continue
            if mine is None or (batch.created_at, batch.id) < (mine.created_at, mine.id):
                newer, keep = job.batch_id, batch
            else:
                newer, keep = batch.id, mine
            note(
                f"{job.path.name}: two batches for one chunk ({keep.id}, {newer}); "
                f"cancelling the newer, {newer}"
            )
            import openai

            with contextlib.suppress(openai.BadRequestError, openai.ConflictError):
                self.client.batches.cancel(newer)  # it may have ended meanwhile
            if keep.id != job.batch_id:
                self.switch(job, keep)

    def has_results(self, batch: Any) -> bool:
        """An ended batch still holds its answers on the server (make tidy, or 30 days, may
        have deleted them; then it cannot stand in for a live one). One call, asked only
        where a duplicate is found."""
        if batch.status not in TERMINAL or not batch.output_file_id:
            return True
        import openai

        try:
            self.client.files.retrieve(batch.output_file_id)
        except openai.NotFoundError:
            return False
        return True

    def switch(self, job: Job, keep: Any) -> None:
        """The job follows another batch of its chunk; its own batch's reservation goes."""
        assert job.info is not None
        if job.reserved and job.batch_id:
            Budget(str(self.client.base_url), job.info.model).release(job.batch_id)
            job.reserved = False
        self.submitter.adopted(job.info, job.attempt, keep.id, "duplicate kept")
        self.fly(job, keep.id, keep)

    def seen(self, job: Job, batch: Any) -> None:
        job.batch = batch
        now = time.time()
        if batch.status not in TERMINAL:
            if not job.reserved and job.info and self.budget(job.info.model):
                # Adopted in flight (a resumed run): its tokens count against the budget too.
                Budget(str(self.client.base_url), job.info.model).reserve(batch.id, job.info.tokens)
                job.reserved = True
            if now > deadline(batch):
                job.error = (
                    f"batch {batch.id} ({job.path.name}) is still {batch.status} past its 24-hour "
                    "window: the server may have lost it; cancel it (make cancel STEP=...) and "
                    "rerun to send its requests again, or check it with make check BATCH="
                    + batch.id
                )
                return
            job.next_at = now + next_poll(batch, now, job.done_seen)
            counts = batch.request_counts
            job.done_seen = (counts.completed or 0) + (counts.failed or 0) if counts else -1
            return
        if self.ledger.ended.get(batch.id) != batch.status:
            self.ledger.record("ended", batch_id=batch.id, status=batch.status)
        if job.info is not None:
            Budget(str(self.client.base_url), job.info.model).release(batch.id)
            job.reserved = False
        if batch.status == "failed":
            self.failed(job, batch)
        elif batch.status == "cancelled" and not self.acknowledged(job, batch):
            return
        else:
            self.finished(job, batch)

    def failed(self, job: Job, batch: Any) -> None:
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        if not any(e.code == "token_limit_exceeded" for e in errors) or job.orphan:
            shown = "; ".join(
                f"{'line ' + str(e.line) + ': ' if e.line is not None else ''}{e.code}: {e.message}"
                for e in errors[:10]
            )
            more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
            if not job.orphan and job.id_file(self.out).exists():
                move_aside(job.id_file(self.out))  # so a rerun, after a fix, sends afresh
            job.error = (
                f"batch {batch.id} for {job.path.name} failed validation: "
                f"{shown or 'no reason given'}{more}; fix the input or config and rerun make"
            )
            return
        assert job.info is not None
        others = sum(
            1 for j in self.flying() if j is not job and j.info and j.info.model == job.info.model
        )
        if others == 0:
            job.lonely += 1
            if job.lonely > 3:
                job.error = (
                    f"{job.path.name} (~{job.info.tokens} tokens) keeps failing on the enqueued-"
                    "token limit with nothing else of ours in flight; lower MAX_REQUESTS so chunks "
                    "are smaller, or wait for other batches on the account, then rerun make"
                )
                return
        note(f"{job.path.name}: enqueued-token limit reached; resubmitting once {others} drain")
        job.batch_id, job.batch = None, None
        job.drain_below = others
        job.next_at = time.time() + interval(time.time() - batch.created_at)

    def acknowledged(self, job: Job, batch: Any) -> bool:
        """A batch cancelled outside the run stops its chunk once; the rerun sends the rest.
        `make cancel` writes the same acknowledgement: a run started after it sends the rest,
        a run already going when it came stops the chunk (the user meant to stop spending)."""
        if job.orphan:
            return True
        ack = self.out / f"batch_{job.nnn}.cancelled"
        told = ack.read_text().split() if ack.exists() else []
        if batch.id in told and ack.stat().st_mtime < self.started:
            return True
        acknowledge(self.out, job.nnn, batch.id)
        counts = batch.request_counts
        done = counts.completed if counts else 0
        total = counts.total if counts else 0
        gone = "" if batch.output_file_id or batch.error_file_id else " and left no output file"
        job.error = (
            f"batch {batch.id} ({job.path.name}) was cancelled outside this run with {done} of "
            f"{total} request(s) done{gone}; rerun make to send the rest again"
        )
        return False

    def finished(self, job: Job, batch: Any) -> None:
        import openai

        hashes = {r["custom_id"]: request_hash(r) for r in iter_jsonl(job.path)}
        try:
            rows = collect(self.client, batch, set(hashes), job.attempt, job.tried_unknown)
        except openai.NotFoundError:
            self.lost(job, batch)
            return
        if batch.status == "cancelled" and not (batch.output_file_id or batch.error_file_id):
            note(
                f"{job.path.name}: cancelled batch {batch.id} left no output file; its requests "
                "will be sent again"
            )
        kept = [{"custom_id": cid, "hash": sha, **rows[cid]} for cid, sha in hashes.items()]
        write_jsonl(self.answers_path(job.path, job.attempt), kept)
        self.ledger.record("fetched", batch_id=batch.id)
        self.after_rows(job, {r["custom_id"]: r for r in kept})

    def lost(self, job: Job, batch: Any) -> None:
        """An ended batch whose output is gone from the server (make tidy, or 30 days after it
        ended) and whose rows are not in answers/ (build/ deleted since): paid, and lost."""
        if not self.args.resend or job.orphan:
            job.error = (
                f"{job.path.name}: the results of batch {batch.id} are gone from the server (its "
                "files were deleted, by make tidy or 30 days after it ended) and are not in "
                "answers/; rerun with RESEND=1 to send its requests again (paid again)"
            )
            return
        note(f"{job.path.name}: the results of batch {batch.id} are gone; sending it again")
        self.ledger.record("lost", batch_id=batch.id)
        self.start(job)

    def after_rows(self, job: Job, rows: dict[str, dict[str, Any]]) -> None:
        """The rows of one attempt are in answers/: retry what may succeed, or finish."""
        if job.orphan:
            job.done = True
            return
        for cid, row in rows.items():
            if row["error"] and row["error"]["code"] == UNKNOWN:
                job.tried_unknown[cid] = job.tried_unknown.get(cid, 0) + 1
        again = {c for c, r in rows.items() if r["outcome"] != "succeeded" and r["retryable"]}
        if again and job.attempt < self.args.retries:
            job.attempt += 1
            retry = self.retry_path(job)
            write_jsonl(retry, (r for r in iter_jsonl(job.chunk) if r["custom_id"] in again))
            note(f"{retry.name}: retrying {len(again)} request(s), attempt {job.attempt + 1}")
            self.start(job)
            return
        self.finalise(job, rows)

    def finalise(self, job: Job, last: dict[str, dict[str, Any]]) -> None:
        """results_NNN.jsonl: for each request, its row from the last attempt that sent it
        (with one attempt, the rows just fetched, in the chunk's order: nothing read again)."""
        if job.attempt == 0:
            rows = list(last.values())
        else:
            final: dict[str, dict[str, Any]] = {}
            for k in range(job.attempt + 1):
                path = job.chunk if k == 0 else self.out / f"retry_{job.nnn}_{k}.jsonl"
                final.update({r["custom_id"]: r for r in iter_jsonl(self.answers_path(path, k))})
            rows = [final[r["custom_id"]] for r in iter_jsonl(job.chunk)]
        first = self.answers_path(job.chunk, 0) if job.attempt == 0 else None
        write_results(rows, self.out / f"results_{job.nnn}.jsonl", first)
        bad = sum(r["outcome"] != "succeeded" for r in rows)
        note(f"{self.out / f'results_{job.nnn}.jsonl'}: {len(rows) - bad} succeeded, {bad} failed")
        job.done = True

    # -------------------------------------------------------------- the loop

    def run(self) -> None:
        progress = Progress(self.out.name, len(self.jobs)) if self.jobs else None
        stalls = 0
        try:
            while True:
                self.submit_queued()
                if not self.flying() and not self.queued():
                    break
                before = len(self.flying())
                try:
                    self.poll()
                    stalls = 0
                except Exception as e:  # a network blip that outlasts the SDK's retries
                    stalls += 1
                    if not transient(e) or stalls >= PATIENCE:
                        raise
                    note(f"{self.out.name}: {type(e).__name__} while polling; trying again")
                    time.sleep(min(2.0**stalls, 60.0))
                if progress:
                    self.report(progress)
                if self.queued() and len(self.flying()) < before:
                    continue  # a batch ended: its budget is free, submit before sleeping
                waits = [j.next_at for j in self.flying()]
                waits += [j.next_at for j in self.queued() if j.drain_below is not None]
                pause = min(waits, default=time.time() + interval(0)) - time.time()
                if pause > 0:
                    time.sleep(pause)
        finally:
            if progress:
                self.report(progress)
                progress.close()
        self.errors = [j.error for j in self.jobs if j.error]

    def report(self, progress: Progress) -> None:
        flying = self.flying()
        counts = [
            j.batch.request_counts for j in flying if getattr(j.batch, "request_counts", None)
        ]
        progress.update(
            chunks_done=sum(j.done for j in self.jobs),
            stopped=sum(j.error is not None for j in self.jobs),
            flight=len(flying),
            queued=len(self.queued()),
            requests=(sum(c.completed + c.failed for c in counts), sum(c.total for c in counts)),
        )


def transient(e: Exception) -> bool:
    import openai

    return isinstance(
        e, (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError)
    )


def write_results(rows: list[dict[str, Any]], results: Path, same: Path | None) -> None:
    """results_NNN.jsonl, built from answers/ (every attempt's rows are there first, so a crash
    before this leaves the results file missing and the rerun rebuilds it without a call). A
    chunk sent once has exactly its first attempt's rows: a hard link, not a second copy."""
    tmp = results.parent / f".{results.name}.{os.getpid()}.tmp"
    try:
        if same is None:
            raise OSError
        os.link(same, tmp)
    except OSError:
        write_jsonl(tmp, rows)
    os.utime(tmp)  # the answers may be older, identical bytes: make must see a fresh target
    os.replace(tmp, results)


def chunk_ids(manifest: Path) -> list[str]:
    if not manifest.exists():
        raise UserError(f"{manifest} does not exist; run make to split the requests first")
    m = re.search(r"^CHUNK_IDS :=(.*)$", manifest.read_text(), re.M)
    return m[1].split() if m else []


def fresh(results: Path, *sources: Path) -> bool:
    """Make's rule: the results file exists and is newer than what it was made from."""
    if not results.exists():
        return False
    made = results.stat().st_mtime_ns
    return all(not s.exists() or s.stat().st_mtime_ns <= made for s in sources)


def orphans(engine: Engine) -> list[Job]:
    """Every batch of the ledger never fetched: jobs that only collect their rows."""
    ledger, out = engine.ledger, engine.out
    for sha, attempt, since in ledger.unknown():
        try:
            from br.batches.submission import find_batch

            batch = find_batch(engine.client, sha, attempt, since, ledger.uploads.get(sha))
        except Unlistable:
            raise UserError(
                f"{out}: a batch create sent at {time.ctime(since)} got no answer and this "
                "server cannot list batches; rerun the plain make caption first (it stops with "
                "the ways forward)"
            )
        if batch is not None:
            ledger.record("create", phase="done", sha=sha, attempt=attempt, batch_id=batch.id)
        else:
            ledger.record("resend", sha=sha, attempt=attempt)
    jobs = []
    for batch_id in ledger.unfetched():
        sha, attempt, name = ledger.chunk_of[batch_id]
        path = out / name if name else Path()
        if not (name and path.exists() and sha256_file(path) == sha):
            path = input_file(engine, batch_id)
        job = Job(nnn=name, chunk=path, attempt=attempt, path=path, orphan=True)
        job.info = ChunkInfo(path, sha, "", 0)
        engine.fly(job, batch_id)
        jobs.append(job)
    return jobs


def input_file(engine: Engine, batch_id: str) -> Path:
    """The requests of an earlier batch whose chunk file is gone: its input file, downloaded."""
    batch = engine.retrieve(batch_id)
    fd, tmp = tempfile.mkstemp(dir=engine.out, prefix=".collect-", suffix=".jsonl")
    with os.fdopen(fd, "wb") as f:
        f.write(engine.client.files.content(batch.input_file_id).read())
    return Path(tmp)


def results_list(out: Path, ids: list[str]) -> str:
    lines = []
    for nnn in ids:
        st = (out / f"results_{nnn}.jsonl").stat()
        lines.append(f"results_{nnn}.jsonl {st.st_size} {st.st_mtime_ns}\n")
    return "".join(lines)
