"""Look at and cancel batches: `status` (the last LIMIT, filtered with jq), `check` (one batch),
`cancel` (a step's batches still in flight, from the batch ids in its build directory).

    python scripts/batches.py status --limit 10 --filter 'select(.status == "in_progress")'
    python scripts/batches.py check batch_abc123
    python scripts/batches.py cancel --dir build/example/caption
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, run

# isort: split

import argparse
import sys
from pathlib import Path

from br.batches.account import cancel, check, status
from br.batches.providers import provider_for
from br.config import load_config
from br.layout import StepDir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--step", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--filter", default=".")
    p = sub.add_parser("check")
    p.add_argument("batch_id", nargs="?", default="")
    p = sub.add_parser("cancel")
    p.add_argument("--dir", type=Path, required=True)
    for p in sub.choices.values():
        p.add_argument("--config", type=Path, default=None, help="for base_url / api_key")
        p.add_argument("--step", default=None, help="the step (its provider:)")
    args = parser.parse_args(argv)
    provider = provider_for(load_config(args.config) if args.config else None, args.step)
    if args.command == "status":
        if args.limit < 1:
            raise UserError(f"LIMIT must be at least 1, not {args.limit}")
        return status(provider, args.limit, args.filter)
    if args.command == "check":
        return check(provider, args.batch_id)
    return cancel(provider, StepDir(args.dir))


if __name__ == "__main__":
    sys.exit(run(main))
