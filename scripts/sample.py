"""Try a step on a few records before batching them all (`make sample STEP=x N=20`).

Reads INPUT, the step of CONFIG and the step's answers/; sends the first N selected records'
requests (SAMPLE=random: N picked with SEED) through the synchronous API, CONCURRENCY at once,
built exactly as the batch builds them; prints each record's fields, prompt and answer (or its
error, such as a 400 for a bad schema), and writes the records with their answers to the
step's sample.json, and the cost at live prices. It never creates a batch. Each answer is kept
in answers/ by request hash: a rerun with the same prompt asks nothing, a changed prompt asks
again, and `make caption` pays nothing for a request a sample answered. How: br/live/sample.py.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, UserError, run, step_arguments

# isort: split

import sys
from pathlib import Path

from br.config import load_config, response_key_of
from br.live.modes import check_flex, check_live, mode_of
from br.live.sample import run_sample
from br.prompts.request_images import image_arguments, step_images


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    step_arguments(parser)
    parser.add_argument("--dir", required=True, type=Path, help="the step's build directory")
    parser.add_argument("--n", type=int, default=10, help="how many records (N)")
    parser.add_argument("--sample", default="first", help="first, or random (SAMPLE)")
    parser.add_argument("--seed", type=int, default=0, help="SAMPLE=random's seed (SEED)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests at once")
    parser.add_argument("--retries", type=int, default=3, help="tries more after a 5xx")
    parser.add_argument("--mode", default="", help="MODE: flex sends service_tier flex")
    parser.add_argument("--response-key", default="", help="RESPONSE_KEY")
    image_arguments(parser)
    args = parser.parse_args(argv)
    if args.n < 1:
        raise UserError(f"N must be 1 or more, not {args.n}")
    if args.concurrency < 1:
        raise UserError(f"CONCURRENCY must be 1 or more, not {args.concurrency}")
    if args.sample not in ("first", "random"):
        raise UserError(f"SAMPLE is '{args.sample}'; use first or random")
    config = load_config(args.config)
    step = config.step(args.step)
    key = response_key_of(step, args.response_key)
    # A sample is always answered synchronously: flex if asked for, else live.
    mode = "flex" if mode_of(config, args.step, args.mode) == "flex" else "live"
    check_live(config, args.step, mode)
    if mode == "flex":
        check_flex(step.model, step.endpoint)
    local, _ = step_images(args, step, args.images or args.dir / "images")
    with local:
        lines = run_sample(args, config, step, local, key, mode)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
