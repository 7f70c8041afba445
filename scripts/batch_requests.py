"""The original batch_requests tool's Python functions, as thin layers over the pipeline's library.

The move-over guide (each function, its make equivalent, what differs on purpose, keys) is
scripts/batch_requests.md, beside this file. Moving over is a change of import path: put
scripts/ on sys.path, then `from batch_requests import make_requests, ...`.

Each function keeps the original's name, arguments and return type, and does its work with the
code `make caption` runs: requests are built by br.prompts.build (same templates, `where:`,
question step and five-missing rule), chunks by br.batches.split.chunks, batches are
found-or-created exactly once by br.batches.submission.Submitter, output lines are read by
br.batches.openai.outcome, and answers are applied by br.answers.values.Merger.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from br.answers.values import Merger
from br.batches.chunk import chunk_info
from br.batches.client import make_client
from br.batches.ledger import Ledger
from br.batches.openai import OpenAI, last_batches, outcome
from br.batches.split import chunks
from br.batches.submission import Submitter
from br.cli import UserError, note
from br.config import Config, Step, load_config
from br.files import write_text
from br.layout import StepDir
from br.limits import DEFAULT_MAX_BYTES
from br.prompts.build import build_requests, custom_id_of
from br.records import dumps

MAX_PER_FILE = 1000  # the original's chunk size


class BatchRequestsError(UserError, ValueError):
    """A mistake in the arguments: a ValueError, as the original raised, and a UserError."""


def _client(api_key: str) -> Any:
    """An SDK client for an explicit key (the original's `OpenAI(api_key=api_key)`)."""
    if not api_key:
        raise BatchRequestsError("api_key is required")
    return make_client(api_key=api_key)


# --------------------------------------------------------------------------- making requests


def make_requests(
    config_data: dict[str, Any],
    step: str,
    input_data: list[dict[str, Any]],
    input_key: str = "image_path",
) -> list[dict[str, Any]]:
    """Batch API request dicts for `step` of `config_data`, one per record that has its fields.

    Records missing a prompt field are left out; five in a row raise ValueError. The `question`
    step allows blank fields (dialog_history and cleaned_caption default to "").
    """
    if not isinstance(config_data, dict):
        raise BatchRequestsError("config_data must be the config loaded as a dictionary")
    if not all(isinstance(record, dict) for record in input_data):
        raise BatchRequestsError("input_data must be a list of dictionaries")
    try:
        parsed = Config(Path("config_data"), config_data).step(step)
        built = build_requests(iter(input_data), parsed, input_key)
        return [b.request for b in built if b.request is not None]
    except UserError as e:
        raise BatchRequestsError(str(e)) from None


# --------------------------------------------------------------------------- splitting


def _write_chunks(lines: Iterable[str], directory: Path, step: str) -> list[str]:
    """`batch_<step>_<n>.jsonl` files of at most 1000 requests in `directory`, written whole."""
    paths = []
    for n, chunk in enumerate(chunks(iter(lines), MAX_PER_FILE, DEFAULT_MAX_BYTES), 1):
        path = directory / f"batch_{step}_{n}.jsonl"
        write_text(path, "".join(chunk))
        paths.append(str(path))
    return paths


def split_jsonl_file(input_file: str, step: str) -> list[str]:
    """Split a requests .jsonl file into chunk files beside it; returns their paths."""
    path = Path(input_file)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() + "\n" for line in f if line.strip()]
        return _write_chunks(lines, path.parent, step)
    except UserError as e:
        raise BatchRequestsError(str(e)) from None


def split_jsonl_list(
    input_list: list[dict[str, Any]], input_path: str = ".", step: str = "requests"
) -> list[str]:
    """Write request dicts as chunk files in `input_path`; returns their paths."""
    try:
        return _write_chunks((dumps(r) + "\n" for r in input_list), Path(input_path or "."), step)
    except UserError as e:
        raise BatchRequestsError(str(e)) from None


# --------------------------------------------------------------------------- the API


def send_batch_request(api_key: str, input_file: str) -> Any:
    """The Batch for a chunk file: the one already made from these bytes, else a new one."""
    path = Path(input_file)
    if not path.is_file():
        raise BatchRequestsError(f"{input_file} does not exist")
    m = re.fullmatch(r"batch_(.+)_\d+", path.stem)
    try:
        client = _client(api_key)
        ledger = Ledger(StepDir(path.parent).ledger)  # beside the chunk files
        submitter = Submitter(OpenAI(client=client), ledger, m[1] if m else path.stem)
        return client.batches.retrieve(submitter.batch_id(chunk_info(path), 0))
    except UserError as e:
        raise BatchRequestsError(str(e)) from None


def check_request(api_key: str, batch_id: str) -> Any:
    """The Batch object, as the API has it now."""
    if not batch_id:
        raise BatchRequestsError("batch_id is required")
    return _client(api_key).batches.retrieve(batch_id)


def retrieve_requests(api_key: str, file_id: str) -> str:
    """The text of an output (or error) file."""
    if not file_id:
        raise BatchRequestsError("file_id is required (the batch's output_file_id)")
    return _client(api_key).files.content(file_id).text


def parse_response(response_text: str) -> dict[str, Any]:
    """{custom_id: response text} for the requests that succeeded; failed ones are left out."""
    parsed: dict[str, Any] = {}
    for n, line in enumerate(response_text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            note(f"parse_response: line {n} is not JSON ({e.msg}); skipped")
            continue
        result = outcome(row)
        if result["outcome"] == "succeeded":
            parsed[row.get("custom_id")] = result["response"]
    return parsed


def view_batches(config_file: str, limit: int = 10) -> list[Any]:
    """The last `limit` batches on the account, newest first."""
    if limit < 1:
        raise BatchRequestsError(f"limit must be at least 1, not {limit}")
    return last_batches(make_client(load_config(Path(config_file))), limit)


# --------------------------------------------------------------------------- merging


def _apply(
    merger: Merger, input_data: list[dict[str, Any]], response_data: dict[str, Any]
) -> list[dict[str, Any]]:
    """Apply each response to its record in place (as the original did); returns the data."""
    bad = []
    for record in input_data:
        cid = custom_id_of(record, merger.key)
        if cid is None or cid not in response_data:
            continue
        value = response_data[cid]
        try:
            if isinstance(value, str):
                value = merger.value(value)
            record.update(merger.apply(record, value))
        except ValueError:
            bad.append(cid)
    if bad:
        shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        note(f"{len(bad)} response(s) could not be applied and were left out: {shown}")
    return input_data


def handle_captions(
    input_data: list[dict[str, Any]],
    response_data: dict[str, Any],
    response_key: str,
    data_key: str,
) -> list[dict[str, Any]]:
    """Store each response under `response_key` in the record whose `data_key` matches."""
    step = Step(name="handle_captions", model="", system=None, user=None)
    return _apply(Merger(step, data_key, response_key), input_data, response_data)


def handle_qna(
    input_data: list[dict[str, Any]],
    response_data: dict[str, Any],
    response_key: str,
    data_key: str,
) -> list[dict[str, Any]]:
    """Append each {question, answer} round to the list under `response_key` and to
    `dialog_history` (responses as {question, answer} JSON or 'Question: ... Answer: ...')."""
    step = Step(name="question", model="", system=None, user=None, kind="question")
    return _apply(Merger(step, data_key, response_key), input_data, response_data)
