"""--collect, run before a re-split (the input or a prompt changed): no paid batch is abandoned.

Every batch of the step's ledger that was never fetched (in flight, or ended) is waited for and
its rows put in answers/, so the split that follows sends only the requests no earlier batch
holds: edit one record of 20 while their batch runs and rerun, and 21 requests are paid in all,
the edited record's answer being the new one. A create whose answer never came is first looked
for in the batch list (adopted, or let go as a `resend`). An earlier batch whose chunk file is
gone, or holds other requests now, is matched with its own input file, downloaded.
"""

from __future__ import annotations

import time
from pathlib import Path

from br.batches.chunk import Chunk
from br.batches.engine import Engine
from br.batches.provider import Unlistable
from br.batches.submission import find_batch
from br.cli import UserError
from br.files import sha256_file


def earlier_batches(engine: Engine) -> list[Chunk]:
    """Every batch of the ledger never fetched that the engine's provider holds (or whose
    provider the ledger did not note), as a chunk in flight that only collects."""
    ledger, step = engine.ledger, engine.step
    mine = engine.submitter.noted.get("provider")

    def held(provider: str | None) -> bool:
        return provider is None or mine is None or provider == mine

    for sha, attempt, since in ledger.unknown():
        if not held(ledger.create(sha, attempt).provider):
            continue
        try:
            batch = find_batch(engine.provider, sha, attempt, since, ledger.uploads.get(sha))
        except Unlistable:
            raise UserError(
                f"{step.root}: a batch create sent at {time.ctime(since)} got no answer and this "
                "server cannot list batches; rerun the plain make caption first (it stops with "
                "the ways forward)"
            )
        if batch is not None:
            ledger.record(
                "create", phase="done", sha=sha, attempt=attempt, batch_id=batch.id,
                **engine.submitter.noted,
            )  # fmt: skip
        else:
            ledger.record("resend", sha=sha, attempt=attempt)
    chunks = []
    for batch_id in ledger.unfetched():
        if not held(ledger.made_by.get(batch_id)):
            continue
        sha, attempt, name = ledger.chunk_of[batch_id]
        path = step.root / name if name else Path()
        if not (name and path.exists() and sha256_file(path) == sha):
            path = input_file(engine, batch_id)
        chunk = Chunk(nnn=name, path=path, earlier=True, attempt=attempt)
        engine.fly(chunk, batch_id)
        chunks.append(chunk)
    return chunks


def input_file(engine: Engine, batch_id: str) -> Path:
    """The requests of an earlier batch whose chunk file is gone: its input file, downloaded
    (removed at the end of the run: StepDir.downloads)."""
    batch = engine.submitter.retrieve(batch_id, engine.step.ledger)
    path = engine.step.new_download()
    with open(path, "wb") as f:
        f.write(engine.provider.download(batch.input_file_id or ""))
    return path
