"""Check a step's image URLs now, as make caption does first: `make preflight STEP=...`.

Reads the step's requests (built from --input with --config and --step) or a requests or chunk
file (--requests), and checks each http(s) image URL the way br/prompts/preflight.py describes,
remembering the URLs that passed in --cache (preflight.json) for 24 hours: --workers at once,
--per-host at once on one host, and a host that gives no answer to 3 tries is given up (its
other URLs fail at once, without a try):

    preflight.py --input DATA --config CFG --step STEP [--data-key KEY] --cache FILE [-o FILE]
    preflight.py --requests requests.jsonl --cache FILE [-o FILE]

Both print one summary line on stderr and list each failure (custom_id, url, reason) in the
-o JSONL file (or on stdout); the exit status is 0 unless the input or config is wrong. A rerun
checks again only the URLs that failed, are new, or passed more than 24 hours ago.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, note, run

# isort: split

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from br.config import Step, load_config
from br.files import write_jsonl
from br.prompts.build import build_requests
from br.prompts.preflight import (
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    DEFAULT_WORKERS,
    PER_HOST,
    Preflight,
    remote_url,
)
from br.records import dumps, iter_jsonl, iter_records


def requests_of_step(path: Path, step: Step, data_key: str) -> Iterator[dict[str, Any]]:
    """The step's requests with each image field as the record gives it (nothing resolved)."""
    for built in build_requests(iter_records(path), step, data_key):
        if built.request is not None:
            yield built.request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--requests", type=Path, help="a requests (or chunk) JSONL file")
    source.add_argument("--input", type=Path, help="the dataset (with --config and --step)")
    parser.add_argument("--config", type=Path, help="the YAML config")
    parser.add_argument("--step", help="the config's step")
    parser.add_argument("--data-key", default="image_path", help="field or jq expression")
    parser.add_argument("--field", default="image_url", help="--requests: the name in reasons")
    parser.add_argument("--cache", type=Path, help="preflight.json: URLs that passed, and when")
    parser.add_argument("-o", "--output", type=Path, help="preflight.jsonl: each failure")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds a URL")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="checks at once")
    parser.add_argument("--per-host", type=int, default=PER_HOST, help="checks at once a host")
    parser.add_argument("--ttl-hours", type=float, default=DEFAULT_TTL / 3600)
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.workers < 1 or args.per_host < 1:
        raise UserError("--timeout must be positive, --workers and --per-host at least 1")
    field = args.field
    if args.input is not None:
        if not (args.config and args.step):
            raise UserError("--input needs --config and --step (or give --requests)")
        step = load_config(args.config).step(args.step)
        requests: Iterable[dict[str, Any]] = requests_of_step(args.input, step, args.data_key)
        field = step.image_key
    else:
        if not args.requests.exists():
            raise UserError(f"{args.requests} does not exist; build it first (make plan, caption)")
        requests = iter_jsonl(args.requests)
    checker = Preflight(
        args.cache, field, args.timeout, args.workers, args.ttl_hours * 3600, per_host=args.per_host
    )
    failures = (
        {"custom_id": request.get("custom_id"), "url": remote_url(request), "reason": reason}
        for request, reason in checker.filter(requests, remote_url)
        if reason
    )
    if args.output:
        write_jsonl(args.output, failures)
    else:
        for row in failures:
            print(dumps(row))
    checker.save()
    note(checker.summary() + (f"; failures in {args.output}" if args.output else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
