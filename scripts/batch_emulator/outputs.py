"""A finished batch's output and error files, in the line formats of docs/api-facts.md
"Output and error lines".

A success goes to the output file as ``{id, custom_id, response: {status_code, request_id,
body}, error: null}``; an HTTP failure goes to the error file in the same shape; a request an
expired or cancelled batch never ran gets ``response: null`` and ``error: {code, message}``.
Lines are shuffled (the API does not keep the input order).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import answers, facts
from .store import Record, jsonl, sha256_hex
from .upstream import Run

if TYPE_CHECKING:
    from .lifecycle import Emulator

EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
# UNVERIFIED: other implementations use batch_cancelled for requests a cancelled batch never ran.
CANCELLED = {
    "code": "batch_cancelled",
    "message": "This request was not executed because the batch was cancelled.",
}


@dataclass
class Result:
    counts: dict[str, int]
    usage: dict[str, Any]


def _requests(emu: Emulator, batch_id: str) -> Iterator[dict[str, Any]]:
    path = emu.store.requests_path(batch_id)
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


def _answer(b: Record, index: int, req: dict[str, Any]) -> tuple[int, Any]:
    """The deterministic answer to request ``index`` of batch ``b``."""
    st = b["_settings"]
    n = max(1, int(b["_n"] or 1))
    created = int(b["_t"]["in_progress"] + st["processing_seconds"] * index / n)
    return answers.answer(
        b["endpoint"],
        req["body"],
        created=created,
        settings=st,
        batch_id=b["id"],
        custom_id=req["custom_id"],
    )


def _failure_line(line_id: str, custom_id: str, status: int, body: Any) -> dict[str, Any]:
    """An error line as an open-source server writes it: no status_code, no code (a variance)."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": None,
        "error": {"type": "request_failed", "message": f"Error code: {status} - {body!r}"},
    }


def write_results(emu: Emulator, b: Record, status: str, ev: float, run: Run | None) -> Result:
    """Answer every request of ``b`` that ran, store the files, and count."""
    bid = b["id"]
    st = b["_settings"]
    n = int(b.get("_n") or 0)
    k = int(b["_k"]) if b.get("_k") is not None else n
    out_lines: list[bytes] = []
    err_lines: list[bytes] = []
    completed = failed = input_tokens = output_tokens = 0
    for index, req in enumerate(_requests(emu, bid)):
        custom_id = req["custom_id"]
        line_id = "batch_req_" + sha256_hex("line", bid, custom_id)[:32]
        if b.get("_upstream"):
            result = run.results.get(custom_id) if run is not None else None
        else:
            result = _answer(b, index, req) if index < k else None
        if result is None:
            error = EXPIRED if status == "expired" else CANCELLED
            # UNVERIFIED: unexecuted (expired/cancelled) requests count as failed.
            failed += 1
            line = {"id": line_id, "custom_id": custom_id, "response": None, "error": error}
            err_lines.append(jsonl(line))
            continue
        code, body = result
        if not b.get("_upstream"):
            emu.stats["requests_processed"] += 1
        if 200 <= code < 300:
            completed += 1
            used = answers.usage_tokens(body)
            input_tokens, output_tokens = input_tokens + used[0], output_tokens + used[1]
        else:
            failed += 1
        if not 200 <= code < 300 and st.get("bare_error_lines"):
            err_lines.append(jsonl(_failure_line(line_id, custom_id, code, body)))
            continue
        request_id = "req_" + sha256_hex("request", bid, custom_id)[:32]
        response = {"status_code": code, "request_id": request_id, "body": body}
        line = {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
        (out_lines if 200 <= code < 300 else err_lines).append(jsonl(line))
    shuffler = random.Random(sha256_hex("shuffle", bid))
    shuffler.shuffle(out_lines)
    shuffler.shuffle(err_lines)
    if not (status == "cancelled" and st.get("no_output_on_cancel")):
        ttl = b.get("_output_expires_after") or facts.BATCH_FILE_TTL
        for lines, kind in ((out_lines, "output"), (err_lines, "error")):
            if lines:
                rec = emu.add_file(
                    filename=f"{bid}_{kind}.jsonl",  # UNVERIFIED filename
                    purpose="batch_output",
                    lines=lines,
                    now=ev,
                    expires_at=int(ev) + int(ttl),
                )
                b[f"{kind}_file_id"] = rec["id"]
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
    return Result({"total": n, "completed": completed, "failed": failed}, usage)
