"""The batch lifecycle: the emulator's model of the service, without HTTP.

A batch goes ``validating -> in_progress -> finalizing -> completed`` (or ``failed``,
``expired``, ``cancelling -> cancelled``), docs/api-facts.md "Batch statuses". Progress is a
pure function of stored wall-clock times: ``advance_all(now)`` fires every due transition,
earliest first, so a restart replays what happened while the emulator was down. Every public
method is called with ``self.lock`` held.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
from pathlib import Path
from typing import Any

from . import answers, facts, outputs
from .exceptions import ApiError
from .faults import Faults
from .options import Options
from .store import Record, Store
from .upstream import Upstream
from .validation import scan_input

Progress = tuple[int, int]  # (requests done, requests succeeded)


class Emulator:
    """All state and behaviour; ``lock`` guards it."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.lock = threading.RLock()
        self.stats_lock = threading.Lock()  # call counts and fault draws: taken on the event loop
        self.store = Store(options.state_dir, explicit_nulls=options.explicit_nulls)
        self.faults = Faults(options.settings())
        self.stats: dict[str, Any] = {
            "files_created": 0,
            "batches_created": 0,
            "requests_processed": 0,
            "calls": {},
            "bytes_served": {},
        }
        self.active = {
            b["id"] for b in self.store.batches.values() if b["status"] in facts.ACTIVE_STATUSES
        }
        self.upstream: Upstream | None = None
        if options.upstream:
            self.upstream = Upstream(
                options.upstream,
                options.upstream_api_key,
                options.upstream_concurrency,
                self.store,
                self.lock,
                self._count_processed,
            )
            for bid in self.active:
                b = self.store.batches[bid]
                if b.get("_upstream") and b["status"] in ("in_progress", "cancelling"):
                    self.upstream.resume(b)

    # ---- stats -------------------------------------------------------------------------

    def _count_processed(self) -> None:
        self.stats["requests_processed"] += 1

    def tally(self, key: str, n: int = 1) -> None:
        """Add n to a counter of the stats, under the stats lock."""
        with self.stats_lock:
            self.stats[key] = self.stats.get(key, 0) + n

    def count_call(self, route: str, size: int = 0) -> None:
        calls, served = self.stats["calls"], self.stats["bytes_served"]
        calls[route] = calls.get(route, 0) + 1
        served[route] = served.get(route, 0) + size

    def count_bytes(self, route: str, size: int) -> None:
        served = self.stats["bytes_served"]
        served[route] = served.get(route, 0) + size

    def stats_view(self) -> dict[str, Any]:
        out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.stats.items()}
        out["http_faults_injected"] = self.faults.injected
        return out

    def reset_stats(self) -> dict[str, Any]:
        self.stats["calls"] = {}
        self.stats["bytes_served"] = {}
        return self.stats_view()

    # ---- files -------------------------------------------------------------------------

    def add_file(self, **kwargs: Any) -> Record:
        rec = self.store.add_file(**kwargs)
        self.stats["files_created"] += 1
        return rec

    # ---- batches: create / view / cancel -----------------------------------------------

    def create_batch(self, payload: dict[str, Any], now: float) -> Record:
        created = int(now)
        metadata = None if self.faults.settings["drop_metadata"] else payload.get("metadata")
        b: Record = {
            "id": "batch_" + secrets.token_hex(16),
            "object": "batch",
            "endpoint": payload["endpoint"],
            "model": None,
            "errors": None,
            "input_file_id": payload["input_file_id"],
            "completion_window": payload["completion_window"],
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": created,
            "in_progress_at": None,
            "expires_at": created + facts.BATCH_WINDOW_SECONDS,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": None,
            "metadata": metadata,
            "_seq": self.store.next_seq(),
            "_t": {"created": now},
            "_settings": self.faults.for_batch(),
            "_output_expires_after": (payload.get("output_expires_after") or {}).get("seconds"),
            "_n": None,
            "_flags": None,
            "_tokens": 0,
            "_k": None,
            "_upstream": False,
        }
        self.store.batches[b["id"]] = b
        self.active.add(b["id"])
        self.store.save_batch(b)
        self.stats["batches_created"] += 1
        return b

    def batch_view(self, b: Record, now: float) -> Record:
        view = self.store.strip(b, keep_null=("metadata",))
        if b["status"] in ("in_progress", "cancelling") and b.get("_n") is not None:
            done, ok = self.progress(b, now)
            view["request_counts"] = {"total": b["_n"], "completed": ok, "failed": done - ok}
        return view

    def list_batches(self, *, limit: int, after: str | None, now: float) -> Record:
        return self.store.list_batches(
            limit=limit, after=after, view=lambda b: self.batch_view(b, now)
        )

    def cancel_batch(self, batch_id: str, now: float) -> Record:
        b = self.store.get_batch(batch_id)
        status = b["status"]
        if status in ("cancelling", "cancelled"):
            return b  # docs/api-facts.md "Batches": cancelling a cancelled batch is allowed
        if status not in ("validating", "in_progress", "finalizing"):
            raise ApiError(409, f"Cannot cancel a batch with status '{status}'.")
        if status == "in_progress":
            if b.get("_upstream") and self.upstream is not None:
                self.upstream.stop(batch_id)
            else:
                b["_k"] = self.progress(b, now)[0]
        elif status == "finalizing":
            b["_k"] = b["_n"]
        else:
            b["_k"] = 0
        b["_settings"]["no_output_on_cancel"] = self.faults.settings["no_output_on_cancel"]
        b["status"] = "cancelling"
        b["cancelling_at"] = int(now)
        b["_t"]["cancelling"] = now
        self.store.save_batch(b)
        return b

    # ---- batches: progress -------------------------------------------------------------

    def progress(self, b: Record, now: float) -> Progress:
        """(requests done, requests succeeded) at ``now`` for an in_progress/cancelling batch."""
        n = int(b.get("_n") or 0)
        if b.get("_upstream"):
            return self.upstream.progress(b["id"]) if self.upstream else (0, 0)
        flags: str = b.get("_flags") or ""
        if b.get("_k") is not None:
            k = int(b["_k"])
        elif b["_settings"].get("never_end"):
            k = 0
        else:
            st = b["_settings"]
            # With `expire` set, about half the requests are done when the batch expires.
            target = n // 2 if st["expire"] else n
            ps = float(st["processing_seconds"])
            started = b["_t"].get("in_progress", now)
            frac = 1.0 if ps <= 0 or now >= started + ps else max(0.0, (now - started) / ps)
            k = min(target, int(math.floor(target * frac)))
        return k, flags[:k].count("s")

    def _next_event(self, b: Record) -> float | None:
        st, t, status = b["_settings"], b["_t"], b["status"]
        if status == "validating":
            return t["created"] + st["validating_seconds"]
        if status == "in_progress":
            if st.get("never_end"):
                return None  # a server variance: the batch runs forever
            deadline = float(b["expires_at"])
            due = t["in_progress"] + st["processing_seconds"]
            if b.get("_upstream") and not st["expire"]:
                run = self.upstream.runs.get(b["id"]) if self.upstream else None
                if run is None or run.done_at is None:
                    return deadline
                due = max(due, run.done_at)
            return min(due, deadline)
        if status == "finalizing":
            return t["finalizing"] + st["finalizing_seconds"]
        if status == "cancelling":
            # UNVERIFIED: real cancelling lasts up to 10 minutes; here `validating_seconds`.
            return t["cancelling"] + st["validating_seconds"]
        return None

    def advance_all(self, now: float) -> None:
        """Fire every due transition, earliest first, so restarts replay correctly."""
        while True:
            best: tuple[float, str] | None = None
            for bid in self.active:
                ev = self._next_event(self.store.batches[bid])
                if ev is not None and ev <= now and (best is None or ev < best[0]):
                    best = (ev, bid)
            if best is None:
                return
            self._fire(self.store.batches[best[1]], best[0])

    def _fire(self, b: Record, ev: float) -> None:
        status = b["status"]
        if status == "validating":
            self._validate(b, ev)
        elif status == "in_progress":
            if b["_settings"]["expire"] or ev >= float(b["expires_at"]):
                if not b.get("_upstream"):
                    b["_k"] = self.progress(b, ev)[0]
                self._finish(b, "expired", ev)
            else:
                if not b.get("_upstream"):
                    b["_k"] = b["_n"]
                b["status"] = "finalizing"
                b["finalizing_at"] = int(ev)
                b["_t"]["finalizing"] = ev
                done, ok = self.progress(b, ev)
                b["request_counts"] = {"total": b["_n"], "completed": ok, "failed": done - ok}
                self.store.save_batch(b)
        elif status == "finalizing":
            self._finish(b, "completed", ev)
        elif status == "cancelling":
            self._finish(b, "cancelled", ev)
        else:  # pragma: no cover - defensive
            self.active.discard(b["id"])

    # ---- batches: validation -----------------------------------------------------------

    def _fail_batch(self, b: Record, ev: float, errors: list[dict[str, Any]]) -> None:
        b["status"] = "failed"
        b["failed_at"] = int(ev)
        b["errors"] = {"object": "list", "data": errors[: facts.MAX_REPORTED_ERRORS]}
        b["request_counts"] = {"total": 0, "completed": 0, "failed": 0}
        self.active.discard(b["id"])
        self.store.drop_batch_sidecars(b["id"])
        self.store.save_batch(b)

    def _file_problem(self, b: Record, ev: float) -> dict[str, Any] | None:
        """Why the input file cannot be read at all (docs/api-facts.md "Validation failures")."""
        st = b["_settings"]
        if st["fail"]:
            message = f"Emulated batch failure: {st['fail']}."
            return {"code": st["fail"], "line": None, "param": None, "message": message}
        file_id = b["input_file_id"]
        rec = self.store.files.get(file_id)
        if rec is None or (rec.get("expires_at") is not None and rec["expires_at"] <= ev):
            message = (
                f"Cannot find file {file_id}, or organization {facts.ORGANIZATION} does not have "
                "access to it."
            )
            return {"code": "invalid_request", "line": None, "param": "file_id", "message": message}
        if rec["purpose"] != "batch":
            # UNVERIFIED: code/message for an input file with a purpose other than batch.
            message = "The input file must be uploaded with purpose 'batch'."
            return {"code": "invalid_request", "line": None, "param": "file_id", "message": message}
        if rec["bytes"] > facts.MAX_BATCH_FILE_BYTES:
            # UNVERIFIED: code and message (uploads over the limit are refused with a 413 now,
            # so only a file stored before that can get here).
            message = (
                f"The batch input file is larger than the {facts.MAX_BATCH_FILE_BYTES} maximum "
                f"({rec['bytes']} bytes)."
            )
            return {"code": "file_too_large", "line": None, "param": None, "message": message}
        return None

    def _validate(self, b: Record, ev: float) -> None:
        problem = self._file_problem(b, ev)
        if problem is not None:
            self._fail_batch(b, ev, [problem])
            return
        st, endpoint = b["_settings"], b["endpoint"]
        sidecar = self.store.requests_path(b["id"])
        tmp = sidecar.with_name(f".{sidecar.name}.tmp")

        def predict(req: dict[str, Any]) -> bool:
            found = answers.failure(endpoint, req["body"], st, b["id"], req["custom_id"])
            return found is None

        with self.store.open_data(b["input_file_id"]) as data:
            scan = scan_input(data, endpoint, tmp, predict)
        if scan.model is not None:
            b["model"] = scan.model
        if scan.errors:
            _unlink(tmp)
            self._fail_batch(b, ev, scan.errors)
            return
        limit = self.faults.settings["token_limit"]
        if limit is not None and self._enqueued(b, scan.model) + scan.tokens > limit:
            _unlink(tmp)
            # Checked at validating -> in_progress. UNVERIFIED: the real API may instead reject
            # at create time (docs/api-facts.md "Enqueued-token limit").
            message = (
                f"Enqueued token limit reached for {scan.model} in organization "
                f"{facts.ORGANIZATION}. Limit: {limit:,} enqueued tokens. Please try again once "
                "some in_progress batches have been completed."
            )
            error = {"code": "token_limit_exceeded", "line": None, "param": None}
            self._fail_batch(b, ev, [{**error, "message": message}])
            return
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(sidecar)
        b.update(
            {
                "status": "in_progress",
                "in_progress_at": int(ev),
                "request_counts": {"total": scan.count, "completed": 0, "failed": 0},
                "_n": scan.count,
                "_flags": "".join(scan.flags),
                "_tokens": scan.tokens,
                "_upstream": self.upstream is not None,
            }
        )
        b["_t"]["in_progress"] = ev
        self.store.save_batch(b)
        if self.upstream is not None:
            self.upstream.start(b)

    def _enqueued(self, b: Record, model: str | None) -> int:
        return sum(
            int(o.get("_tokens") or 0)
            for o in self.store.batches.values()
            if o["id"] != b["id"] and o["status"] in facts.ENQUEUED_STATUSES and o["model"] == model
        )

    # ---- batches: the end --------------------------------------------------------------

    def _finish(self, b: Record, status: str, ev: float) -> None:
        """Write output/error files and move ``b`` to a terminal status."""
        run = self.upstream.stop(b["id"]) if self.upstream else None
        result = outputs.write_results(self, b, status, ev, run)
        b["status"] = status
        b[f"{status}_at"] = int(ev)
        b["request_counts"] = result.counts
        b["usage"] = result.usage
        b["_flags"] = None
        self.active.discard(b["id"])
        if self.upstream is not None:
            self.upstream.runs.pop(b["id"], None)
        self.store.save_batch(b)
        self.store.drop_batch_sidecars(b["id"])


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
