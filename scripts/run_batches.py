"""Send a step's chunks and fetch their results, all in one process (`make caption`):
chunk_NNN.jsonl -> batch_NNN.id -> results_NNN.jsonl, and results.list naming them.

Reads chunks.mk, the chunks, the config (the key, base_url, token_budget) and the step's
ledger; writes batch_NNN.id, retry_NNN_K.jsonl / .id, answers/, results_NNN.jsonl and the
ledger's lines. A chunk that cannot go on (failed validation, cancelled outside the run, never
ended) stops with one line; the others go on, and the exit status says so. A rerun asks nothing
about a chunk whose results file is newer than the chunk and its id file, and resumes the rest
where they are; results.list is rewritten only when a results file changed. Make runs this
script order-only: editing it, or the library, resubmits nothing.

--collect, before a re-split: waits for every batch of the ledger never fetched and puts its
rows in answers/ (br/batches/earlier.py), each from the API that made it: after `provider:`
changed, the batches the earlier provider still holds are collected from it first (its key is
needed then), so switching never abandons a paid batch. It reads the step's ledger alone to
know whether there is anything to collect, so make does not start it for a step without one.
How: br/batches/engine.py, ended.py, submission.py.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, UserError, note, run

# isort: split

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from br.batches.ledger import Ledger
from br.layout import StepDir

if TYPE_CHECKING:
    from br.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="the step's build directory")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--step", required=True)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--token-budget", type=int, default=None, help="overrides the config's")
    parser.add_argument("--only", nargs="*", help="these chunk ids (NNN) instead of the manifest's")
    parser.add_argument("--collect", action="store_true", help="collect unfetched batches only")
    parser.add_argument("--resend", action="store_true", help="send again unanswered creates")
    parser.add_argument("-o", "--output", type=Path, help="the list of results files to write")
    parser.add_argument(
        "--plain",
        metavar="MODE",
        help="make caption's plain batch run (run.params: RUN=batch, MODE given): stop if "
        "CONFIG now sets another mode or a cost cap, as it may have changed since",
    )
    args = parser.parse_args(argv)
    if args.retries < 0:
        raise UserError(f"RETRIES must be 0 or more, not {args.retries}")
    if args.token_budget is not None and args.token_budget < 1:
        raise UserError(
            f"TOKEN_BUDGET must be a positive number of tokens, not {args.token_budget}"
        )

    step = StepDir(args.dir)
    if args.collect:
        ledger = Ledger(step.ledger)
        if not ledger.unfetched() and not ledger.unknown():
            return 0  # nothing to collect (the usual case): nothing more is loaded
    # The engine, the config and the providers: loaded once there is something to do.
    from br.batches.chunk import chunks_of
    from br.batches.earlier import earlier_batches
    from br.batches.engine import Engine
    from br.batches.providers import provider_for
    from br.config import load_config
    from br.files import write_text

    config = load_config(args.config)
    if args.plain is not None:
        from br.live.modes import plain_batch

        if not plain_batch(config, args.step, args.plain, ""):
            raise UserError(
                f"{args.config} changed while make ran: it now sets a mode or a cost cap "
                "(max_cost:) that was not checked; nothing was sent, rerun the same make command"
            )
    if args.collect and not collect_elsewhere(step, config, args.step):
        return 2
    provider = provider_for(config, args.step)
    engine = Engine(step, config, provider, args.step, args.retries, args.resend, args.token_budget)
    if args.collect:
        engine.begin(earlier_batches(engine))
        note(f"{args.dir}: collecting {len(engine.chunks)} earlier batch(es) before re-splitting")
    else:
        engine.begin(chunks_of(step, args.only))
    try:
        errors = engine.run()
    finally:
        for tmp in step.downloads():
            tmp.unlink()  # earlier batches' input files, downloaded to collect them
    for error in errors:
        note(f"error: {error}")
    if errors:
        return 2
    if args.output and not args.collect:
        write_text(args.output, step.results_list_text([c.nnn for c in engine.chunks]))
    return 0


def collect_elsewhere(step: StepDir, config: Config, step_name: str) -> bool:
    """Collect the batches that other providers than the step's hold (`provider:` changed
    while they ran); False if one stopped (its line said why)."""
    from br.batches.earlier import earlier_batches
    from br.batches.engine import Engine
    from br.batches.providers import provider_named

    here = config.provider(step_name)
    for name in sorted(n for n in Ledger(step.ledger).pending_providers() if n and n != here):
        engine = Engine(step, config, provider_named(config, name, step_name), step_name)
        engine.begin(earlier_batches(engine))
        note(f"{step.root}: collecting {len(engine.chunks)} earlier batch(es) from {name}")
        try:
            errors = engine.run()
        finally:
            for tmp in step.downloads():
                tmp.unlink()
        for error in errors:
            note(f"error: {error}")
        if errors:
            return False
    return True


if __name__ == "__main__":
    sys.exit(run(main))
