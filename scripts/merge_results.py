"""Merge answers back into the dataset: merged.json (or .jsonl), errors.jsonl, and a summary.

Reads INPUT, requests.jsonl, skipped.jsonl and every result in answers/ (this run's
results_NNN.jsonl and earlier runs' reusable ones). Each record's request is built again from
the record as it is now, exactly as make_requests.py builds it, and an answer is attached only
when that request is the one in requests.jsonl for the record's data key: the answer found by
its request-body hash. If INPUT, CONFIG or an image changed since requests.jsonl was built (a
record edited, added, or newly selected by `where:` while the batches ran), nothing is written:
one line says how many records changed and to rerun, which sends just their requests.

Each answered record gets the response under the response key: the text, or for structured
output the parsed JSON (checked against the step's schema), passed through the step's
`extract:` jq expression. The `question` step appends a question/answer pair to a list and to
dialog_history instead. Records not selected by `where:` or skipped for missing fields pass
through untouched; failures are listed in errors.jsonl. The index lives in a temporary SQLite
file, so memory stays flat.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, note, run, step_arguments

# isort: split

import sys
from collections import Counter
from pathlib import Path

from br.answers.merge import Answers, Changed, Merger, batched, error_row, rebuilt, summarise
from br.config import load_config, response_key_of
from br.files import atomic_output
from br.prompts.build import custom_id_of, image_arguments, step_images
from br.prompts.images.identity import request_hash
from br.records import RecordWriter, dumps, is_jsonl


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    step_arguments(parser)
    parser.add_argument("--requests", required=True, type=Path, help="requests.jsonl")
    parser.add_argument("--answers", required=True, type=Path, help="answers/ directory")
    parser.add_argument("--response-key", default="", help="default: the step's response_key")
    parser.add_argument("--errors", required=True, type=Path, help="errors.jsonl")
    parser.add_argument("-o", "--output", required=True, type=Path, help="merged.json(l)")
    parser.add_argument(
        "--skipped", type=Path, help="skipped.jsonl (default: beside requests.jsonl)"
    )
    image_arguments(parser)  # where make_requests found the local images
    args = parser.parse_args(argv)

    step = load_config(args.config).step(args.step)
    response_key = response_key_of(step, args.response_key)
    merger = Merger(step, args.data_key, response_key)
    skipped_path = args.skipped or args.requests.with_name("skipped.jsonl")
    answers = Answers(args.output.parent, args.requests, args.answers, skipped_path)
    args.preflight_cache = None  # no URL is checked again: skipped.jsonl has the verdicts
    local, _ = step_images(args, step, args.images or args.requests.parent / "images", True)
    reasons: Counter[str] = Counter()  # failures by code; the rows stream to errors.jsonl
    changed = Changed()
    answered = cut = 0
    try:
        # errors.jsonl is committed first (the inner block ends first): once merged.json is
        # committed make takes the step as done, so a kill between them must not lose errors.
        with local, atomic_output(args.output) as f, atomic_output(args.errors) as errors:
            writer = RecordWriter(f, is_jsonl(args.output))
            for batch in batched(rebuilt(args.input, step, args.data_key, local)):
                keyed = [(i, r, b, custom_id_of(r, merger.key)) for i, r, b in batch]
                sent, skipped, rows_of = answers.lookup([c for *_, c in keyed if c is not None])
                now = {
                    i: bytes.fromhex(request_hash(b.request))
                    for i, _, b, _ in keyed
                    if b is not None and b.request is not None
                }
                rows = rows_of(list(set(now.values())))
                for index, record, _, cid in keyed:
                    was = sent.get(cid) if cid is not None else None
                    if index not in now or (was is None and cid in skipped):
                        # Not selected, or skipped (for a field, or its image): untouched,
                        # unless its request was sent: then the record changed since.
                        if index not in now and was is not None:
                            changed.add(index, cid)
                        writer.write(record)
                        continue
                    if was != now[index]:  # edited, added or newly selected: never answered
                        changed.add(index, cid)
                        continue
                    assert cid is not None
                    row = rows.get(was)
                    try:
                        if row is None:
                            raise ValueError("no_result", "no result came back for this request")
                        if row["outcome"] != "succeeded":
                            error = row["error"]
                            raise ValueError(error["code"], error.get("message") or "")
                        record = merger.apply(record, merger.value(row["response"]))
                        answered += 1
                        cut += bool(row.get("cut_short"))
                    except ValueError as e:
                        code, message = e.args if len(e.args) == 2 else ("error", str(e))
                        errors.write(dumps(error_row(cid, index, code, message, row)) + "\n")
                        reasons[code] += 1
                    writer.write(record)
            changed.check(args.input)  # before either file is committed: nothing is written
            writer.close()
    finally:
        answers.close()
    summarise(args.output, answered, reasons, args.errors)
    if cut:
        note(
            f"warning: {cut} answer(s) stopped at the step's max_tokens and are cut short "
            "(kept as they came); raise max_tokens to have them whole"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
