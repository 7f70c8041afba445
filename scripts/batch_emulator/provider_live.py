"""Anthropic's and Gemini's synchronous model calls, as routes.Live serves OpenAI's: Anthropic
``POST /v1/messages`` and Gemini ``POST /{v1,v1beta}/models/{m}:generateContent``, answered as
their batches answer the same body (anthropic_messages.answer, gemini_content.answer), with
the same latency (``live_seconds``) and per-model limits (``rpm_limit``, ``tpm_limit`` over
``rate_window_seconds``: ratelimits.Limits), counted in the stats (``live_calls``,
``live_rate_limited``, ``requests_processed``).

A call over a limit gets each provider's own 429 (docs/api-facts-anthropic.md and
docs/api-facts-gemini.md, "Live calls"):

- Anthropic: ``rate_limit_error`` with ``retry-after`` (whole seconds) and, on every answer,
  ``anthropic-ratelimit-requests-{limit,remaining,reset}`` and ``-tokens-*`` (reset as an RFC
  3339 time). The emulator counts input tokens plus the output cap as "tokens", as OpenAI's
  TPM does; Anthropic splits them into input and output limits (not emulated).
- Gemini: ``RESOURCE_EXHAUSTED`` in google.rpc.Status, with a ``QuotaFailure`` and a
  ``RetryInfo`` (``retryDelay: "17s"``) detail, and no rate-limit headers. UNVERIFIED (issue
  reports, not the docs): the details' presence and wording.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from starlette.concurrency import run_in_threadpool

from . import anthropic_messages, gemini_content
from .lifecycle import Emulator
from .provider_errors import ANTHROPIC_TYPES, AnthropicError, GoogleError
from .ratelimits import Decision, Limits, request_tokens

ANTHROPIC_STATUS = {t: s for s, t in ANTHROPIC_TYPES.items()}
GEMINI_QUOTA = "generativelanguage.googleapis.com/generate_content_paid_tier_{}_per_minute"


def rfc3339(seconds_from_now: float) -> str:
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def anthropic_headers(d: Decision) -> dict[str, str]:
    out: dict[str, str] = {}
    kinds = (("requests", d.rpm, d.requests_used), ("tokens", d.tpm, d.tokens_used))
    for kind, limit, used in kinds:
        if limit is not None:
            out[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            out[f"anthropic-ratelimit-{kind}-remaining"] = str(max(limit - used, 0))
            out[f"anthropic-ratelimit-{kind}-reset"] = rfc3339(d.reset)
    return out


def gemini_429(model: str, d: Decision) -> GoogleError:
    unit = "requests" if d.over == "requests" else "input_token_count"
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
        f"\n* Quota exceeded for metric: {GEMINI_QUOTA.format(unit)}, limit: {d.limit}, model: "
        f"{model}\nPlease retry in {d.wait:.2f}s."
    )
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": GEMINI_QUOTA.format(unit), "quotaValue": str(d.limit)}],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{d.retry_after}s"},
    ]
    return GoogleError(429, message, "RESOURCE_EXHAUSTED", details)


class ProviderLive:
    """The live calls of Anthropic and Gemini: limits, latency, answers and stats."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.limits = Limits()  # per model; model names do not collide across providers

    def admit(self, model: str, tokens: int) -> Decision | None:
        """The minute's state after this call (None when no limit is set); counts a 429."""
        settings = self.emu.faults.settings
        rpm, tpm = settings["rpm_limit"], settings["tpm_limit"]
        if rpm is None and tpm is None:
            return None
        window = float(settings["rate_window_seconds"]) or 60.0
        d = self.limits.decide(model, tokens, rpm, tpm, window=window)
        if d.over:
            self.emu.tally("live_rate_limited")
        return d

    async def answered(self, answer: Any) -> Any:
        delay = float(self.emu.faults.settings["live_seconds"])
        if delay:
            await asyncio.sleep(delay)
        payload = await run_in_threadpool(answer)
        self.emu.tally("requests_processed")
        return payload

    async def message(self, params: dict[str, Any], version: str) -> tuple[Any, dict[str, str]]:
        """(a Message, the rate limit headers) for a `POST /v1/messages` body."""
        self.emu.tally("live_calls")
        settings = self.emu.faults.settings
        # The batch's checks: what a batch refuses in a line, the Messages API refuses in a 400.
        kind, message = anthropic_messages.failure(params, version, settings, "live", "")
        if kind:
            raise AnthropicError(ANTHROPIC_STATUS.get(kind, 400), message, kind)
        tokens = request_tokens(anthropic_messages.input_tokens(params), params)
        d = self.admit(str(params["model"]), tokens)
        headers = anthropic_headers(d) if d else {}
        if d and d.over:
            message = (
                f"This request would exceed the rate limit for your organization of {d.limit} "
                f"{'requests' if d.over == 'requests' else 'tokens'} per minute. For details, "
                "refer to: https://docs.claude.com/en/api/rate-limits."
            )
            headers["retry-after"] = str(d.retry_after)
            raise AnthropicError(429, message, "rate_limit_error", headers)

        def answer() -> dict[str, Any]:
            out = anthropic_messages.answer(params)
            out["usage"]["service_tier"] = "standard"
            return out

        return await self.answered(answer), headers

    async def content(self, model: str, req: dict[str, Any]) -> Any:
        """A GenerateContentResponse for a `:generateContent` body."""
        self.emu.tally("live_calls")
        problem = gemini_content.failure(req, self.emu.faults.settings, "live", "")
        if problem is not None:
            raise GoogleError(int(problem["code"]), problem["message"], problem["status"])
        config = gemini_content.pick(req, "generationConfig") or {}
        cap = gemini_content.pick(config, "maxOutputTokens")
        tokens = gemini_content.prompt_tokens(req) + (cap if isinstance(cap, int) else 0)
        d = self.admit(model, tokens)
        if d and d.over:
            raise gemini_429(model, d)
        return await self.answered(lambda: gemini_content.answer(req, f"models/{model}"))
