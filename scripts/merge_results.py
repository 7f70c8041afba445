"""Merge answers back into the dataset: merged.json (or .jsonl), errors.jsonl, and a summary.

Reads INPUT, requests.jsonl, skipped.jsonl and every result in answers/ (this run's
results_NNN.jsonl and earlier runs' reusable ones). An answer is attached to a record only when
it answers the request built from the record as it is now (br/answers/merge.py). If INPUT,
CONFIG or an image changed since requests.jsonl was built (a record edited, added, or newly
selected by `where:` while the batches ran), nothing is written: one line says how many records
changed and to rerun, which sends just their requests.

Each answered record gets the response under the response key (the `question` step appends a
question/answer pair instead). Records not selected by `where:` or skipped for missing fields
pass through untouched; failures are listed in errors.jsonl. Both files are written whole; a
rerun over the same files writes the same bytes.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, note, run, step_arguments

# isort: split

import sys
from pathlib import Path

from br.answers import store
from br.answers.merge import Answers, merge, summary
from br.answers.values import Merger
from br.config import load_config, response_key_of
from br.layout import StepDir
from br.prompts import made
from br.prompts.request_images import image_arguments, local_root, step_images


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    step_arguments(parser)
    parser.add_argument("--requests", required=True, type=Path, help="requests.jsonl")
    parser.add_argument("--answers", required=True, type=Path, help="the step's answers/")
    parser.add_argument("--response-key", default="", help="default: the step's response_key")
    parser.add_argument("--errors", required=True, type=Path, help="errors.jsonl")
    parser.add_argument("-o", "--output", required=True, type=Path, help="merged.json(l)")
    parser.add_argument(
        "--skipped", type=Path, help="skipped.jsonl (default: beside requests.jsonl)"
    )
    image_arguments(parser)  # where make_requests found the local images
    args = parser.parse_args(argv)

    config = load_config(args.config)
    step = config.step(args.step)
    merger = Merger(step, args.data_key, response_key_of(step, args.response_key))
    skipped = args.skipped or StepDir(args.requests.parent).skipped
    answers = Answers(args.output.parent, args.requests, store.answers_dir(args.answers), skipped)
    args.preflight_cache = None  # no URL is checked again: skipped.jsonl has the verdicts
    images = args.images or args.requests.parent / "images"
    local, _ = step_images(args, step, images, True)
    root = made.image_root(local_root(args))
    hashes = made.trusted(args.requests, config.sha256, [step.name, args.data_key, root], images)
    try:
        with local:
            merged = merge(args.input, merger, answers, local, args.output, args.errors, hashes)
    finally:
        answers.close()
    for line in summary(args.output, merged, args.errors):
        note(line)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
