"""Gemini's Batch API behind the provider seam (provider.py), through the official
`google-genai` SDK. Facts: /work/shared/reference/gemini-batch-api/FACTS.md (sections below)
and docs/api-facts-gemini.md. The lines themselves (requests out, results in): gemini_shape.py.

- The key is read as the SDK reads it: GOOGLE_API_KEY, else GEMINI_API_KEY (environment, then
  .env); the server is GOOGLE_GEMINI_BASE_URL, else the `base_url:` meant for the step
  (Config.base_url), else Google's.
  A missing or rejected key is one line naming the variable (§1.1, §7).
- A chunk file holds Gemini's own `{key, request}` lines (gemini_shape.py), sent as they are.
  One that fits an inline create (§3.3: under 20 MB, `inline_max`) goes inline: no upload, no
  file to tidy, one call; its "file id" is local (the chunk's path and sha256, as Anthropic's,
  and the create refuses bytes that changed since). A larger one is uploaded byte for byte
  through the File API (§5: 2 GB a file); the file's display name carries the upload's name
  and the chunk's size, which is what submission.find_upload matches. Either way the job's
  display name carries our label, so a create that got no answer is found in the list.
- A batch's `display_name` is its label: `br <chunk sha256> <attempt> <step>`, so a rerun, or
  another machine, recognises it in the list (Gemini batches have no metadata).
- States: the wire says `BATCH_STATE_*`, the SDK `JOB_STATE_*` (§4.2); both are mapped onto the
  seam's words (STATES). A job pending or running 48 hours is EXPIRED with no results: its
  requests then have no line and go again (provider.collect).
- Reads (get, list) take the Operation as the wire has it, through the SDK's own transport: the
  SDK's BatchJob drops what the engine needs for the Developer API (batchStats, the input file,
  the reason a job failed; §4.3). Creates and uploads go without the SDK's retries: submission.
  once decides when to try again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from br.batches import gemini_shape
from br.batches.client import load_env
from br.batches.gemini_batch import EXPIRY, batch_of, display_name, seconds
from br.batches.provider import (
    TERMINAL,
    Batch,
    Counts,
    Label,
    Limits,
    NotFound,
    Refused,
    Trouble,
    Upload,
    local_bytes,
)
from br.cli import UserError, note
from br.config import Config

GOOGLE_HOST = "generativelanguage.googleapis.com"
DEFAULT_BASE_URL = f"https://{GOOGLE_HOST}/"
KEY_NAMES = ("GOOGLE_API_KEY", "GEMINI_API_KEY")  # the SDK's order (§1.1)
# An inline create is kept "under 20 MB" (§3.3; UNVERIFIED MB or MiB: the smaller). A chunk is
# sent inline if its create body (its lines, each's key again in its metadata, the envelope)
# fits; BR_GEMINI_INLINE_BYTES lowers the bound (0: every chunk through the File API).
MAX_INLINE_BYTES = 20_000_000
ENVELOPE_BYTES = 1024  # the create's own fields around the requests (a 128-char display name)
MAX_FILE_BYTES = 2 * 1000**3  # an input file (§3.2; UNVERIFIED GB or GiB: the smaller)
LOCAL = "local:"  # the "file id" of a chunk sent inline
# UNVERIFIED (§3.3): no per-batch request limit is published; OpenAI's 50,000 is kept.
LIMITS = Limits(max_requests=50_000, max_file_bytes=MAX_FILE_BYTES, max_embedding_inputs=0)


class Gemini:
    """The Provider of Gemini's Batch API (the Developer API, with an API key)."""

    name = "gemini"  # as `provider:` names it
    limits = LIMITS
    reshapes = True  # chunk lines are Gemini's `{key, request}`, not the pipeline's
    recall = EXPIRY  # an earlier run's batch, by its display name (recall.py): jobs end in 48h

    def __init__(self, config: Config | None = None) -> None:
        self.config = config
        self._clients: dict[bool, Any] = {}
        self.key_name = KEY_NAMES[1]

    # ------------------------------------------------------------------ the client

    @property
    def base_url(self) -> str:
        data = self.config.data if self.config else {}
        return os.environ.get("GOOGLE_GEMINI_BASE_URL") or data.get("base_url") or DEFAULT_BASE_URL

    @property
    def where(self) -> str:
        return self.base_url.rstrip("/") + "/"

    def client(self, retries: bool = True) -> Any:
        """The SDK's client; without retries for the calls that pay (uploads and creates)."""
        if retries not in self._clients:
            from google import genai
            from google.genai import types

            options: dict[str, Any] = {"base_url": self.where}
            from_config = not os.environ.get("GOOGLE_GEMINI_BASE_URL")
            if from_config and urlparse(self.where).hostname != GOOGLE_HOST and not self._clients:
                note(
                    f"warning: the config's base_url sends your Gemini key to {self.where}; "
                    "remove base_url: unless you trust that host"
                )
            if retries:
                options["retry_options"] = types.HttpRetryOptions(attempts=5, max_delay=30)
            self._clients[retries] = genai.Client(
                api_key=self.api_key(), http_options=types.HttpOptions(**options)
            )
        return self._clients[retries]

    def api_key(self) -> str:
        load_env()
        for name in KEY_NAMES:
            if os.environ.get(name):
                self.key_name = name
                return str(os.environ[name])
        raise UserError(
            "GEMINI_API_KEY is not set: export GEMINI_API_KEY=... (or GOOGLE_API_KEY, or put it "
            "in .env); the key is never written to build/ or logs"
        )

    @contextlib.contextmanager
    def calling(self, missing: bool = False) -> Iterator[None]:
        """The SDK's errors in the seam's words: a rejected key is one line naming its
        variable; with `missing`, a 404 (and the File API's 403 for a missing file) is
        NotFound."""
        from google.genai import errors

        try:
            yield
        except errors.APIError as e:
            message = str(e.message or e)
            reasons = json.dumps(e.details) if e.details else ""
            if e.code == 401 or "API_KEY_INVALID" in reasons or "api key" in message.lower():
                raise UserError(
                    f"the Gemini API rejected the key in {self.key_name} ({e.code} {e.status}); "
                    f"check it, or unset {self.key_name}"
                ) from e
            if missing and e.code in (403, 404):
                raise NotFound(message) from e
            raise

    def operation(self, path: str) -> dict[str, Any]:
        """A GET through the SDK's transport, as the wire has it (see the top)."""
        response = self.client()._api_client.request("get", path, {})
        return json.loads(response.body) if response.body else {}

    # ------------------------------------------------------------------ submit

    def shape(self, request: dict[str, Any]) -> dict[str, Any]:
        return gemini_shape.shape(request)

    @property
    def inline_max(self) -> int:
        given = os.environ.get("BR_GEMINI_INLINE_BYTES", "")
        return min(int(given), MAX_INLINE_BYTES) if given.isdigit() else MAX_INLINE_BYTES

    def upload(self, path: Path, filename: str) -> str:
        """The chunk's "file id": a local one if it fits inline (nothing is sent), else the
        File API's name for its bytes, uploaded as they are (display name: name and size)."""
        size = path.stat().st_size
        if size + ENVELOPE_BYTES <= self.inline_max:
            data = path.read_bytes()
            if len(inline_body(data, "")) + ENVELOPE_BYTES <= self.inline_max:
                return f"{LOCAL}{path.resolve()}#{hashlib.sha256(data).hexdigest()}"
        config = {"mime_type": "jsonl", "display_name": f"{filename} {size}"}
        with self.calling(), open(path, "rb") as f:
            return str(self.client(retries=False).files.upload(file=f, config=config).name)

    def label_fields(self, label: Label) -> dict[str, str]:
        """What the ledger notes of the label: the display name the batch carries."""
        return {"display_name": display_name(label), "model": label.model,
                "chunk": label.chunk, "tokens": str(label.tokens)}  # fmt: skip

    def create(self, file_id: str, endpoint: str, label: Label) -> Batch:
        """The job, through the SDK's transport with the body as the wire has it (§3.1): the
        SDK's own create would re-map the requests' fields, and answers a BatchJob without
        what batch_of reads."""
        from google.genai import errors

        name = display_name(label)
        if file_id.startswith(LOCAL):
            _, data = local_bytes(file_id.removeprefix(LOCAL))
            body = json.loads(inline_body(data, name))
        else:
            body = {"batch": {"displayName": name, "inputConfig": {"fileName": file_id}}}
        model = label.model if label.model.startswith("models/") else f"models/{label.model}"
        try:
            with self.calling():
                response = self.client(retries=False)._api_client.request(
                    "post", f"{model}:batchGenerateContent", body
                )
        except errors.ClientError as e:
            if e.code == 429:
                raise
            raise Refused(str(e.message or e)) from e  # nothing was made
        op = json.loads(response.body) if response.body else {}
        batch = batch_of(op)
        return replace(batch, key=batch.key or (label.sha, label.attempt))

    # ------------------------------------------------------------------ find, poll

    def uploads(self) -> Iterator[Upload]:
        with self.calling():
            for f in self.client().files.list(config={"page_size": 100}):
                name, _, size = str(f.display_name or "").rpartition(" ")
                state = str(getattr(f.state, "value", f.state) or "ACTIVE")
                yield Upload(
                    str(f.name),
                    name,
                    int(size) if size.isdigit() else -1,
                    seconds(f.create_time),
                    state in ("ACTIVE", "STATE_UNSPECIFIED"),
                )

    def pages(self, size: int = 100) -> Iterator[list[Batch]]:
        """The list, newest first as the service gives it (UNVERIFIED for the real one, §2)."""
        for ops in self.raw_pages(size):
            yield [batch_of(op) for op in ops]

    def raw_pages(self, size: int) -> Iterator[list[dict[str, Any]]]:
        token = ""
        while True:
            query = f"batches?pageSize={size}" + (f"&pageToken={token}" if token else "")
            with self.calling():
                page = self.operation(query)
            yield page.get("operations") or []
            token = page.get("nextPageToken") or ""
            if not token:
                return

    def retrieve(self, batch_id: str) -> Batch:
        return batch_of(self.raw(batch_id))

    def raw(self, batch_id: str) -> dict[str, Any]:
        name = batch_id if batch_id.startswith("batches/") else f"batches/{batch_id}"
        if not re.fullmatch(r"batches/[A-Za-z0-9_-]+", name):
            raise NotFound(f"{batch_id!r} is not a Gemini batch name (batches/...)")
        with self.calling(missing=True):
            return self.operation(name)

    # ------------------------------------------------------------------ results

    def result_rows(self, batch: Batch) -> Iterator[tuple[str | None, dict[str, Any]]]:
        """Every result of an ended batch, by its key: the responses file, or inline answers
        (a batch made elsewhere); never by order."""
        if batch.output_file_id:
            with self.calling(missing=True):
                data = self.client().files.download(file=batch.output_file_id)
            yield from gemini_shape.file_rows(bytes(data))
            return
        if batch.status == "completed":
            output = (self.raw(batch.id).get("metadata") or {}).get("output") or {}
            inline = gemini_shape.pick(output, "inlinedResponses") or {}
            yield from gemini_shape.inline_rows(gemini_shape.pick(inline, "inlinedResponses"))

    def results_kept(self, batch: Batch) -> bool:
        """Its responses file is still there (files live 48 hours, §5; UNVERIFIED for a
        generated one). One call."""
        if batch.status not in TERMINAL or not batch.output_file_id:
            return True
        try:
            with self.calling(missing=True):
                self.client().files.get(name=batch.output_file_id)
        except NotFound:
            return False
        return True

    # ------------------------------------------------------------------ account

    def cancel(self, batch_id: str) -> Batch:
        from google.genai import errors

        try:
            with self.calling(missing=True):
                self.client().batches.cancel(name=batch_id)
        except errors.ClientError as e:
            raise Refused(str(e.message or e)) from e  # ended already, say
        return self.retrieve(batch_id)

    def delete_file(self, file_id: str) -> None:
        with self.calling(missing=True):
            self.client().files.delete(name=file_id)

    def download(self, file_id: str) -> bytes:
        """An earlier batch's requests, when its chunk file is gone: the SDK gives no uploaded
        file back (§5), and an inline job keeps none (its `inputConfig` is not echoed, §4.1)."""
        what = f"uploaded files back ({file_id})" if file_id else "an inline job's requests back"
        raise UserError(
            f"the Gemini API does not give {what}; keep the chunk files in build/ until their "
            "batches are fetched"
        )

    def describe(self, batch_id: str, nones: bool = True) -> dict[str, Any]:
        """The Operation as the API shows it (`make check`), inline answers counted, not shown."""
        op = self.raw(batch_id)
        for holder in (op.get("metadata") or {}).get("output"), op.get("response"):
            inline = holder.get("inlinedResponses") if isinstance(holder, dict) else None
            if isinstance(inline, dict):
                holder["inlinedResponses"] = f"{len(inline.get('inlinedResponses') or [])} answers"
        return op

    def listing(self, limit: int) -> Iterator[dict[str, Any]]:
        """The last `limit` batches, newest first (`make status`): the table's fields in the
        seam's words, with Gemini's own name, state and display name beside them."""
        shown = 0
        for ops in self.raw_pages(min(limit, 100)):
            for op in ops:
                if shown >= limit:
                    return
                batch, meta = batch_of(op), op.get("metadata") or {}
                counts = batch.request_counts or Counts()
                step = str(meta.get("displayName") or "").split(" ", 3)[3:] if batch.key else []
                yield {
                    "id": batch.id,
                    "status": batch.status,
                    "created_at": int(batch.created_at),
                    "request_counts": {
                        "total": counts.total,
                        "completed": counts.completed,
                        "failed": counts.failed,
                    },  # fmt: skip
                    "metadata": {"br_step": step[0] if step else ""},
                    "state": meta.get("state"),
                    "display_name": meta.get("displayName"),
                    "model": meta.get("model"),
                }
                shown += 1

    def trouble(self, error: Exception) -> Trouble | None:
        from google.genai import errors

        if isinstance(error, errors.APIError) and error.code == 429:
            return Trouble(unclear=False)  # observed without Retry-After (§3.3)
        if isinstance(error, errors.ServerError) or (
            isinstance(error, errors.APIError) and error.code == 408
        ):
            return Trouble(unclear=True)
        if isinstance(error, (*transport_errors(), ConnectionError)):
            return Trouble(unclear=True)  # a dropped connection: it may have gone through
        return None


def transport_errors() -> tuple[type[Exception], ...]:
    """The SDK's connection errors: httpx's, or its fork httpx2's (whichever it runs on)."""
    found = []
    for name in ("httpx", "httpx2"):
        with contextlib.suppress(ImportError):
            found.append(__import__(name).TransportError)
    return tuple(found)


def inline_body(chunk: bytes, name: str) -> str:
    """The JSON of an inline create of a chunk's lines (§3.1): each its request, with its key
    in its metadata (where the inline answers echo it, §6.1). Encoded as the SDK's transport
    encodes a body (json.dumps' defaults: ASCII-escaped, ", " and ": "), so its length is its
    size on the wire."""
    lines = [json.loads(raw) for raw in chunk.decode("utf-8-sig").split("\n") if raw.strip()]
    requests = [{"request": x["request"], "metadata": {"key": x["key"]}} for x in lines]
    body = {"batch": {"displayName": name, "inputConfig": {"requests": {"requests": requests}}}}
    return json.dumps(body)
