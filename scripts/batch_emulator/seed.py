"""``POST /_emulator/seed``: account history made fast, for scale tests and the bench.

Creates completed batches (each with its one-line input file) and plain batch files, their
``created_at`` spread evenly over the last ``age_seconds``, without processing anything.
Seeded batches have no output file: they are history to page through, not work to collect.
The records go to one file in the state directory (``seeds/``), loaded on restart; a seeded
file keeps its few bytes in its record.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from . import facts, validation
from .exceptions import ApiError
from .lifecycle import Emulator
from .store import Record, new_id

LIMIT = 100_000
MODEL = "gpt-4o-mini"


def _count(payload: dict[str, Any], key: str) -> int:
    value = payload.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= LIMIT:
        raise ApiError(400, f"'{key}' must be an integer from 0 to {LIMIT}.", param=key)
    return value


def _file(emu: Emulator, created: int, name: str, content: str) -> Record:
    rec: Record = {
        "id": new_id("file-", 22),
        "object": "file",
        "bytes": len(content.encode("utf-8")),
        "created_at": created,
        "expires_at": created + facts.BATCH_FILE_TTL,
        "filename": name,
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
        "_seq": emu.store.next_seq(),
        "_seeded": True,
        "_content": content,
    }
    emu.store.files[rec["id"]] = rec
    return rec


def _batch(emu: Emulator, created: int, file_id: str, metadata: Any) -> Record:
    b: Record = {
        "id": "batch_" + secrets.token_hex(16),
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": MODEL,
        "errors": None,
        "input_file_id": file_id,
        "completion_window": "24h",
        "status": "completed",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": created,
        "in_progress_at": created,
        "expires_at": created + facts.BATCH_WINDOW_SECONDS,
        "finalizing_at": created,
        "completed_at": created,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 1, "completed": 1, "failed": 0},
        "usage": {
            "input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 0,
        },
        "metadata": metadata,
        "_seq": emu.store.next_seq(),
        "_t": {"created": float(created)},
        "_settings": emu.faults.for_batch(),
        "_seeded": True,
    }
    emu.store.batches[b["id"]] = b
    return b


def seed(emu: Emulator, payload: dict[str, Any], now: float) -> dict[str, Any]:
    """Create the history ``payload`` asks for; the caller holds the lock."""
    batches, files = _count(payload, "batches"), _count(payload, "files")
    age = payload.get("age_seconds", 3600)
    if not isinstance(age, int | float) or isinstance(age, bool) or age < 0:
        raise ApiError(400, "'age_seconds' must be a number >= 0.", param="age_seconds")
    metadata = payload.get("metadata")
    validation.metadata(metadata)
    unknown = set(payload) - {"batches", "files", "age_seconds", "metadata"}
    if unknown:
        raise ApiError(400, f"Unknown seed setting '{sorted(unknown)[0]}'.")

    records: list[Record] = []

    def spread(i: int, n: int) -> int:
        return int(now - age * (n - i) / n)

    for i in range(batches):
        created = spread(i, batches)
        line = {
            "custom_id": f"seed-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"seed {i}"}]},
        }
        f = _file(emu, created, f"seed_batch_{i:06d}.jsonl", json.dumps(line) + "\n")
        records += [f, _batch(emu, created, f["id"], metadata)]
    for i in range(files):
        records.append(
            _file(emu, spread(i, files), f"seed_file_{i:06d}.jsonl", f'{{"seed": {i}}}\n')
        )
    emu.store.save_seed(records)
    seeded = emu.stats.setdefault("seeded", {"batches": 0, "files": 0})
    seeded["batches"] += batches
    seeded["files"] += files + batches
    return {"batches": batches, "files": files + batches, "age_seconds": age}
