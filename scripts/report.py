"""What a finished step did and cost: `make report STEP=...` prints a table and writes report.json.

Reads the step's build directory: chunks.mk, chunk_NNN.jsonl (the model), results_NNN.jsonl
(outcomes, attempts and each response's usage), batch_NNN.id and retry_NNN_K.id (the batches),
requests.jsonl, skipped.jsonl and errors.jsonl. Each batch is fetched read-only from the API for
its `usage` and timestamps (--offline skips that). Per chunk and in total: requests succeeded,
failed by reason, retried; tokens (input, cached, output) from the responses and from the
batches; cost at the batch prices of the config's `prices:` (from the batches' usage, which is
what is billed, when every batch reports it; else from the responses); wall time from the first
batch's creation to the last one's end. Writes report.json atomically; a rerun rewrites it only
if something changed.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, UserError, note, run

# isort: split

import json
import sys
from pathlib import Path

from br.answers.report import build, chunk_ids, spend, table
from br.batches.providers import provider_for
from br.config import load_config
from br.files import write_text
from br.layout import StepDir, moved, no_step, step_dir


def step_name(found: Path) -> str:
    """The step a directory is of: <step>, or a pipeline's NN-<step>."""
    return found.name.split("-", 1)[-1] if found.parent.name == "pipeline" else found.name


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="the step's build directory")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--offline", action="store_true", help="do not fetch the batches")
    parser.add_argument("--max-cost", default="", help="MAX_COST (default: config max_cost:)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="report.json")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    found = step_dir(args.dir)  # after make pipeline: its NN-<step>
    args.dir, args.output = found, moved(args.output, args.dir, found)
    if not args.dir.is_dir():
        raise UserError(no_step(args.dir))
    step = StepDir(args.dir)
    ids = chunk_ids(step)
    client = None if args.offline or not ids else provider_for(config, step_name(found))
    report = build(step, ids, config, client, args.max_cost)
    write_text(args.output, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(table(report))
    for line in spend(report):
        print(line)
    note(f"{args.output}: written")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
