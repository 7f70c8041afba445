"""Answer a step's chunks through the synchronous API (`make caption MODE=live` or flex).

Reads chunks.mk, the chunks, answers/ and the config; appends each answer to the run's journal
in answers/ as it arrives, then writes results_NNN.jsonl and the list of them (-o), as
run_batches.py does. It creates no batch. A rerun sends only what answers/ has no final answer
for; a kill -9 costs at most the CONCURRENCY requests in flight. The token budget
(TOKEN_BUDGET, else the config's token_budget) is read as tokens per minute here: requests are
held to stay within it. --print-mode prints the step's mode (MODE, else the step's or the
config's mode:, else batch) for the Makefile to choose this or run_batches.py.
How: br/live/run.py, call.py, wires.py, pace.py.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, UserError, run

# isort: split

import sys
from pathlib import Path

from br.config import load_config
from br.files import write_text
from br.layout import StepDir
from br.live.modes import check_flex, mode_of
from br.live.run import run_live


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="the step's build directory")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--step", required=True)
    parser.add_argument("--mode", default="", help="MODE: batch, live or flex")
    parser.add_argument("--print-mode", action="store_true", help="print the mode, send nothing")
    parser.add_argument("--concurrency", type=int, default=8, help="requests at once")
    parser.add_argument("--retries", type=int, default=3, help="tries more after a 5xx")
    parser.add_argument(
        "--token-budget", type=int, default=None, help="TOKEN_BUDGET: tokens a minute per model"
    )
    parser.add_argument("-o", "--output", type=Path, help="the list of results files to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    step = config.step(args.step)
    mode = mode_of(config, args.step, args.mode)
    if mode == "flex":
        check_flex(step.model, step.endpoint)
    if args.print_mode:
        print(mode)
        return 0
    if mode == "batch":
        raise UserError("this step runs in batch mode: run_batches.py sends it (MODE=live here)")
    if args.concurrency < 1:
        raise UserError(f"CONCURRENCY must be 1 or more, not {args.concurrency}")
    if args.token_budget is not None and args.token_budget < 1:
        raise UserError(
            f"TOKEN_BUDGET must be a positive number of tokens, not {args.token_budget}"
        )
    if args.retries < 0:
        raise UserError(f"RETRIES must be 0 or more, not {args.retries}")
    step_dir = StepDir(args.dir)
    ids = run_live(
        step_dir, config, args.step, mode, args.concurrency, args.retries, args.token_budget
    )
    if args.output:
        write_text(args.output, step_dir.results_list_text(ids))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
