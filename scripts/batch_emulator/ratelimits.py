"""The synchronous endpoints' limits: requests and tokens per minute per model, the latency of
a call, and the flex tier. The state and the decisions, no HTTP (routes.Live asks here).

OpenAI's limits are per model over a rolling minute; each answer carries
`x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`
(a duration such as `1s` or `6m0s`) and the same three for tokens, and a 429 says which limit
was hit, with `retry-after` (seconds). UNVERIFIED: whether the real 429 always carries
`retry-after`; the emulator sends it, whole seconds rounded up. A request's tokens are its
estimated prompt tokens plus its output cap (max_tokens, max_completion_tokens or
max_output_tokens), as OpenAI counts them against TPM.

Flex (`service_tier: "flex"`): the models of FLEX_MODELS only (another gets a 400); a share
`flex_unavailable_rate` of calls gets 429 "Resource Unavailable" (UNVERIFIED: its code and
whether it carries retry-after; none is sent); each flex call takes `flex_seconds` more.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .exceptions import ApiError

WINDOW = 60.0  # seconds: the rolling minute (rate_window_seconds shortens it, for tests)
# OpenAI's flex processing guide and pricing page: o3, o4-mini and the gpt-5 family.
FLEX_MODELS = re.compile(r"^(o3|o4-mini|gpt-5(\.\d+)?(-mini|-nano)?)(-\d{4}-\d{2}-\d{2})?$")
OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def duration(seconds: float) -> str:
    """`x-ratelimit-reset-*`'s format: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 1)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    return f"{int(seconds // 60)}m{int(seconds % 60)}s"


def request_tokens(prompt_tokens: int, body: dict[str, Any]) -> int:
    cap = next((body[k] for k in OUTPUT_CAPS if isinstance(body.get(k), int)), 0)
    return prompt_tokens + cap


@dataclass(frozen=True)
class Decision:
    """A call against the minute's limits: `over` names the limit it would break ("requests",
    "tokens"), empty when it was admitted; the rest is the minute's state after it."""

    over: str
    rpm: int | None
    tpm: int | None
    requests_used: int
    tokens_used: int
    requested: int
    reset: float  # seconds until the oldest call leaves the window
    wait: float  # seconds until this call would fit (0 when admitted)

    @property
    def limit(self) -> int | None:
        return self.rpm if self.over == "requests" else self.tpm

    @property
    def used(self) -> int:
        return self.requests_used if self.over == "requests" else self.tokens_used

    @property
    def retry_after(self) -> int:
        """`retry-after`: whole seconds, rounded up."""
        return max(math.ceil(self.wait), 1)


class Limits:
    """Per model, the calls and tokens of the rolling minute."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, deque[tuple[float, int]]] = {}

    def decide(
        self,
        model: str,
        tokens: int,
        rpm: int | None,
        tpm: int | None,
        now: float | None = None,
        window: float = WINDOW,
    ) -> Decision:
        """Whether a call fits the model's minute (it is then counted), and the state each
        provider's headers are made of: its route words them (OpenAI: `admit`)."""
        now = time.time() if now is None else now
        with self.lock:
            calls = self.seen.setdefault(model, deque())
            while calls and calls[0][0] <= now - window:
                calls.popleft()
            used_tokens = sum(t for _, t in calls)
            over_requests = rpm is not None and len(calls) + 1 > rpm
            over_tokens = tpm is not None and used_tokens + tokens > tpm
            if not (over_requests or over_tokens):
                calls.append((now, tokens))
            over = "requests" if over_requests else "tokens" if over_tokens else ""
            return Decision(
                over=over,
                rpm=rpm,
                tpm=tpm,
                requests_used=len(calls),
                tokens_used=sum(t for _, t in calls),
                requested=1 if over_requests else tokens,
                reset=(calls[0][0] + window - now) if calls else 0.0,
                wait=self.wait(calls, tokens, tpm, now, over_requests, window) if over else 0.0,
            )

    def admit(
        self,
        model: str,
        tokens: int,
        rpm: int | None,
        tpm: int | None,
        now: float | None = None,
        window: float = WINDOW,
    ) -> dict[str, str]:
        """OpenAI's rate limit headers of an admitted call, or ApiError 429 (with them) if the
        call would go over a limit: it then counts nothing."""
        d = self.decide(model, tokens, rpm, tpm, now, window)
        headers = self.headers(d)
        if d.over:
            unit = "RPM" if d.over == "requests" else "TPM"
            raise ApiError(
                429,
                f"Rate limit reached for {model} in organization org-emulator on {d.over} per "
                f"min ({unit}): Limit {d.limit}, Used {d.used}, Requested {d.requested}. "
                f"Please try again in {duration(d.wait)}.",
                type_=d.over,
                code="rate_limit_exceeded",
                headers={**headers, "retry-after": str(d.retry_after)},
            )
        return headers

    @staticmethod
    def wait(
        calls: deque[tuple[float, int]],
        tokens: int,
        tpm: int | None,
        now: float,
        requests: bool,
        window: float,
    ) -> float:
        """Seconds until the call would fit: the oldest call leaving the window, or enough
        tokens leaving it."""
        if not calls:
            return 1.0
        if requests:
            return calls[0][0] + window - now
        assert tpm is not None
        used = sum(t for _, t in calls)
        for at, t in calls:
            used -= t
            if used + tokens <= tpm:
                return at + window - now
        return window

    @staticmethod
    def headers(d: Decision) -> dict[str, str]:
        out: dict[str, str] = {}
        if d.rpm is not None:
            out["x-ratelimit-limit-requests"] = str(d.rpm)
            out["x-ratelimit-remaining-requests"] = str(max(d.rpm - d.requests_used, 0))
            out["x-ratelimit-reset-requests"] = duration(d.reset)
        if d.tpm is not None:
            out["x-ratelimit-limit-tokens"] = str(d.tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(d.tpm - d.tokens_used, 0))
            out["x-ratelimit-reset-tokens"] = duration(d.reset)
        return out


def check_flex(body: dict[str, Any], endpoint: str, unavailable: bool) -> None:
    """A flex call the API refuses (400) or cannot serve now (429)."""
    if body.get("service_tier") != "flex":
        return
    model = str(body.get("model"))
    if endpoint == "/v1/embeddings" or not FLEX_MODELS.match(model):
        # UNVERIFIED: the real message's wording.
        raise ApiError(
            400,
            f"The flex service tier is not available for model '{model}'.",
            param="service_tier",
            code="invalid_value",
        )
    if unavailable:
        raise ApiError(
            429,
            "Resource Unavailable: flex capacity is exhausted; please retry later.",
            type_="resource_unavailable",
            code="resource_unavailable",
        )
