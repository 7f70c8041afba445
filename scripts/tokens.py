"""Token estimates for the plan, the budget and batch metadata."""

from __future__ import annotations

import math
from typing import Any


def estimate_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens: 4 per message, a token per 4 characters of text, 85 an image.

    The same rule the emulator applies; real tokenizers differ, so a budget should keep a margin.
    """
    chars, images, messages = 0, 0, body.get("messages") or []
    for message in messages:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                chars += len(part.get("text") or "")
            elif part.get("type") == "image_url":
                images += 1
    return math.ceil(chars / 4) + 4 * len(messages) + 85 * images
