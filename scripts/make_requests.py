"""Build requests.jsonl: one request per record of the dataset, to the step's endpoint.

Reads INPUT (a JSON list of objects, or JSONL) and the step of CONFIG; writes one Batch API
request line per selected record, with custom_id taken from the data key, and skipped.jsonl
listing the records left out because a prompt field was missing. A rerun that produces the
same bytes leaves both files untouched, so nothing downstream is rebuilt or resent.

Images (br/prompts/images/): a local image becomes a `br-image:` reference to its bytes (the
chunks get the data URL), a file that cannot be sent is skipped with its reason, and with
--preflight-cache each image URL is checked first (preflight.py); records whose image fails
are in skipped.jsonl with a `reason`.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, note, run, step_arguments

# isort: split

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from br.config import load_config, response_key_of
from br.files import atomic_output, write_jsonl
from br.layout import hashes_of
from br.prompts import made
from br.prompts.build import step_requests
from br.prompts.images.cache import recorded_stamp
from br.prompts.request_images import image_arguments, local_root, reason_kinds, step_images
from br.prompts.tokens import estimate_tokens
from br.records import iter_records


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    step_arguments(parser)
    parser.add_argument("-o", "--output", required=True, type=Path, help="requests.jsonl")
    parser.add_argument("--skipped", required=True, type=Path, help="skipped.jsonl")
    parser.add_argument(
        "--response-key", default="", help="RESPONSE_KEY (default: the step's response_key)"
    )
    image_arguments(parser)
    args = parser.parse_args(argv)

    config = load_config(args.config)
    step = config.step(args.step)
    response_key = response_key_of(step, args.response_key)  # merge needs one: say so first
    skipped: list[dict[str, Any]] = []
    reasons: list[str] = []
    n = read = 0
    images = args.images or args.output.parent / "images"
    local, checker = step_images(args, step, images)
    digest = hashlib.sha256()  # of INPUT's bytes as read: requests.hashes says which they were
    written = hashlib.sha256()  # of requests.jsonl's bytes, for which its hashes hold
    kinds: set[tuple[Any, Any]] = set()  # (model, url) of the requests

    def counted(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal read
        for record in records:
            read += 1
            yield record

    block: list[str] = []  # lines written and hashed a thousand at a time

    def flush() -> None:
        text = "".join(block).encode()
        f.write(text)
        written.update(text)
        block.clear()

    # requests.hashes is committed last: it describes requests.jsonl as committed (made.py).
    with atomic_output(hashes_of(args.output)) as hashes:
        with local, atomic_output(args.output, "wb") as f:
            records = counted(iter_records(args.input, digest))
            built_ones = step_requests(
                records, step, args.data_key, local, checker, response_key, every=True
            )
            for built, reason in built_ones:
                if built.request is None:
                    made.write_line(hashes, None)
                    if not built.selected:
                        continue  # left out by where:, not skipped
                    row = {"index": built.index, "custom_id": built.custom_id}
                    row["missing"] = built.missing
                    if reason:
                        row["reason"] = reason
                        reasons.append(reason)
                    skipped.append(row)
                else:
                    block.append(built.line)
                    if len(block) >= 1000:
                        flush()
                    body = built.request["body"]
                    made.write_line(hashes, built.hash, estimate_tokens(body))
                    kinds.add((body.get("model"), built.request["url"]))
                    n += 1
            flush()
        write_jsonl(args.skipped, skipped)
        hashes.write(
            made.Made(
                written.hexdigest(),
                digest.hexdigest(),
                config.sha256,
                [step.name, args.data_key, made.image_root(local_root(args))],
                recorded_stamp(images),
                *(kinds.pop() if len(kinds) == 1 else (None, None)),
            ).line()
        )
    if checker:
        checker.save()
        note(checker.summary())
    missing = len(skipped) - len(reasons)
    why = [f"{missing} for missing fields"] * bool(missing)
    why += [f"{len(reasons)} for their image ({reason_kinds(reasons)})"] * bool(reasons)
    note(
        f"{args.output}: {n} requests for step '{step.name}'"
        + (f"; {len(skipped)} records skipped, {', '.join(why)} (see {args.skipped})" * bool(why))
    )
    # Nothing to send: say why (a where: selecting nothing has said so above).
    if not read:
        note(f"warning: {args.input} holds no records: nothing to send")
    elif not n and skipped:
        selected = "selected " if step.where else ""
        note(
            f"warning: all {len(skipped)} {selected}records were skipped ({', '.join(why)}): "
            f"nothing to send (see {args.skipped})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
