"""OpenAI's Batch API behind the provider seam (provider.py): the SDK calls, the metadata that
labels our batches, and what a batch's output and error lines mean.

Our batches carry deterministic metadata (the step, the sha256 of the chunk file, the attempt,
the model, the estimated tokens, the chunk's name), so a rerun, or another machine, recognises
them in the batch list. The client comes from client.py (the key and base URL), made on first
use: a rerun with nothing to do needs no key. Uploads and creates use it without the SDK's
retries (`bare`): submission.once decides when to try again.

Result lines are split on b"\\n" only (a record may hold U+2028, U+2029 or U+0085, which
Python's str.splitlines and the SDK's iter_lines treat as line ends), and a line that cannot be
parsed becomes an error row for its request, never a crash: a paid batch must stay reachable.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from br.batches.client import make_client
from br.batches.provider import (
    TERMINAL,
    UNKNOWN,
    Batch,
    Counts,
    Label,
    Limits,
    NotFound,
    Problem,
    Refused,
    SDKClient,
    Unlistable,
    Upload,
    failed,
)
from br.limits import MAX_EMBEDDING_INPUTS, MAX_FILE_BYTES, MAX_REQUESTS
from br.records import LENIENT, saw_nonfinite

# Metadata keys that identify our batches (deterministic, so a rerun can recognise them).
META_STEP = "br_step"
META_CHUNK = "br_chunk_sha256"
META_TOKENS = "br_est_tokens"
META_MODEL = "br_model"
META_ATTEMPT = "br_attempt"
META_NAME = "br_chunk"
UNLISTABLE = {404, 405, 501}  # a server without GET /v1/files or /v1/batches
RETRYABLE_STATUS = {408, 409, 429}
# "Error code: 400 - {...}": how the openai SDK words an APIStatusError, and what some
# OpenAI-compatible servers write as the only trace of the status in an error line.
STATUS_IN_MESSAGE = re.compile(r"\b(?:Error code|status(?: code)?)[:= ]+([1-5]\d\d)\b", re.I)


class OpenAI(SDKClient):
    """The Provider of OpenAI's Batch API (and of servers that speak it: OPENAI_BASE_URL)."""

    name = "openai"  # as `provider:` names it (the ledger notes who made each batch)
    limits = Limits(MAX_REQUESTS, MAX_FILE_BYTES, MAX_EMBEDDING_INPUTS)

    def make_client(self) -> Any:
        return make_client(self.config)

    def shape(self, request: dict[str, Any]) -> dict[str, Any]:
        """requests.jsonl's lines are OpenAI's batch lines already: custom_id, method, url, body."""
        return request

    def upload(self, path: Path, filename: str) -> str:
        return str(self.bare.files.create(file=(filename, path.read_bytes()), purpose="batch").id)

    def label_fields(self, label: Label) -> dict[str, str]:
        """The batch's metadata (each value at most 512 characters)."""
        return {
            META_STEP: label.step[:512],
            META_CHUNK: label.sha,
            META_ATTEMPT: str(label.attempt),
            META_MODEL: label.model[:512],
            META_TOKENS: str(label.tokens),
            META_NAME: label.chunk[:512],
        }

    def create(self, file_id: str, endpoint: str, label: Label) -> Batch:
        import openai

        try:
            return batch_of(
                self.bare.batches.create(
                    input_file_id=file_id,
                    endpoint=endpoint,  # type: ignore[arg-type]
                    completion_window="24h",
                    metadata=self.label_fields(label),
                )
            )
        except openai.BadRequestError as e:
            raise Refused(e.message) from e

    def uploads(self) -> Iterator[Upload]:
        with unlistable():
            for f in self.client.files.list(purpose="batch", order="desc", limit=100):
                yield Upload(f.id, f.filename, f.bytes, f.created_at, f.status != "error")

    def pages(self, size: int = 100) -> Iterator[list[Batch]]:
        with unlistable():
            for page in self.client.batches.list(limit=size).iter_pages():
                yield [batch_of(b) for b in page.data]

    def retrieve(self, batch_id: str) -> Batch:
        with not_found():
            return batch_of(self.client.batches.retrieve(batch_id))

    def result_rows(self, batch: Batch) -> Iterator[tuple[str | None, dict[str, Any]]]:
        with not_found():
            for file_id in (batch.output_file_id, batch.error_file_id):
                for line in file_lines(self.client, file_id):
                    yield line.get("custom_id"), outcome(line)

    def results_kept(self, batch: Batch) -> bool:
        """An ended batch still holds its answers on the server (make tidy, or 30 days, may
        have deleted them). One call."""
        if batch.status not in TERMINAL or not batch.output_file_id:
            return True
        try:
            with not_found():
                self.client.files.retrieve(batch.output_file_id)
        except NotFound:
            return False
        return True

    def cancel(self, batch_id: str) -> Batch:
        return batch_of(self.cancelled(lambda client: client.batches.cancel(batch_id)))

    def delete_file(self, file_id: str) -> None:
        with not_found():
            self.client.files.delete(file_id)

    def download(self, file_id: str) -> bytes:
        return bytes(self.client.files.content(file_id).read())

    def describe(self, batch_id: str, nones: bool = True) -> dict[str, Any]:
        """A batch as the API shows it (`make check`), without its empty fields unless `nones`."""
        with not_found():
            batch = self.client.batches.retrieve(batch_id)
        return dict(batch.model_dump(mode="json", exclude_none=not nones))

    def listing(self, limit: int) -> Iterator[dict[str, Any]]:
        """The last `limit` batches as the API shows them, newest first (`make status`)."""
        for batch in last_batches(self.client, limit):
            yield batch.model_dump(mode="json")


def last_batches(client: Any, limit: int) -> list[Any]:
    """The last `limit` batches on the account, newest first, as the SDK's objects."""
    return list(itertools.islice(client.batches.list(limit=min(limit, 100)), limit))


def batch_of(b: Any) -> Batch:
    """The common Batch of an SDK batch; `key` from our metadata, when the server echoes it."""
    meta = b.metadata or {}
    attempt = str(meta.get(META_ATTEMPT, "0"))
    sha = meta.get(META_CHUNK)
    counts = b.request_counts
    errors = b.errors.data if b.errors and b.errors.data else []
    return Batch(
        id=b.id,
        status=b.status,
        created_at=b.created_at,
        expires_at=getattr(b, "expires_at", None),
        in_progress_at=getattr(b, "in_progress_at", None),
        request_counts=Counts(counts.total or 0, counts.completed or 0, counts.failed or 0)
        if counts
        else None,
        input_file_id=b.input_file_id,
        output_file_id=b.output_file_id,
        error_file_id=b.error_file_id,
        key=(sha, int(attempt)) if sha and attempt.isdigit() else None,
        problems=tuple(Problem(str(e.code), str(e.message), e.line) for e in errors),
    )


@contextlib.contextmanager
def not_found() -> Iterator[None]:
    import openai

    try:
        yield
    except openai.NotFoundError as e:
        raise NotFound(e.message) from e


@contextlib.contextmanager
def unlistable() -> Iterator[None]:
    import openai

    try:
        yield
    except openai.APIStatusError as e:
        if e.status_code in UNLISTABLE:
            raise Unlistable(f"this server cannot list these ({e.status_code})") from e
        raise


# ----------------------------------------------------------------------------- result lines


def outcome(line: dict[str, Any]) -> dict[str, Any]:
    """The common row of one output or error line, tolerating what servers vary on."""
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
        values = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        if not all(map(math.isfinite, values)):
            saw_nonfinite()  # its row is written with NaN as json writes it (records.py)
        return values
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


def decoded(raw: bytes) -> Any:
    """A line's JSON value, None if it is not JSON. orjson first, 2.5 times json's speed; what
    it refuses (NaN, 1e400, a lone surrogate, bytes that are not UTF-8) json reads (NaN noted,
    1e400 kept as written). orjson reads an integer past 64 bits as a float: no field kept
    from a line holds one (texts, token counts, codes), a usage count past 2^64 aside."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return LENIENT.decode(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return None


def parse_line(raw: bytes, n: int) -> dict[str, Any] | None:
    """One output or error line as a dict; a damaged line as {custom_id?, error} (never raises)."""
    if not raw.strip():
        return None
    line = decoded(raw)
    if isinstance(line, dict):
        return line
    text = raw.decode("utf-8", errors="replace")
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
