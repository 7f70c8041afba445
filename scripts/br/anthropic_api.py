"""Anthropic's Messages API as a config meets it: what a step cannot ask of it, found when the
config is read (one line, before anything is paid). The Provider that speaks to it is
br/batches/anthropic.py.

Facts from ../shared/reference/anthropic-message-batches/FACTS.md (section in brackets).
"""

from __future__ import annotations

from typing import Any

from br.cli import UserError
from br.openai_api import CHAT

# What Anthropic's Messages API has no counterpart for (../shared/reference/
# anthropic-message-batches/FACTS.md §9.1; temperature, top_p and top_k are removed in API
# version 2026-10-21, which the anthropic SDK 2.x sends, §1.4). `stop` becomes stop_sequences.
NOT_ON_ANTHROPIC = {
    "temperature",
    "top_p",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "verbosity",
    "logprobs",
    "top_logprobs",
    "service_tier",
}


def check_step(where: str, endpoint: str, body: dict[str, Any]) -> None:
    """A step with provider: anthropic: what it cannot send, in one line."""
    if endpoint != CHAT:
        raise UserError(
            f"{where}: endpoint {endpoint} has no equivalent on Anthropic's Message Batches "
            "(messages only); remove endpoint: or the provider"
        )
    for key in body:
        if key in NOT_ON_ANTHROPIC:
            raise UserError(
                f"{where}: '{key}' has no equivalent on Anthropic's Message Batches (API "
                "2026-10-21); remove it for provider: anthropic"
            )
    if not body.get("max_tokens") and not body.get("max_completion_tokens"):
        raise UserError(
            f"{where}: Anthropic requires max_tokens (the answer's length cap, which is paid); "
            "add max_tokens: 1024 (or the cap you want) to the step"
        )
