"""The token budget in live mode: requests held so the estimated tokens sent per minute stay
within it, per model.

In batch mode the budget (TOKEN_BUDGET, else the config's token_budget, per model) bounds the
tokens enqueued at once; a live run has nothing enqueued, and the providers' live limit is
tokens per minute (OpenAI's TPM, Anthropic's ITPM/OTPM, Gemini's TPM), so there the budget is
read as tokens per minute. A request counts its estimated input tokens plus its output cap
(max_tokens), as OpenAI counts a request against TPM before it runs. Before each request goes,
`hold` waits until the last minute's sends leave room for it; a request larger than the whole
budget goes alone in its minute. BR_RATE_WINDOW (seconds; default 60) shortens the minute,
for tests.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from br.batches.providers import line_identity

WINDOW = 60.0
CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def request_tokens(line: dict[str, Any]) -> tuple[str, int]:
    """(model, estimated input tokens plus the output cap) of a chunk line."""
    _, _, model, _, tokens = line_identity(line)
    gemini = (line.get("request") or {}).get("generation_config")  # a Gemini line's caps
    body = line.get("params") or line.get("body") or gemini or {}
    cap = next((body[k] for k in CAPS if isinstance(body.get(k), int)), 0)
    return str(model), int(tokens) + int(cap)


class Pace:
    """Per model, what was sent in the last window: `hold(line)` returns when it fits."""

    def __init__(self, budget_of: Callable[[str], int | None]) -> None:
        self.budget_of = budget_of
        self.window = float(os.environ.get("BR_RATE_WINDOW") or WINDOW)
        self.sent: dict[str, deque[tuple[float, int]]] = {}
        self.held = 0.0  # seconds spent holding requests, for the summary

    def hold(self, line: dict[str, Any]) -> None:
        model, tokens = request_tokens(line)
        budget = self.budget_of(model)
        if budget is None:
            return
        sent = self.sent.setdefault(model, deque())
        while True:
            now = time.monotonic()
            while sent and sent[0][0] <= now - self.window:
                sent.popleft()
            if not sent or sum(t for _, t in sent) + tokens <= budget:
                sent.append((now, tokens))
                return
            pause = sent[0][0] + self.window - now
            self.held += pause
            time.sleep(pause)
