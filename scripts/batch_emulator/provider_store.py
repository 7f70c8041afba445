"""Records of the Anthropic and Gemini rooms on disk: one JSON file a record, sidecars beside.

No HTTP and no behaviour: the OpenAI ``store`` keeps its own layout untouched; each provider
gets a folder under the state directory (``anthropic/``, ``gemini/batches``,
``gemini/files``). Callers hold the emulator's lock.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .store import atomic_write_bytes, atomic_write_json, jsonl

Record = dict[str, Any]
SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def rfc3339(t: float) -> str:
    """``2024-09-24T18:37:24.100435Z``: UTC, six fractional digits, as both APIs show."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Records:
    """Records by id in ``root``, with any number of ``<id>.<suffix>`` sidecar files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.items: dict[str, Record] = {}
        self.seq = 0
        for path in root.glob("*.json"):
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            self.items[rec["_id"]] = rec
            self.seq = max(self.seq, int(rec.get("_seq", 0)))

    def _file(self, rec_id: str, suffix: str) -> Path:
        return self.root / f"{SAFE.sub('_', rec_id)}.{suffix}"

    def add(self, rec: Record) -> Record:
        self.seq += 1
        rec["_seq"] = self.seq
        self.items[rec["_id"]] = rec
        self.save(rec)
        return rec

    def save(self, rec: Record) -> None:
        atomic_write_json(self._file(rec["_id"], "json"), rec)

    def delete(self, rec_id: str) -> None:
        self.items.pop(rec_id, None)
        for path in self.root.glob(f"{SAFE.sub('_', rec_id)}.*"):
            with contextlib.suppress(OSError):
                path.unlink()

    def newest_first(self) -> list[Record]:
        return sorted(self.items.values(), key=lambda r: r["_seq"], reverse=True)

    def sidecar(self, rec_id: str, suffix: str) -> Path:
        return self._file(rec_id, suffix)

    def write_lines(self, rec_id: str, suffix: str, objects: Iterable[Any]) -> int:
        return atomic_write_bytes(self._file(rec_id, suffix), map(jsonl, objects))

    def write_bytes(self, rec_id: str, suffix: str, lines: Iterable[bytes]) -> int:
        return atomic_write_bytes(self._file(rec_id, suffix), lines)

    def read_lines(self, rec_id: str, suffix: str) -> Iterator[Any]:
        path = self._file(rec_id, suffix)
        if not path.exists():
            return
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.strip():
                    yield json.loads(raw)
