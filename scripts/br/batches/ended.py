"""What an ended batch means for its chunk: its rows in answers/, a retry, results_NNN.jsonl,
or a stop with one line.

An ended batch's output and error lines are matched to its requests by custom_id
(provider.collect). The rows of each attempt go to answers/ at once, keyed by the identity of
what was sent (`<chunk sha256[:32]>-<attempt>.jsonl`); retryable failures (429, 5xx, expired or
cancelled before they ran; one of unknown cause once) go again in a follow-up batch,
retry_NNN_K.jsonl / .id, up to RETRIES; results_NNN.jsonl is written when the chunk has a
final outcome for every request. Since every attempt's rows are in answers/ first, a kill
before results_NNN.jsonl leaves it missing and the rerun rebuilds it without a call.

A batch that failed:
- on the enqueued-token limit is created again once others of ours drain (with none of ours in
  flight, after a pause; more than three times so: stopped, with the way forward);
- validation: its chunk stops with one line; the id file moves to superseded/, so a rerun
  after a fix sends afresh.
A batch cancelled outside the run stops its chunk once (batch_NNN.cancelled says we told you):
the rerun fetches what it did and sends the rest. `make cancel` writes the same note: a run
started after it sends the rest, a run already going when it came stops (you meant to stop
spending). A cancelled batch that left no output file has all its requests sent again.
An ended batch whose results are gone from the server (make tidy, or 30 days after it ended)
and not in answers/ (build/ deleted since) is paid and lost: RESEND=1 sends it again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from br.batches.account import acknowledge
from br.batches.chunk import Chunk, Done, Stopped, Waiting
from br.batches.polling import interval
from br.batches.provider import TOKEN_LIMIT, UNKNOWN, Batch, NotFound, collect
from br.cli import note
from br.files import move_aside, write_jsonl
from br.records import fast_dumps, iter_jsonl

if TYPE_CHECKING:
    from br.batches.engine import Engine


def ended(engine: Engine, chunk: Chunk, batch: Batch) -> None:
    if batch.status == "failed":
        failed(engine, chunk, batch)
    elif batch.status != "cancelled" or acknowledged(engine, chunk, batch):
        finished(engine, chunk, batch)


def failed(engine: Engine, chunk: Chunk, batch: Batch) -> None:
    name, problems = chunk.info.path.name, batch.problems
    if chunk.earlier or not any(p.code == TOKEN_LIMIT for p in problems):
        shown = "; ".join(
            f"{'line ' + str(p.line) + ': ' if p.line is not None else ''}{p.code}: {p.message}"
            for p in problems[:10]
        )
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        id_file = engine.id_file(chunk)
        if id_file is not None and id_file.exists():
            move_aside(id_file)  # so a rerun, after a fix, sends afresh
        chunk.state = Stopped(
            f"batch {batch.id} for {name} failed validation: "
            f"{shown or 'no reason given'}{more}; fix the input or config and rerun make"
        )
        return
    model = chunk.info.model
    others = sum(c is not chunk and c.info.model == model for c in engine.in_flight())
    if others == 0:
        chunk.alone += 1
        if chunk.alone > 3:
            chunk.state = Stopped(
                f"{name} (~{chunk.info.tokens} tokens) keeps failing on the enqueued-token limit "
                "with nothing else of ours in flight; lower MAX_REQUESTS so chunks are smaller, "
                "or wait for other batches on the account, then rerun make"
            )
            return
    note(f"{name}: enqueued-token limit reached; resubmitting once {others} drain")
    now = time.time()
    chunk.state = Waiting(below=others, until=now + interval(now - batch.created_at))


def acknowledged(engine: Engine, chunk: Chunk, batch: Batch) -> bool:
    """A batch cancelled outside the run: go on if you were told before this run began;
    else tell you (batch_NNN.cancelled) and stop the chunk."""
    if chunk.earlier:
        return True
    ack = engine.step.cancelled(chunk.nnn)
    told = ack.read_text().split() if ack.exists() else []
    if batch.id in told and ack.stat().st_mtime < engine.started:
        return True
    acknowledge(engine.step, chunk.nnn, batch.id)
    counts = batch.request_counts
    done, total = (counts.completed, counts.total) if counts else (0, 0)
    gone = "" if batch.left_results else " and left no output file"
    chunk.state = Stopped(
        f"batch {batch.id} ({chunk.info.path.name}) was cancelled outside this run with {done} "
        f"of {total} request(s) done{gone}; rerun make to send the rest again"
    )
    return False


def finished(engine: Engine, chunk: Chunk, batch: Batch) -> None:
    info = chunk.info.full()  # let go while in flight (Engine.HOLD): read back
    try:
        rows = collect(engine.provider, batch, set(info.ids), chunk.attempt, chunk.tried_unknown)
    except NotFound:
        lost(engine, chunk, batch)
        return
    if batch.status == "cancelled" and not batch.left_results:
        note(
            f"{info.path.name}: cancelled batch {batch.id} left no output file; its requests "
            "will be sent again"
        )
    kept = [{"custom_id": cid, "hash": sha, **rows[cid]} for cid, sha in info.hashes()]
    write_jsonl(engine.step.answers_file(info.sha, chunk.attempt), kept, fast_dumps)
    engine.ledger.record("fetched", batch_id=batch.id, durable=False)
    if not chunk.earlier:
        engine.fetched(info, chunk.attempt, batch.id)
    after_rows(engine, chunk, {r["custom_id"]: r for r in kept})


def lost(engine: Engine, chunk: Chunk, batch: Batch) -> None:
    """Its output is gone from the server, and its rows are not in answers/: paid, and lost."""
    name = chunk.info.path.name
    if not engine.resend or chunk.earlier:
        chunk.state = Stopped(
            f"{name}: the results of batch {batch.id} are gone from the server (its files were "
            "deleted, by make tidy or 30 days after it ended) and are not in answers/; rerun "
            "with RESEND=1 to send its requests again (paid again)"
        )
        return
    note(f"{name}: the results of batch {batch.id} are gone; sending it again")
    engine.ledger.record("lost", batch_id=batch.id)
    engine.start(chunk)


def rows_in(path: Path) -> dict[str, dict[str, Any]]:
    """custom_id -> row of one attempt's answers/ file."""
    return {r["custom_id"]: r for r in iter_jsonl(path)}


def after_rows(engine: Engine, chunk: Chunk, rows: dict[str, dict[str, Any]]) -> None:
    """The rows of one attempt are in answers/: retry what may succeed, or finish."""
    if chunk.earlier:
        chunk.state = Done()
        chunk.slim()
        return
    for cid, row in rows.items():
        if row["error"] and row["error"]["code"] == UNKNOWN:
            chunk.tried_unknown[cid] = chunk.tried_unknown.get(cid, 0) + 1
    again = {c for c, r in rows.items() if r["outcome"] != "succeeded" and r["retryable"]}
    if again and chunk.attempt < engine.retries:
        path = engine.step.retry(chunk.nnn, chunk.attempt + 1)
        retry = chunk.attempts[0].full().subset(path, again)
        chunk.attempt += 1
        chunk.attempts[chunk.attempt] = retry
        note(f"{path.name}: retrying {len(again)} request(s), attempt {chunk.attempt + 1}")
        engine.start(chunk)
        return
    finalise(engine, chunk, rows)


def finalise(engine: Engine, chunk: Chunk, last: dict[str, dict[str, Any]]) -> None:
    """results_NNN.jsonl: for each request, its row from the last attempt that sent it
    (with one attempt, the rows just fetched, in the chunk's order: nothing read again)."""
    first = chunk.attempts[0] if chunk.attempt == 0 else chunk.attempts[0].full()
    if chunk.attempt == 0:
        rows = list(last.values())
    else:
        final: dict[str, dict[str, Any]] = {}
        for k in range(chunk.attempt + 1):
            final.update(rows_in(engine.step.answers_file(chunk.attempts[k].sha, k)))
        rows = [final[cid] for cid in first.ids]
    same = engine.step.answers_file(first.sha, 0) if chunk.attempt == 0 else None
    results = engine.step.results(chunk.nnn)
    write_results(rows, results, same)
    bad = sum(r["outcome"] != "succeeded" for r in rows)
    note(f"{results}: {len(rows) - bad} succeeded, {bad} failed")
    chunk.state = Done()
    chunk.slim()  # its requests are not needed again: memory follows what is in flight


def write_results(rows: list[dict[str, Any]], results: Path, same: Path | None) -> None:
    """results_NNN.jsonl, built from answers/. A chunk sent once has exactly its first
    attempt's rows: a hard link, not a second copy."""
    tmp = results.parent / f".{results.name}.{os.getpid()}.tmp"
    try:
        if same is None:
            raise OSError
        os.link(same, tmp)
    except OSError:
        write_jsonl(tmp, rows, fast_dumps)
    os.utime(tmp)  # the answers may be older, identical bytes: make must see a fresh target
    os.replace(tmp, results)
