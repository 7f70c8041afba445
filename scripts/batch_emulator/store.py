"""The state store: files and batches as records, each persisted as its own JSON file.

No HTTP and no batch behaviour here. Every record is written whole (temporary file, fsync,
``os.replace``) under the state directory, file contents beside their metadata, so a restart
reloads everything. Keys starting with ``_`` are the emulator's own and never leave the store.
Callers hold the emulator's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import string
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from .exceptions import NotFound

Record = dict[str, Any]
ID_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def sha256_hex(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def jsonl(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{threading.get_ident()}.tmp")


def atomic_write_json(path: Path, obj: Any, *, sync: bool = True) -> None:
    tmp = _tmp(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, separators=(",", ":"))
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, lines: Iterable[bytes], *, sync: bool = True) -> int:
    tmp = _tmp(path)
    size = 0
    with open(tmp, "wb") as fh:
        for line in lines:
            fh.write(line)
            size += len(line)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    return size


class Store:
    """Files and batches, in memory and on disk."""

    def __init__(self, root: Path, *, explicit_nulls: bool = False) -> None:
        self.root = root
        self.explicit_nulls = explicit_nulls
        self.files_dir = root / "files"
        self.batches_dir = root / "batches"
        self.tmp_dir = root / "tmp"
        self.seeds_dir = root / "seeds"
        for d in (self.files_dir, self.batches_dir, self.tmp_dir, self.seeds_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        self.files: dict[str, Record] = {}
        self.batches: dict[str, Record] = {}
        self.seq = 0
        self._load()

    # ---- persistence -------------------------------------------------------------------

    def _load(self) -> None:
        for kind, pattern in ((self.files, "*.json"), (self.batches, "batch_*.json")):
            folder = self.files_dir if kind is self.files else self.batches_dir
            for path in folder.glob(pattern):
                try:
                    rec = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                kind[rec["id"]] = rec
                self.seq = max(self.seq, int(rec.get("_seq", 0)))
        for path in sorted(self.seeds_dir.glob("seed-*.jsonl")):
            with open(path, "rb") as fh:
                for raw in fh:
                    rec = json.loads(raw)
                    kind = self.batches if rec["object"] == "batch" else self.files
                    if (self.files_dir / f"{rec['id']}.deleted").exists():
                        continue
                    kind.setdefault(rec["id"], rec)
                    self.seq = max(self.seq, int(rec.get("_seq", 0)))

    def save_seed(self, records: list[Record]) -> None:
        """Seeded history: one file for the lot (``_seeded`` records are never changed)."""
        atomic_write_bytes(self.seeds_dir / f"seed-{self.seq:012d}.jsonl", map(jsonl, records))

    def open_data(self, file_id: str) -> BinaryIO:
        """The file's bytes; a seeded file keeps them in its record."""
        rec = self.files[file_id]
        if rec.get("_content") is not None:
            return io.BytesIO(rec["_content"].encode("utf-8"))
        return open(self.file_data_path(file_id), "rb")  # noqa: SIM115 - the caller closes it

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def file_data_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.data"

    def requests_path(self, batch_id: str) -> Path:
        """The validated requests of a running batch, one JSON line each."""
        return self.batches_dir / f"{batch_id}.requests.jsonl"

    def results_path(self, batch_id: str) -> Path:
        """Answers an upstream gave so far, so a restart does not ask again."""
        return self.batches_dir / f"{batch_id}.results.jsonl"

    def save_file(self, rec: Record, *, sync: bool = True) -> None:
        atomic_write_json(self.files_dir / f"{rec['id']}.json", rec, sync=sync)

    def save_batch(self, b: Record, *, sync: bool = True) -> None:
        atomic_write_json(self.batches_dir / f"{b['id']}.json", b, sync=sync)

    def drop_batch_sidecars(self, batch_id: str) -> None:
        for path in (self.requests_path(batch_id), self.results_path(batch_id)):
            with contextlib.suppress(OSError):
                path.unlink()

    # ---- views -------------------------------------------------------------------------

    def strip(self, obj: Record, keep_null: tuple[str, ...] = ()) -> Record:
        """The public view: no private keys; no nulls unless ``explicit_nulls`` (the published
        schemas type optional fields as non-nullable, docs/api-facts.md "Nulls")."""
        out = {k: v for k, v in obj.items() if not k.startswith("_")}
        if not self.explicit_nulls:
            out = {k: v for k, v in out.items() if v is not None or k in keep_null}
        return out

    def file_view(self, rec: Record) -> Record:
        return self.strip(rec)

    # ---- files -------------------------------------------------------------------------

    def get_file(self, file_id: str, now: float) -> Record:
        rec = self.files.get(file_id)
        if rec is None or (rec.get("expires_at") is not None and rec["expires_at"] <= now):
            raise NotFound(f"No such File object: {file_id}", param="id")
        return rec

    def add_file(
        self,
        *,
        filename: str,
        purpose: str,
        now: float,
        expires_at: int | None,
        source: Path | None = None,
        lines: Iterable[bytes] = (),
        sync: bool = True,
    ) -> Record:
        """A new file from a staged upload (``source``, moved in) or from ``lines``."""
        file_id = new_id("file-", 22)
        dest = self.file_data_path(file_id)
        if source is not None:
            os.replace(source, dest)
            size = dest.stat().st_size
        else:
            size = atomic_write_bytes(dest, lines, sync=sync)
        rec: Record = {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": int(now),
            "expires_at": expires_at,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "_seq": self.next_seq(),
        }
        self.files[file_id] = rec
        self.save_file(rec, sync=sync)
        return rec

    def delete_file(self, file_id: str, now: float) -> None:
        rec = self.get_file(file_id, now)
        if rec.get("_seeded"):
            (self.files_dir / f"{file_id}.deleted").touch()
        self.files.pop(file_id, None)
        for path in (self.files_dir / f"{file_id}.json", self.file_data_path(file_id)):
            with contextlib.suppress(OSError):
                path.unlink()

    def list_files(
        self, *, purpose: str | None, limit: int, order: str, after: str | None, now: float
    ) -> Record:
        items = [
            f
            for f in self.files.values()
            if (f.get("expires_at") is None or f["expires_at"] > now)
            and (purpose is None or f["purpose"] == purpose)
        ]
        # By creation (created_at, then the order of creation within a second).
        items.sort(key=lambda f: (f["created_at"], f["_seq"]), reverse=(order == "desc"))
        page, has_more = _page(items, after, limit)
        data = [self.file_view(f) for f in page]
        # first_id/last_id are required *strings* in ListFilesResponse: "" for an empty page.
        empty: str | None = None if self.explicit_nulls else ""
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else empty,
            "last_id": data[-1]["id"] if data else empty,
            "has_more": has_more,
        }

    # ---- batches -----------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Record:
        b = self.batches.get(batch_id)
        if b is None:
            # UNVERIFIED: exact 404 text (docs/api-facts.md "Batches").
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
        return b

    def list_batches(
        self, *, limit: int, after: str | None, view: Callable[[Record], Record]
    ) -> Record:
        # UNVERIFIED: newest first, as users report (docs/api-facts.md "Lists").
        items = sorted(
            self.batches.values(), key=lambda b: (b["created_at"], b["_seq"]), reverse=True
        )
        page, has_more = _page(items, after, limit)
        data = [view(b) for b in page]
        out: Record = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
        if not self.explicit_nulls:
            out = {k: v for k, v in out.items() if v is not None}
        return out


def _page(items: list[Record], after: str | None, limit: int) -> tuple[list[Record], bool]:
    """The page of ``items`` after the item with id ``after`` (the SDK's cursor)."""
    if after is not None:
        index = next((i for i, item in enumerate(items) if item["id"] == after), None)
        items = items[index + 1 :] if index is not None else []
    return items[:limit], len(items) > limit
