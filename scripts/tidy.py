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

import sys
from pathlib import Path

from br.batches.ledger import Ledger
from br.batches.providers import provider_for
from br.batches.tidy import tidy
from br.config import load_config
from br.layout import StepDir


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="the step's build directory")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--step", default=None, help="the step (its provider:)")
    parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    args = parser.parse_args(argv)

    step = StepDir(args.dir)
    ledger = Ledger(step.ledger)
    if not ledger.chunk_of:
        note(f"{args.dir} has no ledger of batches: nothing of this step was sent")
        return 0
    provider = provider_for(load_config(args.config), args.step)
    if not getattr(provider, "keeps_files", True):
        note(f"{args.dir}: {type(provider).__name__}'s batches keep no files: nothing to delete")
        return 0
    tidy(provider, step, ledger, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
