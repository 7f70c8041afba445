"""Gemini's Batch API behind the provider seam (provider.py), through the official
`google-genai` SDK. Facts: /work/shared/reference/gemini-batch-api/FACTS.md (sections below)
and docs/api-facts-gemini.md. The lines themselves (requests out, results in): gemini_shape.py.

- The key is read as the SDK reads it: GOOGLE_API_KEY, else GEMINI_API_KEY (environment, then
  .env); the server is GOOGLE_GEMINI_BASE_URL, else the `base_url:` meant for the step
  (Config.base_url), else Google's.
  A missing or rejected key is one line naming the variable (§1.1, §7).
- Every chunk goes through the File API (§5), never inline: one path for every size (a file
  holds 2 GB, an inline create 20 MB, §3.3), the results come back as a file read once (inline
  answers ride inside the batch object, so every poll and every page of the list would carry
  them again), and the upload is listable, so an unanswered upload is found, not repeated.
  The chunk is shaped line by line as it is uploaded; the file's display name carries the
  upload's name and the chunk's size, which is what submission.find_upload matches.
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
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from br.batches import gemini_shape
from br.batches.gemini_batch import EXPIRY, batch_of, display_name, seconds, status_of
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
)
from br.cli import UserError, note
from br.config import Config

GOOGLE_HOST = "generativelanguage.googleapis.com"
DEFAULT_BASE_URL = f"https://{GOOGLE_HOST}/"
KEY_NAMES = ("GOOGLE_API_KEY", "GEMINI_API_KEY")  # the SDK's order (§1.1)
MAX_INLINE_BYTES = 20 * 1024 * 1024  # an inline create (§3.3); we always upload instead
MAX_FILE_BYTES = 2 * 1000**3  # an input file (§3.2; UNVERIFIED GB or GiB: the smaller)
# UNVERIFIED (§3.3): no per-batch request limit is published; OpenAI's 50,000 is kept.
LIMITS = Limits(max_requests=50_000, max_file_bytes=MAX_FILE_BYTES, max_embedding_inputs=0)


class Gemini:
    """The Provider of Gemini's Batch API (the Developer API, with an API key)."""

    limits = LIMITS
    recall = EXPIRY  # an earlier run's batch, by its display name (recall.py): files live 48h

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
        from dotenv import find_dotenv, load_dotenv

        load_dotenv(find_dotenv(), override=False)
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

    def upload(self, path: Path, filename: str) -> str:
        """The chunk, shaped, as a File; its display name keeps the chunk's size."""
        data = io.BytesIO()
        with open(path, encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    shaped = self.shape(json.loads(line))
                    data.write(json.dumps(shaped, ensure_ascii=False).encode() + b"\n")
        data.seek(0)
        config = {"mime_type": "jsonl", "display_name": f"{filename} {path.stat().st_size}"}
        with self.calling():
            return str(self.client(retries=False).files.upload(file=data, config=config).name)

    def label_fields(self, label: Label) -> dict[str, str]:
        """What the ledger notes of the label: the display name the batch carries."""
        return {"display_name": display_name(label), "model": label.model,
                "chunk": label.chunk, "tokens": str(label.tokens)}  # fmt: skip

    def create(self, file_id: str, endpoint: str, label: Label) -> Batch:
        from google.genai import errors

        try:
            with self.calling():
                job = self.client(retries=False).batches.create(
                    model=label.model, src=file_id, config={"display_name": display_name(label)}
                )
        except errors.ClientError as e:
            if e.code == 429:
                raise
            raise Refused(str(e.message or e)) from e  # nothing was made
        created = seconds(job.create_time)
        return Batch(
            id=str(job.name),
            status=status_of(job.state),
            created_at=created,
            expires_at=created + EXPIRY if created else None,
            input_file_id=file_id,
            key=(label.sha, label.attempt),
        )

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
        raise UserError(
            f"the Gemini API does not give uploaded files back ({file_id}); keep the chunk "
            "files in build/ until their batches are fetched"
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
