"""Check image URLs before anything is paid: a record whose image the API cannot fetch is skipped.

Each http(s) image URL gets a HEAD request; where HEAD is refused or answered unlike a GET
(405, 501, or a 403 from a URL signed for GET only), a ranged GET of its first 1024 bytes
decides, and its bytes are sniffed too. A 403, 404, time-out, connection failure, a content
type that is not an image the API takes, or a size over the API's image limit makes a reason
such as `image_url: HTTP 403` or `image_url: timed out after 10s`; the record goes to
skipped.jsonl with it, not into a batch. Checks run concurrently (16 threads, 10 s each by
default) with the standard library only.

URLs that passed are cached with the time of the check in a JSON file in the step's build
directory (written whole, atomically), so a rerun within 24 hours does not check them again.
Failures are kept there too, with their reasons, but always checked again: a URL fixed since
(a repository made public) is sent on the next run.

As a function: `Preflight(...).filter(items, url_of)` (make_requests' filter step) or
`.check(urls)`. As a command:

    preflight.py --input DATA --config CFG --step STEP [--data-key KEY] --cache FILE [-o FILE]
    preflight.py --requests requests.jsonl --cache FILE [-o FILE]

Both print one summary line on stderr and list each failure (custom_id, url, reason) in the
-o JSONL file; the exit status is 0 unless the input or config is wrong.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, note, run

# isort: split

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from br.files import write_jsonl
from br.prompts.preflight import (
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    DEFAULT_WORKERS,
    Preflight,
    remote_url,
    requests_of_step,
)
from br.records import dumps, iter_jsonl


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
    parser.add_argument("--ttl-hours", type=float, default=DEFAULT_TTL / 3600)
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.workers < 1:
        raise UserError("--timeout must be positive and --workers at least 1")
    field = args.field
    if args.input is not None:
        if not (args.config and args.step):
            raise UserError("--input needs --config and --step (or give --requests)")
        requests: Iterable[dict[str, Any]] = requests_of_step(args)
        from br.config import load_config

        field = load_config(args.config).step(args.step).image_key
    else:
        if not args.requests.exists():
            raise UserError(f"{args.requests} does not exist; build it first (make plan, caption)")
        requests = iter_jsonl(args.requests)
    checker = Preflight(args.cache, field, args.timeout, args.workers, args.ttl_hours * 3600)
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
