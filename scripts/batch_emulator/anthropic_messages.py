"""Answers to Anthropic Messages bodies (the ``params`` of a Message Batches request).

Deterministic, as ``chat`` answers OpenAI's: ``Emulated answer <hash>: <start of the last user
message>``, or JSON valid against the schema of ``output_config.format`` (the legacy
``output_format`` too), or a ``tool_use`` block when ``tool_choice`` names a tool
(docs/api-facts-anthropic.md "Messages"). Usage: 4 characters a token, 4 a message, images by
Anthropic's 28-px patch rule. A body the API would refuse, an ``EMULATOR_ERROR:<code>`` marker
or the random error rate gives an ``errored`` result instead.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from . import images
from .chat import canonical_json, capped
from .faults import marker_failure, random_failure
from .schema_values import example_for_schema
from .store import sha256_hex

VERSIONS = ("2023-06-01", "2026-10-21")
# docs/api-facts-anthropic.md "Versions": removed under 2026-10-21.
REMOVED_2026 = ("temperature", "top_p", "top_k")
# docs/api-facts-anthropic.md "Create": refused inside a batch.
NOT_IN_BATCH = ("speed", "store", "previous_thread_event_id", "cache_hint", "context_hint")
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
PATCH = 28
MAX_EDGE, MAX_TOKENS = 1568, 1568  # most models (the Opus 4.7+ limits are larger)

Error = tuple[str, str]  # (error type, message)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def texts(params: dict[str, Any]) -> list[str]:
    out = [b["text"] for b in _blocks(params.get("system")) if isinstance(b.get("text"), str)]
    for msg in params.get("messages") or []:
        if isinstance(msg, dict):
            out += [
                b["text"] for b in _blocks(msg.get("content")) if isinstance(b.get("text"), str)
            ]
    return out


def _image_sources(params: dict[str, Any]) -> list[Any]:
    found = []
    for msg in params.get("messages") or []:
        if isinstance(msg, dict):
            found += [
                b.get("source") for b in _blocks(msg.get("content")) if b.get("type") == "image"
            ]
    return found


def image_tokens(width: int, height: int) -> int:
    """ceil(w/28) x ceil(h/28) after scaling down (aspect kept) to 1568 px and 1568 tokens."""
    w, h = float(width), float(height)
    if max(w, h) > MAX_EDGE:
        w, h = w * MAX_EDGE / max(w, h), h * MAX_EDGE / max(w, h)
    while math.ceil(w / PATCH) * math.ceil(h / PATCH) > MAX_TOKENS:
        w, h = w * 0.98, h * 0.98
    return math.ceil(w / PATCH) * math.ceil(h / PATCH)


def _image_size(source: Any) -> tuple[int, int]:
    """The size of an image source, or ImageRejected as the API would refuse it."""
    if not isinstance(source, dict):
        raise images.ImageRejected("invalid_image", "image.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        media = source.get("media_type")
        if media not in MEDIA_TYPES:
            raise images.ImageRejected(
                "invalid_image",
                f"image.source.base64.media_type: Input should be {', '.join(MEDIA_TYPES)}",
            )
        url = f"data:{media};base64,{source.get('data', '')}"
        return images.check_url(url).size
    if kind == "url":
        return images.check_url(source.get("url")).size
    if kind == "file":
        return images.REMOTE_SIZE  # UNVERIFIED: a Files API image, counted as 512 x 512
    raise images.ImageRejected("invalid_image", "image.source: unknown source type")


def check(params: Any, version: str) -> Error | None:
    """Why the API would refuse this body (an ``errored`` line), or None."""
    if not isinstance(params, dict):
        return "invalid_request_error", "params: Input should be a valid dictionary"
    for name in ("model", "max_tokens", "messages"):
        if name not in params:
            return "invalid_request_error", f"{name}: Field required"
    cap = params["max_tokens"]
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        return "invalid_request_error", "max_tokens: must be at least 1 in a batch"
    messages = params["messages"]
    if not isinstance(messages, list) or not messages:
        return "invalid_request_error", "messages: at least one message is required"
    if params.get("stream") is True:
        return "invalid_request_error", "stream: streaming is not supported in batches"
    for name in NOT_IN_BATCH:
        if name in params:
            return "invalid_request_error", f"{name}: not supported in the Message Batches API"
    if version == "2026-10-21":
        for name in REMOVED_2026:
            if name in params:
                return "invalid_request_error", (
                    f"{name}: Extra inputs are not permitted (removed in API version 2026-10-21)"
                )
    try:
        for source in _image_sources(params):
            _image_size(source)
    except images.ImageRejected as exc:
        return "invalid_request_error", f"messages: {exc.message}"
    return None


MARKER_ERRORS = {
    "context_length_exceeded": ("invalid_request_error", "prompt is too long: 200001 tokens"),
    "500": ("api_error", "Internal server error"),
    "429": ("rate_limit_error", "Rate limited (emulated)"),
    "529": ("overloaded_error", "Overloaded"),
}


def failure(params: Any, version: str, settings: dict[str, Any], batch: str, cid: str) -> Error:
    """The error of a request that fails: its body, a marker, or the random error rate."""
    problem = check(params, version)
    if problem is not None:
        return problem
    code = marker_failure(texts(params)) or random_failure(settings, batch, cid)
    if not code:
        return "", ""
    return MARKER_ERRORS.get(code, ("invalid_request_error", f"Emulated error: {code}."))


def input_tokens(params: dict[str, Any]) -> int:
    fragments = texts(params)
    n = len(params.get("messages") or []) + (1 if params.get("system") else 0)
    pictures = 0
    for source in _image_sources(params):
        with contextlib.suppress(images.ImageRejected):
            pictures += image_tokens(*_image_size(source))
    return math.ceil(sum(len(t) for t in fragments) / 4) + 4 * n + pictures


def _last_user_text(params: dict[str, Any]) -> str:
    for msg in reversed(params.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return " ".join(b["text"] for b in _blocks(msg.get("content")) if "text" in b)
    return ""


def _schema(params: dict[str, Any]) -> Any:
    """The JSON schema of the structured output asked for, if any."""
    for fmt in ((params.get("output_config") or {}).get("format"), params.get("output_format")):
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return fmt.get("schema") or {"type": "object"}
    return None


def _forced_tool(params: dict[str, Any]) -> dict[str, Any] | None:
    choice = params.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        return None
    tools = [t for t in params.get("tools") or [] if isinstance(t, dict)]
    return next((t for t in tools if t.get("name") == choice.get("name")), None)


def answer(params: dict[str, Any]) -> dict[str, Any]:
    """A ``Message`` for a body that does not fail."""
    digest = sha256_hex(canonical_json(params))
    h8 = digest[:8]
    tool = _forced_tool(params)
    schema = _schema(params)
    stop = "end_turn"
    if tool is not None:
        schema_of = tool.get("input_schema") or {"type": "object"}
        value = example_for_schema(schema_of, schema_of, "value", h8)
        block = {"type": "tool_use", "id": f"toolu_{digest[8:32]}", "name": tool["name"]}
        content = [{**block, "input": value}]
        produced, stop = math.ceil(len(canonical_json(value)) / 4), "tool_use"
    else:
        if schema is not None:
            text = canonical_json(example_for_schema(schema, schema, "value", h8))
        else:
            text = f"Emulated answer {h8}: {_last_user_text(params)[:60]}"
        text, produced, cut = capped(text, params.get("max_tokens"))
        stop = "max_tokens" if cut else stop
        content = [{"type": "text", "text": text}]
    return {
        "id": f"msg_{digest[32:56]}",
        "type": "message",
        "role": "assistant",
        "model": str(params.get("model", "")),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens(params),
            "output_tokens": produced,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            # UNVERIFIED: whether batch results set service_tier (the enum has "batch").
            "service_tier": "batch",
        },
    }
