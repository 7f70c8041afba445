"""One request through the synchronous API, and its answer as an answers/ row.

The request line is the batch's (`{"custom_id", "method", "url", "body"}`, images inline), sent
to its url with the SDK's own retries off: this module decides when to try again. A 429 is
waited out by its headers (`retry-after-ms`, `retry-after`, `x-ratelimit-reset-requests` /
`-tokens`; else 1, 2, 4 ... 32 seconds), up to PATIENCE_429 times in a row; a 5xx or a dropped
connection is tried `retries` more times; any other status (a 400: a bad schema, a rejected
parameter) is the answer, at once. The row is the one a batch's output or error line makes
(br.batches.openai.outcome), so the merge cannot tell them apart.

`send_all` keeps at most `concurrency` requests in flight and hands each row to `done` as it
arrives (in the calling thread), so a kill costs at most the requests in flight.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from br.batches.client import make_client
from br.batches.openai import outcome
from br.config import Config

PATIENCE_429 = 30  # 429s in a row for one request before it is left for a rerun
MAX_WAIT = 120.0  # seconds: the longest a header makes one wait
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Row = dict[str, Any]


def seconds(value: str | None) -> float | None:
    """A reset header's duration: `1s`, `6m0s`, `20ms`, or a bare number of seconds."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parts = DURATION.findall(value)
        return sum(float(n) * UNITS[u] for n, u in parts) if parts else None


def wait_of(headers: Any, tries: int) -> float:
    """How long a 429 asks us to wait: its headers, else an exponential backoff."""
    ms = seconds(headers.get("retry-after-ms"))
    found = [
        ms / 1000 if ms is not None else None,
        seconds(headers.get("retry-after")),
        seconds(headers.get("x-ratelimit-reset-requests"))
        if headers.get("x-ratelimit-remaining-requests") == "0"
        else None,
        seconds(headers.get("x-ratelimit-reset-tokens"))
        if headers.get("x-ratelimit-remaining-tokens") == "0"
        else None,
    ]
    told = [w for w in found if w is not None]
    return min(max(told) if told else 0.5 * 2.0 ** min(tries, 6), MAX_WAIT)


class Caller:
    """Sends request lines through the synchronous API of the config's OpenAI endpoint."""

    def __init__(self, config: Config, mode: str = "live", retries: int = 3) -> None:
        self.client = make_client(config, max_retries=0)
        self.flex = mode == "flex"
        self.retries = retries
        self.sent = 0  # HTTP calls made (each try), for the summary
        self.waited = 0  # 429s waited out
        self.lock = threading.Lock()

    def call(self, request: dict[str, Any]) -> tuple[int, Any, Any]:
        """(status, body, headers) of one HTTP call; status 0 for no answer (connection)."""
        import openai

        body = dict(request["body"])
        if self.flex:
            body["service_tier"] = "flex"
        path = str(request["url"]).removeprefix("/v1")
        with self.lock:
            self.sent += 1
        try:
            # Flex answers may take minutes (OpenAI suggests a 15-minute timeout).
            client = self.client.with_options(timeout=900.0 if self.flex else 600.0)
            return 200, client.post(path, body=body, cast_to=object), {}
        except openai.APIStatusError as e:
            error = e.body if isinstance(e.body, dict) else {"message": str(e.message)}
            return e.status_code, {"error": error}, e.response.headers
        except openai.APIConnectionError as e:
            return 0, {"error": {"message": f"no answer: {e}"}}, {}

    def send(self, request: dict[str, Any]) -> Row:
        """The answer to one request as an outcome row (retryable ones included)."""
        throttled = failed = 0
        while True:
            status, body, headers = self.call(request)
            if status == 429 and throttled < PATIENCE_429:
                throttled += 1
                with self.lock:
                    self.waited += 1
                time.sleep(wait_of(headers, throttled))
                continue
            if (status == 0 or status >= 500) and failed < self.retries:
                failed += 1
                time.sleep(min(2.0**failed, 30.0))
                continue
            line = {"custom_id": request.get("custom_id"), "response": None, "error": None}
            if status:
                line["response"] = {"status_code": status, "body": body}
            else:
                line["error"] = {"code": "connection_error", **body["error"]}
            return {**outcome(line), "batch_id": None, "attempts": 1 + failed}

    def send_all(
        self,
        requests: Iterable[dict[str, Any]],
        concurrency: int,
        done: Callable[[dict[str, Any], Row], None],
    ) -> None:
        """Every request sent, at most `concurrency` at once; `done(request, row)` for each as
        it arrives, in this thread."""
        pending: dict[Future[Row], dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for request in requests:
                if len(pending) >= concurrency:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        done(pending.pop(f), f.result())
                pending[pool.submit(self.send, request)] = request
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    done(pending.pop(f), f.result())
