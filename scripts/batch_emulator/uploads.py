"""``POST /v1/files``: a multipart upload streamed to disk within the API's size limits.

docs/api-facts.md "Files": individual files up to 512 MB, batch input files up to 200 MB
(refused with a 413 as soon as the bytes pass the limit); ``purpose=batch`` files must be
``.jsonl``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import python_multipart
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from . import facts
from .exceptions import ApiError, BodyTooLarge, InvalidType, InvalidValue, MissingParameter
from .lifecycle import Emulator
from .store import Record

FEED_BYTES = 1 << 20  # bytes handed to the parser per thread hop


def check_filename(filename: str, purpose: str) -> None:
    """The Batch API takes ``.jsonl`` files (docs/api-facts.md "Files").

    UNVERIFIED: a name without any extension (what the SDK sends for raw bytes) is accepted;
    the observed refusal is for another extension (``notes.txt``).
    """
    if purpose != "batch" or filename.endswith(".jsonl"):
        return
    stem, dot, _ = filename.rpartition(".")
    if not dot or not stem:
        return
    raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl")


def expires_after(fields: dict[str, str]) -> int | None:
    """``expires_after[anchor]`` / ``expires_after[seconds]`` in the SDK's bracket form."""
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidValue("expires_after.anchor", anchor, ("created_at",))
    try:
        value = int(seconds or "")
    except ValueError:
        raise InvalidType("expires_after.seconds", "an integer", seconds) from None
    low, high = facts.EXPIRES_AFTER_RANGE
    if not low <= value <= high:
        raise ApiError(
            400,
            f"Invalid 'expires_after.seconds': expected a value between {low} and {high}, but "
            f"got {value} instead.",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return value


class Upload:
    """One multipart body being parsed: its fields, its file parts, their sizes."""

    def __init__(self, tmp_dir: Path, boundary: bytes) -> None:
        self.fields: dict[str, str] = {}
        self.files: list[Any] = []
        self.parser = python_multipart.FormParser(
            "multipart/form-data",
            self._on_field,
            self.files.append,
            boundary=boundary,
            config={
                "UPLOAD_DIR": str(tmp_dir),
                "UPLOAD_DELETE_TMP": False,
                "MAX_MEMORY_FILE_SIZE": 1 << 20,
            },
        )

    def _on_field(self, f: Any) -> None:
        name = (f.field_name or b"").decode("utf-8", "replace")
        self.fields[name] = (f.value or b"").decode("utf-8", "replace")

    def feed(self, data: bytes) -> None:
        try:
            self.parser.write(data)
        except python_multipart.exceptions.FormParserError as exc:
            raise ApiError(400, f"Could not parse multipart form: {exc}") from None

    def finish(self) -> None:
        try:
            self.parser.finalize()
        except python_multipart.exceptions.FormParserError as exc:
            raise ApiError(400, f"Could not parse multipart form: {exc}") from None

    def the_file(self) -> Any:
        return next((u for u in self.files if u.field_name == b"file"), None)

    def stage(self, upload: Any, staged: Path) -> None:
        """Move the file part (in memory or already on disk) to ``staged``, synced."""
        if upload.in_memory:
            upload.file_object.seek(0)
            with open(staged, "wb") as fh:
                shutil.copyfileobj(upload.file_object, fh)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            upload.file_object.flush()
            os.fsync(upload.file_object.fileno())
            upload.file_object.close()
            os.replace(os.fsdecode(upload.actual_file_name), staged)

    def cleanup(self) -> None:
        for u in self.files:
            with contextlib.suppress(Exception):
                u.file_object.close()
            name = getattr(u, "actual_file_name", None)
            if name:
                with contextlib.suppress(OSError):
                    os.unlink(os.fsdecode(name))


async def _receive(request: Request, upload: Upload) -> None:
    """Stream the body into the parser, refusing it once it passes the limits."""
    limit = facts.MAX_FILE_BYTES + facts.MULTIPART_SLACK
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    pending = bytearray()
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(limit)
        pending += chunk
        if len(pending) >= FEED_BYTES:
            await run_in_threadpool(upload.feed, bytes(pending))
            pending.clear()
            # The SDK sends the purpose before the file: a batch upload is refused early.
            if seen > facts.MAX_BATCH_FILE_BYTES + facts.MULTIPART_SLACK:
                _batch_limit(upload, seen)
    await run_in_threadpool(upload.feed, bytes(pending))
    await run_in_threadpool(upload.finish)
    part = upload.the_file()
    _batch_limit(upload, part.size if part is not None else 0)


def _batch_limit(upload: Upload, size: int) -> None:
    if upload.fields.get("purpose") == "batch" and size > facts.MAX_BATCH_FILE_BYTES:
        # docs/api-facts.md "Files": one observed refusal, a 413 with this text.
        raise ApiError(
            413,
            f"The batch input file is larger than the {facts.MAX_BATCH_FILE_BYTES} maximum.",
            code="file_too_large",
            headers={"connection": "close"},
        )


async def create_file(request: Request, emu: Emulator) -> Record:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(400, "Invalid Content-Type header: expected multipart/form-data.")
    upload = Upload(emu.store.tmp_dir, params[b"boundary"])
    staged = emu.store.tmp_dir / f"upload-{secrets.token_hex(8)}"
    try:
        await _receive(request, upload)
        part = upload.the_file()
        purpose = upload.fields.get("purpose")
        if part is None:
            raise MissingParameter("file")
        if purpose is None:
            raise MissingParameter("purpose")
        if purpose not in facts.UPLOAD_PURPOSES:
            raise InvalidValue("purpose", purpose, facts.UPLOAD_PURPOSES)
        filename = os.path.basename((part.file_name or b"upload").decode("utf-8", "replace"))
        check_filename(filename, purpose)
        seconds = expires_after(upload.fields)
        await run_in_threadpool(upload.stage, part, staged)
        now = time.time()
        if seconds is not None:
            expires_at: int | None = int(now) + seconds
        elif purpose == "batch":
            expires_at = int(now) + facts.BATCH_FILE_TTL
        else:
            expires_at = None

        def add() -> Record:
            with emu.lock:
                rec = emu.add_file(
                    filename=filename,
                    purpose=purpose,
                    source=staged,
                    now=now,
                    expires_at=expires_at,
                )
                return emu.store.file_view(rec)

        return await run_in_threadpool(add)
    finally:
        upload.cleanup()
        with contextlib.suppress(OSError):
            staged.unlink()
