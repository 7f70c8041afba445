"""``/v1/chat/completions``: reading a request's messages and answering it deterministically."""

from __future__ import annotations

import json
import math
from typing import Any

from .exceptions import ApiError, InvalidType, InvalidValue
from .schema_values import example_for_schema
from .store import sha256_hex

# The spec's bounds of the sampling and length parameters (openapi-full.yaml:
# CreateChatCompletionRequest; CreateResponse shares temperature, top_p and top_logprobs):
# (JSON type, lowest, highest), None for no bound. null is always accepted (the default).
RANGES: dict[str, tuple[str, float | None, float | None]] = {
    "temperature": ("number", 0, 2),
    "top_p": ("number", 0, 1),
    "presence_penalty": ("number", -2, 2),
    "frequency_penalty": ("number", -2, 2),
    "n": ("integer", 1, 128),
    "seed": ("integer", -(2**63), 2**63 - 1),
    # UNVERIFIED: the spec gives no minimum; the API refuses a cap below 1.
    "max_tokens": ("integer", 1, None),
    "max_completion_tokens": ("integer", 1, None),
    "top_logprobs": ("integer", 0, 20),
    "logprobs": ("boolean", None, None),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "reasoning_effort": ("none", "minimal", "low", "medium", "high", "xhigh", "max"),
    "verbosity": ("low", "medium", "high"),
    "service_tier": ("auto", "default", "flex", "scale", "priority", "fast"),
}
EXPECTED = {"number": "a decimal", "integer": "an integer", "boolean": "a boolean"}


def check_parameters(body: dict[str, Any], names: Any, choices: dict[str, tuple[str, ...]]) -> None:
    """ApiError (400) for the first of ``names`` out of its type or range, in the API's words
    (``decimal_above_max_value``, ``integer_below_min_value``, ``invalid_type``, ...)."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if name in choices:
            if value not in choices[name]:
                raise InvalidValue(name, value, choices[name])
            continue
        kind, low, high = RANGES[name]
        types = {"number": (int, float), "integer": (int,), "boolean": (bool,)}[kind]
        if not isinstance(value, types) or (kind != "boolean" and isinstance(value, bool)):
            raise InvalidType(name, EXPECTED[kind], value)
        word = "decimal" if kind == "number" else "integer"
        if low is not None and value < low:
            raise _out_of_range(name, word, value, "below_min", f">= {low:g}")
        if high is not None and value > high:
            raise _out_of_range(name, word, value, "above_max", f"<= {high:g}")


def _out_of_range(name: str, word: str, value: float, side: str, expected: str) -> ApiError:
    direction = "below minimum" if side == "below_min" else "above maximum"
    return ApiError(
        400,
        f"Invalid '{name}': {word} {direction} value. Expected a value {expected}, but got "
        f"{value:g} instead.",
        param=name,
        code=f"{word}_{side}_value",
    )


def strict_schema_error(schema: Any) -> str | None:
    """Why strict mode refuses a schema, in the API's words, or None: an object at the top,
    and in every object ``additionalProperties: false`` and every property required."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        kind = schema.get("type") if isinstance(schema, dict) else None
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{kind}\"'."

    def walk(node: Any, context: tuple[str, ...]) -> str | None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                found = walk(item, (*context, str(i)))
                if found:
                    return found
            return None
        if not isinstance(node, dict):
            return None
        kind = node.get("type")
        if (
            kind == "object"
            or (isinstance(kind, list) and "object" in kind)
            or "properties" in node
        ):
            if node.get("additionalProperties") is not False:
                return (
                    f"In context={context}, 'additionalProperties' is required to be supplied "
                    "and to be false."
                )
            required = node.get("required") or []
            missing = [k for k in node.get("properties") or {} if k not in required]
            if missing:
                return (
                    f"In context={context}, 'required' is required to be supplied and to be an "
                    f"array including every key in properties. Missing '{missing[0]}'."
                )
        subs: list[tuple[tuple[str, ...], Any]] = []
        for key in ("properties", "$defs", "definitions"):
            subs += [((*context, key, n), v) for n, v in (node.get(key) or {}).items()]
        subs += [((*context, key), node[key]) for key in ("items", "anyOf", "allOf") if key in node]
        for where, sub in subs:
            found = walk(sub, where)
            if found:
                return found
        return None

    return walk(schema, ())


def check_strict(name: Any, schema: Any, param: str) -> None:
    """ApiError (400, code null, as the API answers) for a strict schema strict mode refuses."""
    problem = strict_schema_error(schema)
    if problem:
        raise ApiError(400, f"Invalid schema for response_format '{name}': {problem}", param=param)


def check(body: dict[str, Any]) -> None:
    """ApiError for a chat-completions body the endpoint refuses with a 400: a parameter out of
    its documented type or range, or a strict json_schema that strict mode refuses."""
    check_parameters(body, [*RANGES, *CHOICES], CHOICES)
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        # UNVERIFIED: the message; the spec says logprobs must be true with top_logprobs.
        raise ApiError(
            400,
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true.",
            param="top_logprobs",
            code="invalid_value",
        )
    fmt = body.get("response_format")
    spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
    if isinstance(spec, dict) and spec.get("strict") is True:
        check_strict(spec.get("name"), spec.get("schema"), "response_format")


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
