"""Anthropic's Message Batches: the model, without HTTP (docs/api-facts-anthropic.md).

A batch is ``in_progress`` (queued ``validating_seconds``, then answering over
``processing_seconds``), then ``ended``; a cancel makes it ``canceling`` for
``validating_seconds`` and then ``ended`` with the requests done so far and the rest
``canceled``. Requests stay under ``processing`` in ``request_counts`` until the batch ends,
then all five counts settle at once. 24 hours after creation unfinished requests are
``expired``; the ``expire`` fault ends a batch half-done with the rest ``expired``. The
``fail`` fault (Anthropic has no failed batch) errors every request with ``api_error``.
Progress is a pure function of stored wall-clock times, so a restart replays it. Callers hold
the emulator's lock and call ``advance(now)`` first.
"""

from __future__ import annotations

import math
import random
import re
import secrets
from typing import TYPE_CHECKING, Any

from . import anthropic_messages as messages
from .provider_errors import AnthropicError
from .provider_store import Record, Records, rfc3339
from .store import ID_ALPHABET, sha256_hex

if TYPE_CHECKING:
    from .lifecycle import Emulator

MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256_000_000  # "256 MB"; UNVERIFIED whether MB or MiB (the smaller is safe)
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
WINDOW_SECONDS = 86_400
LIST_LIMIT = (1, 1000, 20)
OUTCOMES = ("succeeded", "errored", "canceled", "expired")


def _new_id(prefix: str) -> str:
    return prefix + "01" + "".join(secrets.choice(ID_ALPHABET) for _ in range(22))


def _invalid(message: str) -> AnthropicError:
    return AnthropicError(400, message)


def check_requests(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The create body's requests, or the 400 the API answers at once (pydantic's wording, as
    observed for a 65-character custom_id; the other messages are in the same style)."""
    reqs = payload.get("requests")
    if reqs is None:
        raise _invalid("requests: Field required")
    if not isinstance(reqs, list):
        raise _invalid("requests: Input should be a valid list")
    if not reqs:
        raise _invalid("requests: List should have at least 1 item after validation, not 0")
    if len(reqs) > MAX_REQUESTS:
        raise _invalid(
            f"requests: List should have at most {MAX_REQUESTS} items after validation, "
            f"not {len(reqs)}"
        )
    seen: set[str] = set()
    for i, req in enumerate(reqs):
        where = f"requests.{i}"
        if not isinstance(req, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary")
        cid = req.get("custom_id")
        if cid is None:
            raise _invalid(f"{where}.custom_id: Field required")
        if not isinstance(cid, str):
            raise _invalid(f"{where}.custom_id: Input should be a valid string")
        if len(cid) > 64:
            raise _invalid(f"{where}.custom_id: String should have at most 64 characters")
        if not CUSTOM_ID.fullmatch(cid):
            raise _invalid(
                f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )
        if cid in seen:
            # UNVERIFIED: the create-time error for a duplicate custom_id.
            raise _invalid(f"{where}.custom_id: Duplicate custom_id '{cid}' in this batch.")
        seen.add(cid)
        if "params" not in req:
            raise _invalid(f"{where}.params: Field required")
        if not isinstance(req["params"], dict):
            raise _invalid(f"{where}.params: Input should be a valid dictionary")
    return reqs


class MessageBatches:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.records = Records(emu.options.state_dir / "anthropic" / "batches")
        self.active = {r["_id"] for r in self.records.items.values() if r["status"] != "ended"}

    # ---- create / read -----------------------------------------------------------------

    def create(self, payload: dict[str, Any], version: str, now: float) -> Record:
        reqs = check_requests(payload)
        settings = self.emu.faults.for_batch()
        batch_id = _new_id("msgbatch_")
        rec: Record = {
            "_id": batch_id,
            "status": "in_progress",
            "created": now,
            "expires": now + WINDOW_SECONDS,
            "start": now + float(settings["validating_seconds"]),
            "cancel_at": None,
            "ended_at": None,
            "counts": None,
            "_n": len(reqs),
            "_k": None,
            "_version": version,
            "_settings": settings,
        }
        lines = ({"custom_id": r["custom_id"], "params": r["params"]} for r in reqs)
        self.records.write_lines(batch_id, "requests.jsonl", lines)
        self.records.add(rec)
        self.active.add(batch_id)
        self.emu.tally("message_batches_created")
        return rec

    def get(self, batch_id: str) -> Record:
        rec = self.records.items.get(batch_id)
        if rec is None:
            # UNVERIFIED: the exact 404 text.
            raise AnthropicError(404, f"message_batch_id: No batch found with id '{batch_id}'")
        return rec

    def view(self, rec: Record, root: str) -> dict[str, Any]:
        ended = rec["status"] == "ended"
        counts = rec["counts"] or {"processing": rec["_n"], **dict.fromkeys(OUTCOMES, 0)}
        results = f"{root}/v1/messages/batches/{rec['_id']}/results" if ended else None
        # Variances: a server that gives results_url as a reference (to resolve against the base
        # URL), or none at all (the results route is then the documented one).
        variances = self.emu.faults.settings
        if results and variances["relative_results_url"]:
            results = results.removeprefix(root)
        if variances["no_results_url"]:
            results = None
        return {
            "id": rec["_id"],
            "type": "message_batch",
            "processing_status": rec["status"],
            "request_counts": counts,
            "ended_at": rfc3339(rec["ended_at"]) if ended else None,
            "created_at": rfc3339(rec["created"]),
            "expires_at": rfc3339(rec["expires"]),
            "cancel_initiated_at": rfc3339(rec["cancel_at"]) if rec["cancel_at"] else None,
            "archived_at": None,
            "results_url": results,
        }

    def page(self, limit: int, after: str | None, before: str | None) -> tuple[list[Record], bool]:
        """Newest first; ``after_id`` pages forward, ``before_id`` backward."""
        items = self.records.newest_first()
        ids = [r["_id"] for r in items]
        if before is not None:
            end = ids.index(before) if before in ids else 0
            start = max(0, end - limit)
            return items[start:end], start > 0
        if after is not None:
            items = items[ids.index(after) + 1 :] if after in ids else []
        return items[:limit], len(items) > limit

    # ---- cancel / delete / results -----------------------------------------------------

    def cancel(self, batch_id: str, now: float) -> Record:
        rec = self.get(batch_id)
        if rec["status"] == "canceling":
            return rec
        if rec["status"] == "ended":
            # UNVERIFIED: the answer to cancelling an ended batch.
            raise _invalid(f"Batch '{batch_id}' has already ended and cannot be canceled.")
        rec["_k"] = self._done(rec, now)
        rec["status"] = "canceling"
        rec["cancel_at"] = now
        self.records.save(rec)
        return rec

    def delete(self, batch_id: str) -> dict[str, str]:
        rec = self.get(batch_id)
        if rec["status"] != "ended":
            # UNVERIFIED: the error for deleting a batch still processing.
            raise _invalid(
                f"Batch '{batch_id}' is still processing; cancel it and wait for it to end "
                "before deleting it."
            )
        self.records.delete(batch_id)
        return {"id": batch_id, "type": "message_batch_deleted"}

    def results_path(self, batch_id: str) -> Any:
        rec = self.get(batch_id)
        if rec["status"] != "ended":
            # UNVERIFIED: the status and text before the batch ends.
            raise _invalid(f"Batch '{batch_id}' has not ended yet; its results are not ready.")
        return self.records.sidecar(batch_id, "results.jsonl")

    # ---- progress ----------------------------------------------------------------------

    def _done(self, rec: Record, now: float) -> int:
        """Requests answered by ``now`` (the first ones, in input order)."""
        if rec["_k"] is not None:
            return int(rec["_k"])
        st, n = rec["_settings"], int(rec["_n"])
        if st.get("never_end"):
            return 0
        target = n // 2 if st["expire"] else n
        ps = float(st["processing_seconds"])
        frac = 1.0 if ps <= 0 or now >= rec["start"] + ps else (now - rec["start"]) / ps
        return min(target, max(0, math.floor(target * frac)))

    def _next_event(self, rec: Record) -> float | None:
        st = rec["_settings"]
        if rec["status"] == "canceling":
            # UNVERIFIED: how long canceling lasts; here `validating_seconds`.
            return rec["cancel_at"] + float(st["validating_seconds"])
        if st.get("never_end"):
            return None
        return min(rec["start"] + float(st["processing_seconds"]), rec["expires"])

    def advance(self, now: float) -> None:
        for batch_id in sorted(self.active):
            rec = self.records.items.get(batch_id)
            ev = self._next_event(rec) if rec is not None else None
            if rec is None:
                self.active.discard(batch_id)
            elif ev is not None and ev <= now:
                rest = "canceled" if rec["status"] == "canceling" else "expired"
                self._finish(rec, ev, rest)

    def _finish(self, rec: Record, ev: float, rest: str) -> None:
        batch_id = rec["_id"]
        k = self._done(rec, ev)
        counts = {"processing": 0, **dict.fromkeys(OUTCOMES, 0)}
        lines = []
        for index, req in enumerate(self.records.read_lines(batch_id, "requests.jsonl")):
            result = self._result(rec, req) if index < k else {"type": rest}
            counts[result["type"]] += 1
            lines.append({"custom_id": req["custom_id"], "result": result})
        random.Random(sha256_hex("shuffle", batch_id)).shuffle(lines)
        self.records.write_lines(batch_id, "results.jsonl", lines)
        rec.update({"status": "ended", "ended_at": ev, "counts": counts, "_k": k})
        self.records.save(rec)
        self.active.discard(batch_id)
        self.emu.tally("requests_processed", k)

    def _result(self, rec: Record, req: dict[str, Any]) -> dict[str, Any]:
        st, params = rec["_settings"], req["params"]
        if st["fail"]:
            kind, message = "api_error", f"Emulated batch failure: {st['fail']}."
        else:
            kind, message = messages.failure(
                params, rec["_version"], st, rec["_id"], req["custom_id"]
            )
        if not kind:
            return {"type": "succeeded", "message": messages.answer(params)}
        request_id = "req_" + sha256_hex("request", rec["_id"], req["custom_id"])[:24]
        error = {"type": "error", "error": {"type": kind, "message": message}}
        return {"type": "errored", "error": {**error, "request_id": request_id}}
