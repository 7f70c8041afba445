"""Token estimates for the plan, the budget and batch metadata."""

from __future__ import annotations

import math
from typing import Any

from images import part_tokens


def estimate_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens: 4 per message, a token per 4 characters of text, and each image
    by OpenAI's rule for its detail (images.part_tokens: 85 at low; tiles at high and auto).

    The same rule the emulator applies; real tokenizers differ, so a budget should keep a margin.
    """
    chars, image_tokens, messages = 0, 0, body.get("messages") or []
    for message in messages:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                chars += len(part.get("text") or "")
            elif part.get("type") == "image_url":
                image_tokens += part_tokens(part)
    return math.ceil(chars / 4) + 4 * len(messages) + image_tokens


# Context windows (tokens) of known models, for the plan's and make_requests' warning. A model
# matches its exact name, else the longest name it starts with (gpt-4o-mini-2024-07-18 ->
# gpt-4o-mini). Published figures; a config's `context_windows: {model: tokens}` overrides.
CONTEXT_WINDOWS = {
    "gpt-3.5-turbo": 16_385,
    "gpt-4": 8_192,
    "gpt-4-turbo": 128_000,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-5": 400_000,
    "gpt-5-mini": 400_000,
    "gpt-5-nano": 400_000,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
}


def context_window(model: str, overrides: dict[str, int] | None = None) -> int | None:
    """The model's context window in tokens, or None for a model nobody told us about."""
    for table in (overrides or {}, CONTEXT_WINDOWS):
        if model in table:
            return table[model]
        prefixes = [name for name in table if model.startswith(name + "-")]
        if prefixes:
            return table[max(prefixes, key=len)]
    return None
