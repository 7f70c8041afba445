"""Gemini's Batch API: the model, without HTTP (docs/api-facts-gemini.md "Batches").

A job is an Operation named ``batches/<36 lowercase alnum>``: ``BATCH_STATE_PENDING`` for
``validating_seconds``, ``RUNNING`` for ``processing_seconds``, then ``SUCCEEDED`` with every
request's response or error in its output (inline responses, or a responses file
``files/batch-<id>`` of ``{key, response|error}`` lines), in a shuffled order so clients match
by key. A job pending or running 48 hours is ``EXPIRED`` with no output (the ``expire`` fault:
at the end of processing); ``fail`` makes it ``FAILED``; ``never_end`` keeps it running; a
cancel makes it ``CANCELLED`` at once, with no output (UNVERIFIED: whether finished requests'
results are kept). Callers hold the emulator's lock and call ``advance(now)`` first.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

from . import gemini_content as content
from .gemini_content import pick
from .gemini_files import GeminiFiles, new_name, paginate
from .provider_errors import GoogleError
from .provider_store import Record, Records, rfc3339
from .store import jsonl, sha256_hex

if TYPE_CHECKING:
    from .lifecycle import Emulator

EXPIRY_SECONDS = 48 * 3600
MAX_INLINE_BYTES = 20 * 1024 * 1024  # "keep the whole create request under 20 MB"
TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1main."
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")
LIST_SIZE = (1, 1000, 50)  # UNVERIFIED: page size bounds and default


def _bad(message: str) -> GoogleError:
    return GoogleError(400, message)


class GeminiBatches:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        root = emu.options.state_dir / "gemini"
        self.records = Records(root / "batches")
        self.files = GeminiFiles(root)
        self.active = {r["_id"] for r in self.records.items.values() if r["state"] not in TERMINAL}

    # ---- create ------------------------------------------------------------------------

    def _lines(
        self, payload: dict[str, Any], now: float
    ) -> tuple[list[Any], str | None, str | None]:
        """(requests as {key, metadata, request}, the input file's name, a problem to fail on)."""
        config = pick(pick(payload, "batch"), "inputConfig")
        inline, file_name = pick(config, "requests"), pick(config, "fileName")
        if (inline is None) == (file_name is None):
            raise _bad("batch.input_config: exactly one of requests or file_name must be set.")
        if inline is not None:
            reqs = pick(inline, "requests")
            if not isinstance(reqs, list) or not reqs:
                raise _bad(
                    "batch.input_config.requests.requests: at least one request is required."
                )
            out = []
            for i, item in enumerate(reqs):
                if not isinstance(pick(item, "request"), dict):
                    raise _bad(f"batch.input_config.requests.requests[{i}].request is required.")
                meta = pick(item, "metadata")
                key = meta.get("key") if isinstance(meta, dict) else None
                out.append({"key": key, "metadata": meta, "request": pick(item, "request")})
            return out, None, None
        rec = self.files.get(str(file_name), now)
        out, problem = [], None
        with open(self.files.data_path(rec), "rb") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    line = None
                if not isinstance(line, dict) or not isinstance(line.get("request"), dict):
                    # UNVERIFIED: a line that is not {key, request} fails the whole job.
                    problem = problem or f"Invalid request on line {number} of {file_name}."
                    continue
                out.append({"key": line.get("key"), "request": line["request"]})
        if not out and problem is None:
            problem = f"The input file {file_name} holds no requests."
        return out, f"files/{rec['_id']}", problem

    def create(self, model: str, payload: dict[str, Any], size: int, now: float) -> Record:
        lines, file_name, problem = self._lines(payload, now)
        if file_name is None and size > MAX_INLINE_BYTES:
            raise _bad(f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes.")
        batch = pick(payload, "batch")
        settings = self.emu.faults.for_batch()
        rec_id = new_name(36)
        rec: Record = {
            "_id": rec_id,
            "model": model,
            "display": pick(batch, "displayName"),
            "file": file_name,
            "state": "PENDING",
            "created": now,
            "updated": now,
            "start": now + float(settings["validating_seconds"]),
            "ended": None,
            "error": None,
            "counts": None,
            "output": None,
            "_n": len(lines),
            "_problem": problem,
            "_settings": settings,
        }
        self.records.write_lines(rec_id, "requests.jsonl", lines)
        self.records.add(rec)
        self.active.add(rec_id)
        self.emu.tally("gemini_batches_created")
        return rec

    # ---- read / cancel / delete --------------------------------------------------------

    def get(self, name: str) -> Record:
        rec = self.records.items.get(name.removeprefix("batches/"))
        if rec is None:
            # UNVERIFIED: the text of the 404.
            raise GoogleError(404, f"Batch {name} not found.")
        return rec

    def page(self, size: int, token: str | None) -> tuple[list[Record], str | None]:
        return paginate(self.records.newest_first(), size, token)

    def cancel(self, name: str, now: float) -> None:
        rec = self.get(name)
        if rec["state"] in TERMINAL:
            # UNVERIFIED: the answer to cancelling a finished job.
            raise GoogleError(
                400, f"Batch {name} is already {rec['state']}.", "FAILED_PRECONDITION"
            )
        self._end(rec, "CANCELLED", now)

    def delete(self, name: str) -> None:
        rec = self.get(name)  # UNVERIFIED: a running job may be deleted (it stops)
        self.active.discard(rec["_id"])
        self.records.delete(rec["_id"])

    # ---- views -------------------------------------------------------------------------

    def view(self, rec: Record) -> dict[str, Any]:
        name = f"batches/{rec['_id']}"
        meta: dict[str, Any] = {
            "@type": TYPE_PREFIX + "GenerateContentBatch",
            "model": rec["model"],
        }
        if rec["display"]:
            meta["displayName"] = rec["display"]
        if rec["file"]:
            meta["inputConfig"] = {"fileName": rec["file"]}
        meta["createTime"] = rfc3339(rec["created"])
        meta["updateTime"] = rfc3339(rec["updated"])
        if rec["ended"] is not None:
            meta["endTime"] = rfc3339(rec["ended"])
        counts = rec["counts"] or {"requestCount": rec["_n"], "pendingRequestCount": rec["_n"]}
        meta["batchStats"] = {k: str(v) for k, v in counts.items() if v}
        meta["state"] = "BATCH_STATE_" + rec["state"]
        meta["name"] = name
        op: dict[str, Any] = {"name": name, "metadata": meta}
        if rec["state"] in TERMINAL:
            op["done"] = True
        if rec["output"] is not None:
            output = self._output(rec)
            meta["output"] = output
            op["response"] = {"@type": TYPE_PREFIX + "GenerateContentBatchOutput", **output}
        if rec["error"] is not None:
            op["error"] = rec["error"]
        return op

    def _output(self, rec: Record) -> dict[str, Any]:
        if rec["output"] == "file":
            return {"responsesFile": f"files/batch-{rec['_id']}"}
        items = list(self.records.read_lines(rec["_id"], "responses.jsonl"))
        return {"inlinedResponses": {"inlinedResponses": items}}

    # ---- progress ----------------------------------------------------------------------

    def _next_event(self, rec: Record) -> float | None:
        st, deadline = rec["_settings"], rec["created"] + EXPIRY_SECONDS
        if rec["state"] == "PENDING":
            return min(rec["start"], deadline)
        if st.get("never_end"):
            return None
        return min(rec["start"] + float(st["processing_seconds"]), deadline)

    def advance(self, now: float) -> None:
        for rec_id in sorted(self.active):
            rec = self.records.items.get(rec_id)
            while rec is not None and rec["state"] not in TERMINAL:
                ev = self._next_event(rec)
                if ev is None or ev > now:
                    break
                self._fire(rec, ev)
            if rec is None or rec["state"] in TERMINAL:
                self.active.discard(rec_id)

    def _fire(self, rec: Record, ev: float) -> None:
        st = rec["_settings"]
        if ev >= rec["created"] + EXPIRY_SECONDS:
            self._end(rec, "EXPIRED", ev)
        elif rec["state"] == "PENDING":
            problem = f"Emulated batch failure: {st['fail']}." if st["fail"] else rec["_problem"]
            if problem:
                rec["error"] = {"code": 3, "message": problem}  # google.rpc.Code INVALID_ARGUMENT
                self._end(rec, "FAILED", ev)
            else:
                rec.update({"state": "RUNNING", "updated": ev})
                self.records.save(rec)
        elif st["expire"]:
            self._end(rec, "EXPIRED", ev)
        else:
            self._succeed(rec, ev)

    def _end(self, rec: Record, state: str, ev: float) -> None:
        rec.update({"state": state, "updated": ev, "ended": ev})
        self.active.discard(rec["_id"])
        self.records.save(rec)

    def _succeed(self, rec: Record, ev: float) -> None:
        rec_id, st = rec["_id"], rec["_settings"]
        ok = failed = 0
        results = []
        for req in self.records.read_lines(rec_id, "requests.jsonl"):
            error = content.failure(req["request"], st, rec_id, str(req.get("key")))
            if error is None:
                ok += 1
                outcome: dict[str, Any] = {"response": content.answer(req["request"], rec["model"])}
            else:
                failed += 1
                outcome = {"error": error}
            if rec["file"]:
                results.append({"key": req.get("key"), **outcome})
            else:
                meta = req.get("metadata")
                results.append({**outcome, **({"metadata": meta} if meta is not None else {})})
        random.Random(sha256_hex("shuffle", rec_id)).shuffle(results)
        if rec["file"]:
            self.files.add_generated(f"batch-{rec_id}", [jsonl(r) for r in results], ev)
            rec["output"] = "file"
        else:
            self.records.write_lines(rec_id, "responses.jsonl", results)
            rec["output"] = "inline"
        rec["counts"] = {
            "requestCount": rec["_n"],
            "successfulRequestCount": ok,
            "failedRequestCount": failed,
        }
        self.emu.tally("requests_processed", ok + failed)
        self._end(rec, "SUCCEEDED", ev)
