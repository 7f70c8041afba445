"""A Gemini batch (a long-running Operation, FACTS.md §4) in the seam's words (provider.py):
its state, times, counts, files, the reason it failed, and the label its display name carries.

States: the wire says `BATCH_STATE_*`, the SDK `JOB_STATE_*` (§4.2); both map onto the seam's
statuses (STATES). PENDING is "validating" and RUNNING "in_progress" (both hold enqueued
tokens); SUCCEEDED is "completed" (a job whose requests failed still succeeds, with
failedRequestCount, §4.2); a job pending or running 48 hours is "expired" with no results (its
requests then have no line, and go again: provider.collect); FAILED and CANCELLED keep their
names. The SDK's Vertex-only states are mapped too, in case a server sends them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from br.batches.provider import Batch, Counts, Label, Problem

EXPIRY = 48 * 3600  # a job pending or running this long expires (§4.2)
LABEL = re.compile(r"^br ([0-9a-f]{64}) (\d+)(?: |$)")
STATES = {
    "PENDING": "validating",
    "QUEUED": "validating",
    "RUNNING": "in_progress",
    "PAUSED": "in_progress",
    "UPDATING": "in_progress",
    "CANCELLING": "cancelling",
    "SUCCEEDED": "completed",
    "PARTIALLY_SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}


def status_of(state: Any) -> str:
    """The seam's status of a wire (`BATCH_STATE_X`) or SDK (`JOB_STATE_X`) state; an unknown
    one is treated as running (polled on, given up past its deadline)."""
    text = str(getattr(state, "value", state) or "")
    return STATES.get(re.sub(r"^(BATCH|JOB)_STATE_", "", text), "in_progress")


def seconds(stamp: Any) -> float:
    """An RFC 3339 time (up to 9 fractional digits, `Z`) as epoch seconds."""
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    text = re.sub(r"(\.\d{6})\d+", r"\1", str(stamp or "")).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def display_name(label: Label) -> str:
    return f"br {label.sha} {label.attempt} {label.step}"[:128]


def batch_of(op: dict[str, Any]) -> Batch:
    """The common Batch of an Operation as the wire has it (§4.1)."""
    meta = op.get("metadata") or {}
    stats = meta.get("batchStats") or {}
    output = meta.get("output") or {}
    label = LABEL.match(str(meta.get("displayName") or ""))
    created = seconds(meta.get("createTime"))
    error = op.get("error") if isinstance(op.get("error"), dict) else None
    return Batch(
        id=str(op.get("name") or meta.get("name")),
        status=status_of(meta.get("state")),
        created_at=created,
        expires_at=created + EXPIRY if created else None,
        request_counts=Counts(
            int(stats.get("requestCount") or 0),
            int(stats.get("successfulRequestCount") or 0),
            int(stats.get("failedRequestCount") or 0),
        ),
        input_file_id=(meta.get("inputConfig") or {}).get("fileName"),
        output_file_id=output.get("responsesFile"),
        key=(label[1], int(label[2])) if label else None,
        problems=(Problem(problem_code(error), str(error.get("message") or "")),) if error else (),
    )


def problem_code(error: dict[str, Any]) -> str:
    code = error.get("status") or {3: "invalid_argument", 8: "resource_exhausted"}.get(
        error.get("code"), f"code_{error.get('code')}"
    )
    return str(code).lower()
