"""What a batch's output and error lines mean: one result row per request.

Lines are split on b"\\n" only (a record may hold U+2028, U+2029 or U+0085, which Python's
str.splitlines and the SDK's iter_lines treat as line ends), and a line that cannot be parsed
becomes an error row for its request, never a crash: a paid batch must stay reachable.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Iterator
from typing import Any

# Batch statuses (docs/api-facts.md): those that still hold enqueued tokens, and the ends.
IN_FLIGHT = {"validating", "in_progress", "finalizing", "cancelling"}
TERMINAL = {"completed", "failed", "expired", "cancelled"}
RETRYABLE_STATUS = {408, 409, 429}
# "Error code: 400 - {...}": how the openai SDK words an APIStatusError, and what some
# OpenAI-compatible servers write as the only trace of the status in an error line.
STATUS_IN_MESSAGE = re.compile(r"\b(?:Error code|status(?: code)?)[:= ]+([1-5]\d\d)\b", re.I)
UNKNOWN = "unknown_error"  # a failure of unknown cause: retried at most once


def failed(code: str, message: str, status: int | None, retryable: bool) -> dict[str, Any]:
    return {
        "outcome": "failed",
        "response": None,
        "error": {"code": str(code), "message": message, "status": status},
        "retryable": retryable,
        "usage": None,
    }


def outcome(line: dict[str, Any]) -> dict[str, Any]:
    """A result row from one output or error line, tolerating what servers vary on."""
    response, error = line.get("response"), line.get("error")
    if response:
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        if isinstance(body, str):  # some implementations send the body as a JSON string
            try:
                body = json.loads(body)
            except json.JSONDecodeError:
                body = {"error": {"message": body}}
        body = body if isinstance(body, dict) else {}
        if status == 200:
            value, refusal = answer_of(body)
            if value is None:
                reason = refusal or "the response has no content"
                return failed("refusal", str(reason), 200, retryable=False)
            row = {
                "outcome": "succeeded",
                "response": value,
                "error": None,
                "retryable": False,
                "usage": body.get("usage"),
            }
            if cut_short(body):
                row["cut_short"] = True  # stopped at the step's max_tokens: kept, and counted
            return row
        err = body.get("error") if isinstance(body.get("error"), dict) else {}
        status = status or status_in(err.get("message"))
        code = err.get("code") or err.get("type") or (f"http_{status}" if status else UNKNOWN)
        return failed(code, err.get("message") or "", status or None, retryable_status(status))
    err = error if isinstance(error, dict) else {}
    message = str(err.get("message") or "")
    status = status_in(message)
    if status:  # a codeless line whose message carries the status: trust the status
        return failed(
            err.get("code") or f"http_{status}", message, status, retryable_status(status)
        )
    # Non-HTTP failures (batch_expired, batch_cancelled) never ran: send them again. A line
    # with neither a code nor a status is of unknown cause: `unknown_error`, retried once.
    return failed(err.get("code") or UNKNOWN, message, None, True)


def answer_of(body: dict[str, Any]) -> tuple[Any, str | None]:
    """(the stored value, or None and why) of a 200 body, by its shape: a chat completion's
    message content, a Response's output text, or an embedding vector (a list of them for a
    list input)."""
    if body.get("object") == "response" or "output" in body:
        texts, refusal = [], None
        for item in body.get("output") or []:
            for part in item.get("content") or [] if item.get("type") == "message" else []:
                if part.get("type") == "output_text":
                    texts.append(part.get("text") or "")
                elif part.get("type") == "refusal":
                    refusal = part.get("refusal") or "refused"
        return ("".join(texts) if texts and refusal is None else None), refusal
    if body.get("object") == "list" and isinstance(body.get("data"), list):
        vectors = [vector(item.get("embedding")) for item in body["data"]]
        if not vectors:
            return None, "the response holds no embedding"
        return (vectors[0] if len(vectors) == 1 else vectors), None
    message = (body.get("choices") or [{}])[0].get("message") or {}
    return message.get("content"), message.get("refusal")


def cut_short(body: dict[str, Any]) -> bool:
    """An answer that stopped at its output cap (chat: finish_reason "length"; responses:
    status "incomplete" for max_output_tokens)."""
    if body.get("object") == "response" or "output" in body:
        details = body.get("incomplete_details") or {}
        return body.get("status") == "incomplete" and details.get("reason") == "max_output_tokens"
    choices = body.get("choices") or [{}]
    return isinstance(choices[0], dict) and choices[0].get("finish_reason") == "length"


def vector(embedding: Any) -> list[float]:
    """An embedding as floats: `encoding_format: base64` sends little-endian float32 bytes."""
    if isinstance(embedding, str):
        raw = base64.b64decode(embedding)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return list(embedding or [])


def status_in(message: Any) -> int:
    m = STATUS_IN_MESSAGE.search(message) if isinstance(message, str) else None
    return int(m[1]) if m else 0


def retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500 or status == 0


def split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream, split on b"\\n" only."""
    tail = b""
    for chunk in chunks:
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from lines
    if tail:
        yield tail


def parse_line(raw: bytes, n: int) -> dict[str, Any] | None:
    """One output or error line as a dict; a damaged line as {custom_id?, error} (never raises)."""
    if not raw.strip():
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        line = json.loads(text)
        if isinstance(line, dict):
            return line
    except json.JSONDecodeError:
        pass
    m = re.search(r'"custom_id"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    cid = json.loads(f'"{m[1]}"') if m else None
    message = f"line {n} of the batch's file could not be parsed: {text[:200]!r}"
    return {"custom_id": cid, "error": {"code": "unparseable_line", "message": message}}


def file_lines(client: Any, file_id: str | None) -> Iterator[dict[str, Any]]:
    """The lines of an output or error file, streamed; none for a missing file."""
    if not file_id:
        return
    with client.files.with_streaming_response.content(file_id) as response:
        for n, raw in enumerate(split_lines(response.iter_bytes()), 1):
            line = parse_line(raw, n)
            if line is not None:
                yield line


def collect(
    client: Any, batch: Any, wanted: set[str], attempt: int, tried: dict[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """custom_id -> result row for the requests of `wanted` that this ended batch holds.

    A request the batch has no line for failed retryably (`no_result`); one of unknown cause
    (`tried` says how often it already failed so) is retried once, then final.
    """
    rows: dict[str, dict[str, Any]] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        for line in file_lines(client, file_id):
            cid = line.get("custom_id")
            if cid in wanted and (cid not in rows or rows[cid]["outcome"] != "succeeded"):
                rows[cid] = {**outcome(line), "batch_id": batch.id, "attempts": attempt + 1}
    for cid in wanted - rows.keys():
        message = f"batch {batch.id} ended {batch.status} without a line for this request"
        rows[cid] = {**failed("no_result", message, None, True), "batch_id": batch.id}
        rows[cid]["attempts"] = attempt + 1
    for cid, row in rows.items():
        if row["error"] and row["error"]["code"] == UNKNOWN and (tried or {}).get(cid, 0) >= 1:
            row["retryable"] = False
    return rows
