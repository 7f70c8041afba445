"""Delete a step's files on the server once their results are safe in answers/ (`tidy`, for
scripts/tidy.py, which says what it does for the user): a batch still running, or not yet
fetched, keeps its files; a file a kept batch shares stays; the ledger notes each deletion.
"""

from __future__ import annotations

import contextlib

from br.batches.ledger import Ledger
from br.batches.provider import TERMINAL, NotFound, Provider
from br.cli import note
from br.layout import StepDir


def files_of(provider: Provider, batch_id: str) -> list[str]:
    """The input, output and error files of a batch (none if the server lost it)."""
    try:
        return provider.retrieve(batch_id).files
    except NotFound:
        return []


def tidy(provider: Provider, step: StepDir, ledger: Ledger, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    safe, kept = [], []
    for batch_id in ledger.chunk_of:
        if batch_id in ledger.tidied:
            continue
        ended = ledger.ended.get(batch_id)
        # A failed batch has nothing to fetch (its errors are on the batch, not in a file).
        if ended == "failed" or (batch_id in ledger.fetched and ended in TERMINAL):
            safe.append(batch_id)
        else:
            print(f"kept    {batch_id}: not fetched yet (running, or the run has not read it)")
            kept.append(batch_id)
    # A batch sent again after a cancel or a failure reuses its chunk's uploaded file: a file
    # any kept batch names stays, whichever safe batch names it too.
    keep = {f for b in kept for f in files_of(provider, b)}
    gone: set[str] = set()
    for batch_id in safe:
        files = [f for f in files_of(provider, batch_id) if f not in keep]
        for file_id in files:
            if file_id in gone:
                continue
            if not dry_run:
                with contextlib.suppress(NotFound):  # deleted by hand, or expired (30 days)
                    provider.delete_file(file_id)
            print(f"{verb} {file_id} (of {batch_id})")
            gone.add(file_id)
        if not dry_run:
            ledger.record("tidied", batch_id=batch_id, files=files)
    note(
        f"{step.root}: {verb} {len(gone)} file(s); kept the files of {len(kept)} batch(es) not "
        "yet fetched"
    )
