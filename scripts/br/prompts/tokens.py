"""Token estimates for the plan, the budget and batch metadata."""

from __future__ import annotations

import math
from typing import Any

from br.prompts.images import part_tokens


def estimate_tokens(body: dict[str, Any], url: str | None = None) -> int:
    """Estimated prompt tokens: 4 per message, a token per 4 characters of text, and each image
    by OpenAI's rule for its detail (images.part_tokens: 85 at low; tiles at high and auto).

    By the body's shape (`url` settles a bare string input): chat `messages`; a Responses body's
    `instructions` and `input` (4 per input message); an embedding's inputs (a token per 4
    characters of each, a token per token of a token array). The same rules the emulator
    applies; real tokenizers differ, so a budget should keep a margin.
    """
    if "messages" in body:
        return chat_tokens(body.get("messages") or [])
    if is_embedding(body, url):
        return embedding_tokens(body.get("input"))
    return response_tokens(body)


def is_embedding(body: dict[str, Any], url: str | None) -> bool:
    if url is not None:
        return url == "/v1/embeddings"
    given = body.get("input")
    if isinstance(given, list) and given and all(isinstance(x, dict) for x in given):
        return False
    return "embedding" in str(body.get("model")) or "dimensions" in body


def chat_tokens(messages: list[dict[str, Any]]) -> int:
    chars, image_tokens = 0, 0
    for message in messages:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                chars += len(part.get("text") or "")
            elif part.get("type") == "image_url":
                image_tokens += part_tokens(part)
    return math.ceil(chars / 4) + 4 * len(messages) + image_tokens


def response_tokens(body: dict[str, Any]) -> int:
    """A /v1/responses body: instructions and input texts, 4 per input message, images."""
    instructions = body.get("instructions")
    chars = len(instructions) if isinstance(instructions, str) else 0
    given = body.get("input")
    if isinstance(given, str):
        return math.ceil((chars + len(given)) / 4) + 4
    items = [item for item in given if isinstance(item, dict)] if isinstance(given, list) else []
    image_tokens = 0
    for item in items:
        content = item.get("content")
        for part in [{"text": content}] if isinstance(content, str) else content or []:
            if part.get("type") == "input_image":
                image_tokens += part_tokens(part)
            elif isinstance(part.get("text"), str):
                chars += len(part["text"])
    return math.ceil(chars / 4) + 4 * len(items) + image_tokens


def embedding_tokens(given: Any) -> int:
    """An embedding request's input: a string, strings, a token array or token arrays."""
    items = given if isinstance(given, list) else [given]
    if items and all(isinstance(x, int) for x in items):
        return len(items)
    return sum(
        math.ceil(len(x) / 4) if isinstance(x, str) else len(x) if isinstance(x, list) else 0
        for x in items
    )


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
