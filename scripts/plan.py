"""What a step would send and cost, before anything is sent: `make plan STEP=...`.

Reads INPUT and the step of CONFIG and builds the requests exactly as make_requests.py would,
then splits them exactly as split_requests.py would, all in memory: nothing is written (not
even build/), no API is called and no key is needed. Prints the records, the requests, the
records skipped (by missing field) or not selected by `where:`, the chunks and bytes, the
estimated input tokens (text and images), an upper bound on output tokens when the step sets
max_tokens, and the cost at the batch prices of the config's `prices:` table (USD per million
tokens), or at live prices for a live run (MODE=live or mode: live: twice them, br/prices.py).
With --preflight-cache, the image URLs the preflight has not checked yet, their hosts
and an upper bound on the time the check takes. With --answers, requests already answered by
an earlier run are left out, as the split does. Chunks are sized, and tokens counted, as the
step's provider's own lines (provider: anthropic, gemini), within that provider's limits.
Rerunning it only prints the same plan again.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, UserError, note, run, step_arguments

# isort: split

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from br.config import Config, load_config
from br.files import check_target
from br.limits import DEFAULT_MAX_BYTES
from br.live.modes import check_flex, mode_of
from br.prices import at_mode, check_cost
from br.prompts.request_images import image_arguments

if TYPE_CHECKING:
    from br.prompts.plan import Lines


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    step_arguments(parser)
    parser.add_argument(
        "--response-key", default="", help="RESPONSE_KEY (default: the step's response_key)"
    )
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument(
        "--answers", type=Path, default=None, help="answers/ of earlier runs: leave those out"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "--max-cost",
        default="",
        help="USD (MAX_COST; empty: the config's max_cost:): exit non-zero, with one line, when "
        "the estimate is above it",
    )
    parser.add_argument(
        "--requests",
        type=Path,
        help="the cost check only, from this built requests.jsonl (less --answers): one line",
    )
    parser.add_argument("--mode", default="", help="MODE: batch, live or flex (its prices)")
    parser.add_argument(
        "--print-mode", action="store_true", help="with --requests: then print the step's mode"
    )
    parser.add_argument(
        "--output",
        help="OUTPUT, checked first: one line if it cannot be written (make caption writes it "
        "only after the batches are paid)",
    )
    image_arguments(parser)
    args = parser.parse_args(argv)
    if args.output is not None:
        check_target("OUTPUT", args.output)
    config = load_config(args.config)
    if args.requests is not None:
        return cost_check(args, config)
    # The providers (their lines and limits) and the planner: loaded only for a whole plan or
    # a cap to check.
    from br.batches.providers import provider_for
    from br.prompts.plan import make_plan, render, summary
    from br.prompts.request_images import step_images

    sent = provider_lines(config, args.step)
    provider_for(config, args.step).limits.check(args.max_requests, args.max_bytes)
    cap = config.max_cost(args.max_cost)
    config.step(args.step)
    mode = mode_of(config, args.step, args.mode)  # a live run is priced at live prices
    # The image index and cache are read, never written; the preflight checks URLs (image
    # hosts, not the API) but saves nothing.
    local, checker = step_images(args, config.step(args.step), args.images, read_only=True)
    plan = make_plan(
        args.input,
        config,
        args.step,
        args.data_key,
        args.max_requests,
        args.max_bytes,
        args.answers,
        args.response_key,
        local,
        checker,
        sent,
    )
    local.close()
    s = at_mode(summary(plan, config, args.step), mode)
    print(json.dumps(s, indent=2) if args.json else render(s, config))
    if cap is not None:
        note(check_cost(s, cap))
    return 0


def cost_check(args: argparse.Namespace, config: Config) -> int:
    """The check before the first upload (make caption): cheap, no API, nothing printed to
    stdout but the mode (--print-mode). Without a cap (MAX_COST, the config's max_cost:) there
    is nothing to check, and nothing but the config is read or loaded."""
    cap = config.max_cost(args.max_cost)
    step = config.step(args.step)
    mode = mode_of(config, args.step, args.mode)  # a live run is priced at live prices
    if cap is not None:
        from br.prompts.plan import sent_plan, summary

        if not args.requests.exists():
            raise UserError(f"{args.requests} does not exist; run make caption to build it")
        plan = sent_plan(args.requests, args.answers, provider_lines(config, args.step))
        note(check_cost(at_mode(summary(plan, config, ""), mode), cap))
    if args.print_mode:  # make caption: batch (run_batches.py), or live / flex (run_live.py)
        if mode == "flex":
            check_flex(step.model, step.endpoint)
        print(mode)
    return 0


def provider_lines(config: Config, step: str) -> Lines:
    """How the step's provider sends a request: its own lines (Anthropic's, Gemini's), their
    tokens as a run counts them (line_identity), the most bytes a batch of them takes."""
    from br.batches.providers import line_identity, provider_for, reshapes
    from br.prompts.plan import Lines

    provider = provider_for(config, step)
    return Lines(
        config.provider(step),
        provider.shape if reshapes(provider) else None,
        lambda line: int(line_identity(line)[4]),
        provider.limits.max_file_bytes,
    )


if __name__ == "__main__":
    sys.exit(run(main))
