"""Gemini's File API: the model, without HTTP (docs/api-facts-gemini.md "Files").

Uploaded files (the resumable protocol: a session, then chunks at offsets, the last one
``finalize``) and generated ones (a batch's responses file, ``files/batch-<batch id>``). A
file lives 48 hours. Callers hold the emulator's lock.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import string
from pathlib import Path
from typing import Any

from .provider_errors import GoogleError
from .provider_store import Record, Records, rfc3339

FILE_TTL = 48 * 3600
MAX_FILE_BYTES = 2 * 1024**3  # "2 GB" per input file; UNVERIFIED whether GB or GiB
ID_CHARS = string.ascii_lowercase + string.digits


def new_name(length: int = 12) -> str:
    return "".join(secrets.choice(ID_CHARS) for _ in range(length))


def file_id(name: str) -> str:
    """``abc`` of ``files/abc``, ``abc``, or ``abc:download``."""
    return name.removeprefix("files/").split(":", 1)[0]


class GeminiFiles:
    def __init__(self, root: Path) -> None:
        self.records = Records(root / "files")
        self.staging = root / "uploads"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.sessions: dict[str, dict[str, Any]] = {}

    def get(self, name: str, now: float) -> Record:
        rec = self.records.items.get(file_id(name))
        if rec is None or rec["expires"] <= now:
            # UNVERIFIED: the answer for a file that does not exist (or expired).
            raise GoogleError(
                403,
                f"You do not have permission to access the File {file_id(name)} or it may "
                "not exist.",
                "PERMISSION_DENIED",
            )
        return rec

    def data_path(self, rec: Record) -> Path:
        return self.records.sidecar(rec["_id"], "data")

    # ---- uploads -----------------------------------------------------------------------

    def start(self, meta: dict[str, Any], size: int | None, mime: str | None) -> str:
        if size is not None and size > MAX_FILE_BYTES:
            raise GoogleError(400, f"File size {size} exceeds the limit of {MAX_FILE_BYTES} bytes.")
        upload_id = secrets.token_urlsafe(24)
        self.sessions[upload_id] = {"meta": meta, "size": size, "mime": mime, "received": 0}
        (self.staging / upload_id).write_bytes(b"")
        return upload_id

    def session(self, upload_id: str) -> dict[str, Any]:
        found = self.sessions.get(upload_id)
        if found is None:
            raise GoogleError(404, "Upload session not found or expired.")
        return found

    def staged(self, upload_id: str) -> Path:
        return self.staging / upload_id

    def finish(self, upload_id: str, now: float) -> Record:
        sess = self.sessions.pop(upload_id)
        meta = sess["meta"] if isinstance(sess["meta"], dict) else {}
        wanted = str(meta.get("name") or "")
        rec_id = file_id(wanted) if wanted else new_name()
        if rec_id in self.records.items:
            raise GoogleError(409, f"File files/{rec_id} already exists.")
        mime = (
            meta.get("mimeType")
            or meta.get("mime_type")
            or sess["mime"]
            or "application/octet-stream"
        )
        display = meta.get("displayName") or meta.get("display_name")
        rec = self._add(rec_id, mime, display, "UPLOADED", now)
        os.replace(self.staged(upload_id), self.data_path(rec))
        self._describe(rec)
        return rec

    def add_generated(self, rec_id: str, lines: list[bytes], now: float) -> Record:
        rec = self._add(rec_id, "application/jsonl", None, "GENERATED", now)
        self.records.write_bytes(rec_id, "data", lines)
        self._describe(rec)
        return rec

    def _add(self, rec_id: str, mime: str, display: Any, source: str, now: float) -> Record:
        rec = {"_id": rec_id, "mime": mime, "display": display, "source": source}
        rec.update({"created": now, "expires": now + FILE_TTL, "size": 0, "sha256": ""})
        return rec

    def _describe(self, rec: Record) -> None:
        digest = hashlib.sha256()
        with open(self.data_path(rec), "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        rec["size"] = self.data_path(rec).stat().st_size
        rec["sha256"] = base64.b64encode(digest.hexdigest().encode()).decode()
        self.records.add(rec)

    def delete(self, name: str, now: float) -> None:
        rec = self.get(name, now)
        self.records.delete(rec["_id"])

    def drop_session(self, upload_id: str) -> None:
        self.sessions.pop(upload_id, None)
        with contextlib.suppress(OSError):
            self.staged(upload_id).unlink()

    # ---- views -------------------------------------------------------------------------

    def view(self, rec: Record, root: str, version: str) -> dict[str, Any]:
        name = f"files/{rec['_id']}"
        out: dict[str, Any] = {"name": name}
        if rec["display"]:
            out["displayName"] = rec["display"]
        out.update(
            {
                "mimeType": rec["mime"],
                "sizeBytes": str(rec["size"]),
                "createTime": rfc3339(rec["created"]),
                "updateTime": rfc3339(rec["created"]),
                "expirationTime": rfc3339(rec["expires"]),
                "sha256Hash": rec["sha256"],
                "uri": f"{root}/{version}/{name}",
                "state": "ACTIVE",
                "source": rec["source"],
            }
        )
        if rec["source"] == "GENERATED":
            out["downloadUri"] = f"{root}/download/{version}/{name}:download?alt=media"
        return out

    def page(self, size: int, token: str | None, now: float) -> tuple[list[Record], str | None]:
        items = [r for r in self.records.newest_first() if r["expires"] > now]
        return paginate(items, size, token)


def paginate(items: list[Record], size: int, token: str | None) -> tuple[list[Record], str | None]:
    """A page of ``items`` after the one the opaque ``token`` names, and the next token."""
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise GoogleError(400, "Invalid page token.") from None
        ids = [r["_id"] for r in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:size]
    more = len(items) > size and page
    next_token = base64.urlsafe_b64encode(page[-1]["_id"].encode()).decode() if more else None
    return page, next_token
