"""Delete a step's files on the server once their results are safe in answers/: `make tidy`.

For every batch in the step's ledger that ended and was fetched (its rows are in answers/), the
batch's input, output and error files are deleted on the server, each named on stdout, and the
ledger notes it so a second tidy asks nothing. A batch still running, or ended but not yet
fetched, keeps its files (and is listed as kept, with why). `--dry-run` (DRY_RUN=1) lists what
would go and deletes nothing. Batches themselves cannot be deleted through the API; they stay.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, note, run

# isort: split

import contextlib
import sys
from pathlib import Path

from br.answers.outcomes import TERMINAL
from br.batches.client import make_client
from br.batches.ledger import Ledger
from br.batches.tidy import files_of
from br.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="the step's build directory")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    args = parser.parse_args(argv)

    ledger = Ledger(args.dir / "ledger.jsonl")
    if not ledger.chunk_of:
        note(f"{args.dir} has no ledger of batches: nothing of this step was sent")
        return 0
    client = make_client(load_config(args.config))
    import openai

    verb = "would delete" if args.dry_run else "deleted"
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
    keep = {f for b in kept for f in files_of(client, b)}
    gone: set[str] = set()
    for batch_id in safe:
        files = [f for f in files_of(client, batch_id) if f not in keep]
        for file_id in files:
            if file_id in gone:
                continue
            if not args.dry_run:
                # Already gone: deleted by hand, or expired after 30 days.
                with contextlib.suppress(openai.NotFoundError):
                    client.files.delete(file_id)
            print(f"{verb} {file_id} (of {batch_id})")
            gone.add(file_id)
        if not args.dry_run:
            ledger.record("tidied", batch_id=batch_id, files=files)
    note(
        f"{args.dir}: {verb} {len(gone)} file(s); kept the files of {len(kept)} batch(es) not "
        "yet fetched"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
