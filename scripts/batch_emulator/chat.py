"""``/v1/chat/completions``: reading a request's messages and answering it deterministically."""

from __future__ import annotations

import json
import math
from typing import Any

from .schema_values import example_for_schema
from .store import sha256_hex


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def message_parts(messages: Any) -> tuple[list[str], int, list[tuple[Any, Any]]]:
    """(text fragments, number of messages, image parts as (url, detail))."""
    texts: list[str] = []
    parts: list[tuple[Any, Any]] = []
    if not isinstance(messages, list):
        return texts, 0, parts
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "image_url":
                    image = part.get("image_url")
                    image = image if isinstance(image, dict) else {"url": image}
                    parts.append((image.get("url"), image.get("detail", "auto")))
                elif isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return texts, len(messages), parts


def texts(body: dict[str, Any]) -> list[str]:
    return message_parts(body.get("messages"))[0]


def images_of(body: dict[str, Any]) -> list[tuple[Any, Any]]:
    return message_parts(body.get("messages"))[2]


def prompt_tokens(body: dict[str, Any], image_tokens: int) -> int:
    """``ceil(text characters / 4) + 4 per message`` plus the images' tokens."""
    fragments, n_messages, _ = message_parts(body.get("messages"))
    return math.ceil(sum(len(t) for t in fragments) / 4) + 4 * n_messages + image_tokens


def completion_tokens(content: str) -> int:
    return math.ceil(len(content) / 4)


def capped(content: str, cap: Any) -> tuple[str, int, bool]:
    """(the answer, its tokens, cut short): an answer longer than the request's output cap
    (max_tokens, max_completion_tokens, max_output_tokens) stops at the cap, as the model's
    would (chat: finish_reason "length"; responses: status "incomplete")."""
    tokens = completion_tokens(content)
    if isinstance(cap, int) and not isinstance(cap, bool) and 0 < cap < tokens:
        return content[: cap * 4], cap, True
    return content, tokens, False


def last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return " ".join(message_parts([msg])[0])
    return ""


def content_for(response_format: Any, answer: str, h8: str) -> str:
    """The answer text, shaped by a ``json_schema`` or ``json_object`` format."""
    if not isinstance(response_format, dict):
        return answer
    if response_format.get("type") == "json_schema":
        js = response_format.get("json_schema", response_format)
        schema = js.get("schema") if isinstance(js, dict) else None
        value = example_for_schema(schema or {"type": "object"}, schema, "value", h8)
        return json.dumps(value, ensure_ascii=False)
    if response_format.get("type") == "json_object":
        return json.dumps({"answer": answer}, ensure_ascii=False)
    return answer


def answer(body: dict[str, Any], *, created: int, image_tokens: int) -> dict[str, Any]:
    """A chat completion: ``Emulated answer <hash>: <start of the last user message>``."""
    digest = sha256_hex(canonical_json(body))
    h8 = digest[:8]
    text = f"Emulated answer {h8}: {last_user_text(body.get('messages'))[:60]}"
    content = content_for(body.get("response_format"), text, h8)
    prompt = prompt_tokens(body, image_tokens)
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    content, completion, cut = capped(content, cap)
    return {
        "id": f"chatcmpl-{digest[8:37]}",
        "object": "chat.completion",
        "created": created,
        "model": str(body.get("model", "")),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if cut else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }
