"""One request through a provider's synchronous API, and its answer as an answers/ row.

The request line is the batch's (a chunk's line, images inline), sent through the step's
provider (wires.py: OpenAI, Anthropic, Gemini) with the SDK's own retries off: this module
decides when to try again. A 429 is waited out as long as the provider's answer asks (its
headers, or Gemini's RetryInfo; else 1, 2, 4 ... 32 seconds), up to PATIENCE_429 times in a
row; a 5xx (529 included) or a dropped connection is tried `retries` more times; any other
status (a 400: a bad schema, a rejected parameter) is the answer, at once. The row is the one
that provider's batch result line makes, so the merge cannot tell them apart.

`send_all` keeps at most `concurrency` requests in flight and hands each row to `done` as it
arrives (in the calling thread), so a kill costs at most the requests in flight. `pace`, when
given, is asked before each request is sent (live.pace: the token budget's tokens a minute).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from br.config import Config
from br.live.wires import Reply, wire_for

PATIENCE_429 = 30  # 429s in a row for one request before it is left for a rerun
MAX_WAIT = 120.0  # seconds: the longest a provider's answer makes one wait

Row = dict[str, Any]


def wait_of(reply: Reply, tries: int) -> float:
    """How long a 429 asks us to wait: what it says, else an exponential backoff."""
    told = reply.wait if reply.wait is not None else 0.5 * 2.0 ** min(tries, 6)
    return min(told, MAX_WAIT)


class Caller:
    """Sends request lines through the synchronous API of a step's provider."""

    def __init__(
        self, config: Config, mode: str = "live", retries: int = 3, provider: str = "openai"
    ) -> None:
        self.wire = wire_for(config, provider, mode)
        self.mode = mode
        self.retries = retries
        self.sent = 0  # HTTP calls made (each try), for the summary
        self.waited = 0  # 429s waited out
        self.lock = threading.Lock()

    def call(self, request: dict[str, Any]) -> Reply:
        with self.lock:
            self.sent += 1
        return self.wire.call(request)

    def send(self, request: dict[str, Any]) -> Row:
        """The answer to one request as an outcome row (retryable ones included)."""
        throttled = failed = 0
        while True:
            reply = self.call(request)
            if reply.status == 429 and throttled < PATIENCE_429:
                throttled += 1
                with self.lock:
                    self.waited += 1
                time.sleep(wait_of(reply, throttled))
                continue
            if (reply.status == 0 or reply.status >= 500) and failed < self.retries:
                failed += 1
                time.sleep(min(2.0**failed, 30.0))
                continue
            return {**reply.row, "batch_id": None, "attempts": 1 + failed, "mode": self.mode}

    def send_all(
        self,
        requests: Iterable[dict[str, Any]],
        concurrency: int,
        done: Callable[[dict[str, Any], Row], None],
        before: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Every request sent, at most `concurrency` at once; `before(request)` just before it
        goes (a journal's sent mark), `done(request, row)` as its answer arrives, both in this
        thread."""
        pending: dict[Future[Row], dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for request in requests:
                if len(pending) >= concurrency:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        done(pending.pop(f), f.result())
                if before is not None:
                    before(request)
                pending[pool.submit(self.send, request)] = request
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    done(pending.pop(f), f.result())
