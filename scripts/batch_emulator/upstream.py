"""Upstream forwarding: each request of a running batch, and each live call, sent to a real
OpenAI-compatible server (vLLM, Ollama, llama.cpp) instead of answered here.

The upstream key comes only from the environment variable ``EMULATOR_UPSTREAM_API_KEY``
(never the command line, where ``ps`` shows it). Answers are appended to the batch's results
sidecar as they come, so a restart asks only for the rest.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .exceptions import error_envelope
from .store import Record, Store, jsonl

KEY_VARIABLE = "EMULATOR_UPSTREAM_API_KEY"
Answer = tuple[int, dict[str, Any]]


def post(base: str, api_key: str, path: str, body: dict[str, Any]) -> Answer:
    """POST a JSON body to ``base + path``; (status, JSON body), retrying connection errors."""
    url = base.rstrip("/") + path.removeprefix("/v1")
    data = json.dumps(body).encode("utf-8")
    last_error = ""
    for attempt in range(3):
        req = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = error_envelope(raw.decode("utf-8", "replace"), "server_error", None, None)
            return exc.code, payload
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = str(exc)
            time.sleep(0.2 * (attempt + 1))
    return 500, error_envelope(
        f"Upstream connection error: {last_error}", "server_error", None, "upstream_error"
    )


@dataclass
class Run:
    """In-memory progress of one batch being executed against the upstream."""

    total: int
    results: dict[str, Answer] = field(default_factory=dict)
    stopped: bool = False
    done_at: float | None = None


class Upstream:
    """The upstream server, its worker pool, and the batches it is running."""

    def __init__(
        self,
        base: str,
        api_key: str,
        concurrency: int,
        store: Store,
        lock: threading.RLock,
        on_answer: Callable[[], None],
    ) -> None:
        self.base = base
        self.api_key = api_key
        self.store = store
        self.lock = lock
        self.on_answer = on_answer
        self.runs: dict[str, Run] = {}
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, concurrency), thread_name_prefix="upstream"
        )

    def call(self, endpoint: str, body: dict[str, Any]) -> Answer:
        return post(self.base, self.api_key, endpoint, body)

    def start(self, b: Record) -> None:
        run = Run(total=int(b["_n"]))
        self.runs[b["id"]] = run
        self._submit(b, run)

    def resume(self, b: Record) -> None:
        """Reload the answers a batch already has, and ask for the rest if it still runs."""
        run = Run(total=int(b["_n"] or 0))
        path = self.store.results_path(b["id"])
        if path.exists():
            with open(path, "rb") as fh:
                for raw in fh:
                    with contextlib.suppress(ValueError, KeyError):
                        item = json.loads(raw)
                        run.results[item["custom_id"]] = (int(item["status"]), item["body"])
        self.runs[b["id"]] = run
        if b["status"] == "in_progress":
            self._submit(b, run)
        else:
            run.stopped = True

    def stop(self, batch_id: str) -> Run | None:
        run = self.runs.get(batch_id)
        if run is not None:
            run.stopped = True
        return run

    def progress(self, batch_id: str) -> tuple[int, int]:
        """(requests answered, requests answered with a 2xx)."""
        run = self.runs.get(batch_id)
        if run is None:
            return 0, 0
        ok = sum(1 for status, _ in run.results.values() if 200 <= status < 300)
        return len(run.results), ok

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, b: Record, run: Run) -> None:
        pending = []
        path = self.store.requests_path(b["id"])
        if path.exists():
            with open(path, "rb") as fh:
                pending = [r for r in map(json.loads, fh) if r["custom_id"] not in run.results]
        if not pending:
            run.done_at = time.time()
            return
        for req in pending:
            self.executor.submit(self._task, b["id"], b["endpoint"], run, req)

    def _task(self, batch_id: str, endpoint: str, run: Run, req: dict[str, Any]) -> None:
        if run.stopped:
            return
        status, body = self.call(endpoint, req["body"])
        with self.lock:
            if run.stopped and self.runs.get(batch_id) is not run:
                return
            b = self.store.batches.get(batch_id)
            if b is None or b["status"] not in ("in_progress", "cancelling"):
                return
            run.results[req["custom_id"]] = (status, body)
            self.on_answer()
            item = {"custom_id": req["custom_id"], "status": status, "body": body}
            with open(self.store.results_path(batch_id), "ab") as fh:
                fh.write(jsonl(item))
            if len(run.results) >= run.total and run.done_at is None:
                run.done_at = time.time()
