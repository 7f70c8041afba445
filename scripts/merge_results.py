"""Merge answers back into the dataset: merged.json (or .jsonl), errors.jsonl, and a summary.

Reads INPUT, requests.jsonl and every result in answers/ (this run's results_NNN.jsonl and
earlier runs' reusable ones), matched by data key through the request-body hash. Each answered
record gets the response under the response key: the text, or for structured output the parsed
JSON (checked against the step's schema), passed through the step's `extract:` jq expression.
The `question` step appends a question/answer pair to a list and to dialog_history instead.
Records not selected by `where:` or skipped for missing fields pass through untouched; failures
are listed in errors.jsonl. The index lives in a temporary SQLite file, so memory stays flat.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from cli import ArgumentParser, note, run, step_arguments

# isort: split

import json
import re
import sqlite3
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
from config import Step, compile_jq, load_config, response_key_of
from files import atomic_output
from make_requests import custom_id_of, key_function
from records import RecordWriter, dumps, is_jsonl, iter_jsonl, iter_records, request_hash

QA = re.compile(
    r"(?:Q(?:uestion)?\s*[:.]\s*)(?P<q>.+?)\s*A(?:nswer)?\s*[:.]\s*(?P<a>.+)", re.S | re.I
)
BATCH = 500


class Answers:
    """custom_id -> final result row, through a temporary on-disk index."""

    def __init__(self, directory: Path, requests: Path, answers: Path) -> None:
        self.tmp = tempfile.NamedTemporaryFile(dir=directory, prefix=".merge-", suffix=".db")  # noqa: SIM115 (closed in close())
        self.db = sqlite3.connect(self.tmp.name)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        # Per request hash, the best row of every batch that held it: a success, else the
        # latest attempt's failure (answers/ has one file per batch and attempt).
        self.db.execute("CREATE TABLE ans(hash BLOB PRIMARY KEY, ok INT, n INT, row TEXT)")
        self.db.execute("CREATE TABLE req(cid TEXT PRIMARY KEY, hash BLOB)")
        files = sorted(answers.glob("*.jsonl")) if answers.is_dir() else []
        for path in files:
            self.db.executemany(
                "INSERT INTO ans VALUES (?, ?, ?, ?) ON CONFLICT(hash) DO UPDATE SET "
                "ok = excluded.ok, n = excluded.n, row = excluded.row WHERE "
                "(excluded.ok, excluded.n) >= (ans.ok, ans.n)",
                (
                    (
                        bytes.fromhex(r["hash"]),
                        r["outcome"] == "succeeded",
                        int(r.get("attempts") or 0),
                        dumps(r),
                    )
                    for r in iter_jsonl(path)
                ),
            )
        self.db.executemany(
            "INSERT OR REPLACE INTO req VALUES (?, ?)",
            ((r["custom_id"], bytes.fromhex(request_hash(r))) for r in iter_jsonl(requests)),
        )

    def lookup(self, cids: list[str]) -> dict[str, dict[str, Any] | None]:
        """For each custom_id that has a request: its result row, or None if none came back."""
        marks = ",".join("?" * len(cids))
        found: dict[str, dict[str, Any] | None] = {}
        query = (
            f"SELECT req.cid, ans.row FROM req LEFT JOIN ans ON ans.hash = req.hash "
            f"WHERE req.cid IN ({marks})"
        )
        for cid, row in self.db.execute(query, cids):
            found[cid] = json.loads(row) if row else None
        return found

    def close(self) -> None:
        self.db.close()
        self.tmp.close()


class Merger:
    def __init__(self, step: Step, data_key: str, response_key: str) -> None:
        self.step = step
        self.key = key_function(data_key)
        self.response_key = response_key
        self.extract = (
            compile_jq(step.extract, f"step '{step.name}' extract:") if step.extract else None
        )
        self.validator = (
            jsonschema.Draft202012Validator(step.schema) if step.schema is not None else None
        )

    def value(self, text: str) -> Any:
        """The stored value of a response text; raises ValueError with a code for bad ones."""
        value: Any = text
        fmt = (self.step.response_format or {}).get("type")
        if fmt in {"json_schema", "json_object"} or self.step.kind == "question":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                if self.step.kind != "question":
                    raise ValueError("invalid_json", f"the response is not JSON: {e.msg}")
        if self.validator is not None:
            error = jsonschema.exceptions.best_match(self.validator.iter_errors(value))
            if error is not None:
                where = "/".join(map(str, error.absolute_path)) or "the top level"
                raise ValueError("schema_mismatch", f"at {where}: {error.message}")
        if self.extract is not None:
            try:
                out = list(self.extract.input_value(value))
            except ValueError as e:  # a jq error on this response: keep which expression
                message = str(e).splitlines()[0]
                raise ValueError(
                    "extract_failed", f"extract '{self.step.extract}' failed: {message}"
                ) from None
            if not out:
                raise ValueError("extract_empty", f"extract '{self.step.extract}' gave nothing")
            value = out[0]
        return value

    def apply(self, record: dict[str, Any], value: Any) -> dict[str, Any]:
        if self.step.kind != "question":
            return {**record, self.response_key: value}
        question, answer = question_answer(value)
        rounds = record.get(self.response_key)
        rounds = list(rounds) if isinstance(rounds, list) else []
        history = record.get("dialog_history") or ""
        return {
            **record,
            self.response_key: rounds + [{"question": question, "answer": answer}],
            "dialog_history": f"{history}Question: {question}\nAnswer: {answer}\n",
        }


def question_answer(value: Any) -> tuple[str, str]:
    """A question round from {question, answer} JSON or 'Question: ... Answer: ...' text."""
    if isinstance(value, dict) and "question" in value and "answer" in value:
        return str(value["question"]), str(value["answer"])
    m = QA.search(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(
            "invalid_question", "expected {question, answer} or 'Question: … Answer: …'"
        )
    return m["q"].strip(), m["a"].strip()


def batched(records: Iterator[dict[str, Any]]) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    batch: list[tuple[int, dict[str, Any]]] = []
    for item in enumerate(records):
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    step_arguments(parser)
    parser.add_argument("--requests", required=True, type=Path, help="requests.jsonl")
    parser.add_argument("--answers", required=True, type=Path, help="answers/ directory")
    parser.add_argument("--response-key", default="", help="default: the step's response_key")
    parser.add_argument("--errors", required=True, type=Path, help="errors.jsonl")
    parser.add_argument("-o", "--output", required=True, type=Path, help="merged.json(l)")
    args = parser.parse_args(argv)

    step = load_config(args.config).step(args.step)
    response_key = response_key_of(step, args.response_key)
    merger = Merger(step, args.data_key, response_key)
    answers = Answers(args.output.parent, args.requests, args.answers)
    reasons: Counter[str] = Counter()  # failures by code; the rows stream to errors.jsonl
    answered = cut = 0
    try:
        # errors.jsonl is committed first (the inner block ends first): once merged.json is
        # committed make takes the step as done, so a kill between them must not lose errors.
        with atomic_output(args.output) as f, atomic_output(args.errors) as errors:
            writer = RecordWriter(f, is_jsonl(args.output))
            for batch in batched(iter_records(args.input)):
                keyed = [(i, r, custom_id_of(r, merger.key)) for i, r in batch]
                rows = answers.lookup([cid for _, _, cid in keyed if cid is not None])
                for index, record, cid in keyed:
                    if cid not in rows:  # not selected, or skipped: passes through untouched
                        writer.write(record)
                        continue
                    row = rows[cid]
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


def error_row(
    cid: str, index: int, code: str, message: str, row: dict[str, Any] | None
) -> dict[str, Any]:
    api = row is not None and row["outcome"] != "succeeded"
    return {
        "custom_id": cid,
        "index": index,
        "stage": "api" if api else "response",
        "code": code,
        "message": message,
        "status": (row or {}).get("error", {}).get("status") if api else None,
        "retryable": bool(row and row.get("retryable")) if api else False,
        "attempts": (row or {}).get("attempts"),
    }


def summarise(output: Path, answered: int, reasons: Counter[str], path: Path) -> None:
    line = f"{output}: {answered} record(s) answered"
    if reasons:
        why = ", ".join(f"{n} {code}" for code, n in reasons.most_common())
        line += f", {sum(reasons.values())} failed ({why}); see {path}"
    note(line)


if __name__ == "__main__":
    sys.exit(run(main))
