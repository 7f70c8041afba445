"""``/v1/responses``: reading ``instructions`` and ``input``, answering with a Response object.

The object follows the spec's ``Response`` schema (docs/api-facts.md "Responses"): one
assistant ``message`` output item with an ``output_text`` part, and ``usage`` in the Responses
API's own names (input_tokens, output_tokens, total_tokens).
"""

from __future__ import annotations

import math
from typing import Any

from .chat import canonical_json, completion_tokens, content_for
from .store import sha256_hex


def input_parts(body: dict[str, Any]) -> tuple[list[str], int, list[tuple[Any, Any]]]:
    """(texts including the instructions, number of input messages, image parts)."""
    texts: list[str] = []
    images: list[tuple[Any, Any]] = []
    if isinstance(body.get("instructions"), str):
        texts.append(body["instructions"])
    given = body.get("input")
    if isinstance(given, str):
        return [*texts, given], 1, images
    if not isinstance(given, list):
        return texts, 0, images
    messages = 0
    for item in given:
        if not isinstance(item, dict):
            continue
        messages += 1
        content = item.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "input_image":
                images.append((part.get("image_url"), part.get("detail", "auto")))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    return texts, messages, images


def texts(body: dict[str, Any]) -> list[str]:
    return input_parts(body)[0]


def images_of(body: dict[str, Any]) -> list[tuple[Any, Any]]:
    return input_parts(body)[2]


def prompt_tokens(body: dict[str, Any], image_tokens: int) -> int:
    fragments, messages, _ = input_parts(body)
    return math.ceil(sum(len(t) for t in fragments) / 4) + 4 * messages + image_tokens


def _last_text(body: dict[str, Any]) -> str:
    given = body.get("input")
    if isinstance(given, str):
        return given
    fragments, _, _ = input_parts({"input": given})
    return fragments[-1] if fragments else ""


def answer(body: dict[str, Any], *, created: int, image_tokens: int) -> dict[str, Any]:
    digest = sha256_hex(canonical_json(body))
    h8 = digest[:8]
    text_param = body.get("text") if isinstance(body.get("text"), dict) else {}
    fmt = text_param.get("format") if isinstance(text_param.get("format"), dict) else None
    content = content_for(fmt, f"Emulated answer {h8}: {_last_text(body)[:60]}", h8)
    prompt = prompt_tokens(body, image_tokens)
    completion = completion_tokens(content)
    return {
        "id": f"resp_{digest[8:40]}",
        "object": "response",
        "created_at": created,
        "status": "completed",
        "completed_at": created,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model", "")),
        "output": [
            {
                "id": f"msg_{digest[40:64]}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
                ],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": None,
        "store": True,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": fmt or {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
        "metadata": body.get("metadata") or {},
    }
