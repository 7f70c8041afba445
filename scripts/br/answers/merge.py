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
from br.cli import UserError, note

# isort: split

import json
import re
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import jsonschema

from br.config import Step, compile_jq
from br.prompts.build import (
    Built,
    key_function,
    step_requests,
)
from br.prompts.images.cache import LocalImages
from br.prompts.images.identity import request_hash
from br.records import dumps, iter_jsonl, iter_records

QA = re.compile(
    r"(?:Q(?:uestion)?\s*[:.]\s*)(?P<q>.+?)\s*A(?:nswer)?\s*[:.]\s*(?P<a>.+)", re.S | re.I
)
BATCH = 500
T = TypeVar("T")


class Answers:
    """The answered requests, and what requests.jsonl and skipped.jsonl hold per custom_id,
    through a temporary on-disk index."""

    def __init__(self, directory: Path, requests: Path, answers: Path, skipped: Path) -> None:
        self.tmp = tempfile.NamedTemporaryFile(dir=directory, prefix=".merge-", suffix=".db")  # noqa: SIM115 (closed in close())
        self.db = sqlite3.connect(self.tmp.name)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        # Per request hash, the best row of every batch that held it: a success, else the
        # latest attempt's failure (answers/ has one file per batch and attempt).
        self.db.execute("CREATE TABLE ans(hash BLOB PRIMARY KEY, ok INT, n INT, row TEXT)")
        self.db.execute("CREATE TABLE req(cid TEXT PRIMARY KEY, hash BLOB)")
        # Records make_requests left out for their image (a failed preflight among them): the
        # merge, which checks no URL, would build their requests.
        self.db.execute("CREATE TABLE skip(cid TEXT PRIMARY KEY)")
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
        if skipped.exists():
            self.db.executemany(
                "INSERT OR IGNORE INTO skip VALUES (?)",
                ((r["custom_id"],) for r in iter_jsonl(skipped) if r.get("reason")),
            )

    def select(self, query: str, keys: list[Any]) -> dict[Any, Any]:
        marks = ",".join("?" * len(keys))
        return dict(self.db.execute(query.format(marks=marks), keys)) if keys else {}

    def lookup(
        self, cids: list[str]
    ) -> tuple[dict[str, bytes], set[str], Callable[[list[bytes]], dict[bytes, Any]]]:
        """For these custom_ids: the hash of each one's request in requests.jsonl, the ones
        skipped for their image, and a lookup of result rows by request hash."""
        sent = self.select("SELECT cid, hash FROM req WHERE cid IN ({marks})", cids)
        skipped = set(self.select("SELECT cid, 1 FROM skip WHERE cid IN ({marks})", cids))

        def rows(hashes: list[bytes]) -> dict[bytes, Any]:
            found = self.select("SELECT hash, row FROM ans WHERE hash IN ({marks})", hashes)
            return {h: json.loads(row) for h, row in found.items()}

        return sent, skipped, rows

    def close(self) -> None:
        self.db.close()
        self.tmp.close()


def rebuilt(
    path: Path, step: Step, data_key: str, local: LocalImages
) -> Iterator[tuple[int, dict[str, Any], Built | None]]:
    """Every record of INPUT, in order, with the request make_requests.py builds for it now
    (None: not selected by `where:`; a Built without request: skipped)."""
    held: dict[int, dict[str, Any]] = {}  # read, and not yet built: one or two records

    def records() -> Iterator[dict[str, Any]]:
        for index, record in enumerate(iter_records(path)):
            held[index] = record
            yield record

    quiet = step_requests(records(), step, data_key, local, None, warn=lambda _: None, every=True)
    for built, _ in quiet:
        yield built.index, held.pop(built.index), built if built.selected else None


class Changed:
    """Records whose request now is not the one in requests.jsonl: counted, the first named."""

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[int, str | None] | None = None

    def add(self, index: int, cid: str | None) -> None:
        self.count += 1
        self.first = self.first or (index, cid)

    def check(self, input_path: Path) -> None:
        if self.first is None:
            return
        index, cid = self.first
        raise UserError(
            f"{self.count} record(s) of {input_path} changed since requests.jsonl was built "
            f"(first: record {index} '{cid}'): INPUT, CONFIG or an image changed while the "
            "step ran, so nothing was merged; rerun the same make command to send their "
            "requests (answers already paid for are reused)"
        )


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


def batched(items: Iterator[T]) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


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
