"""Submit one chunk by hand: `make build/<input>/<step>/batch_007.id`.

Uploads chunk_NNN.jsonl and creates its batch, exactly once (br/batches/submission.py), then
writes batch_NNN.id; a rerun finds the same batch and pays nothing. `make caption` does this for
every chunk in one process (run_batches.py); this script is for one chunk at a time. Make runs
it order-only: editing it resubmits nothing.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, note, run

# isort: split

import sys
from pathlib import Path

from br.batches.chunk import chunk_info
from br.batches.ledger import Ledger
from br.batches.providers import provider_for
from br.batches.submission import Submitter
from br.config import load_config
from br.files import write_text
from br.layout import StepDir


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("chunk", type=Path, help="chunk_NNN.jsonl")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--step", required=True)
    parser.add_argument("--resend", action="store_true", help="send again an unanswered create")
    parser.add_argument("-o", "--output", required=True, type=Path, help="batch_NNN.id")
    args = parser.parse_args(argv)

    provider = provider_for(load_config(args.config), args.step)
    chunk = chunk_info(args.chunk)
    ledger = Ledger(StepDir(args.chunk.parent).ledger)
    batch_id = Submitter(provider, ledger, args.step, args.resend).batch_id(chunk, 0, args.output)
    write_text(args.output, batch_id + "\n")
    note(f"{args.output}: {batch_id} (~{chunk.tokens} input tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
