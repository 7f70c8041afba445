"""``/v1/responses``: reading ``instructions`` and ``input``, answering with a Response object.

The object follows the spec's ``Response`` schema (docs/api-facts.md "Responses"): one
assistant ``message`` output item with an ``output_text`` part, and ``usage`` in the Responses
API's own names (input_tokens, output_tokens, total_tokens).
"""

from __future__ import annotations

import math
from typing import Any

from .chat import CHOICES, canonical_json, capped, check_parameters, check_strict, content_for
from .exceptions import ApiError
from .store import sha256_hex

# The properties of the spec's CreateResponse (with CreateModelResponseProperties and
# ResponseProperties it includes), read off openapi-full.yaml: any other key is refused.
PARAMETERS = frozenset(
    [
        "background",
        "context_management",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    ]
)
MIN_OUTPUT_TOKENS = 16  # the spec: max_output_tokens {type: integer, minimum: 16}
FORMATS = ("text", "json_schema", "json_object")
# CreateResponse's own service tiers (ServiceTierResponses): chat's and ultrafast.
SERVICE_TIERS = {"service_tier": (*CHOICES["service_tier"], "ultrafast")}


def check(body: dict[str, Any]) -> None:
    """ApiError for a request the endpoint refuses with a 400 (the checks the spec makes
    plain; the messages follow the API's usual wording, UNVERIFIED for this endpoint)."""
    unknown = sorted(set(body) - PARAMETERS)
    if unknown:
        raise ApiError(
            400, f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter"
        )
    given = body.get("input")
    if "input" in body and not isinstance(given, (str, list)):
        raise ApiError(
            400,
            f"Invalid type for 'input': expected a string or an array, but got "
            f"{type(given).__name__} instead.",
            param="input",
            code="invalid_type",
        )
    check_parameters(body, ("temperature", "top_p", "top_logprobs", "service_tier"), SERVICE_TIERS)
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise ApiError(
            400,
            "Invalid type for 'max_output_tokens': expected an integer.",
            param="max_output_tokens",
            code="invalid_type",
        )
    if limit is not None and limit < MIN_OUTPUT_TOKENS:
        raise ApiError(
            400,
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{MIN_OUTPUT_TOKENS}, but got {limit} instead.",
            param="max_output_tokens",
            code="integer_below_min_value",
        )
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in FORMATS:
        raise ApiError(
            400,
            f"Invalid value for 'text.format.type': expected one of {', '.join(FORMATS)}.",
            param="text.format.type",
            code="invalid_value",
        )
    for key in ("name", "schema") if kind == "json_schema" else ():
        if key not in fmt:
            raise ApiError(
                400,
                f"Missing required parameter: 'text.format.{key}'.",
                param=f"text.format.{key}",
                code="missing_required_parameter",
            )
    if kind == "json_schema" and fmt.get("strict") is True:
        # UNVERIFIED: the param for this endpoint; the message is chat's.
        check_strict(fmt.get("name"), fmt.get("schema"), "text.format.schema")


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
    content, completion, cut = capped(content, body.get("max_output_tokens"))
    status = "incomplete" if cut else "completed"
    return {
        "id": f"resp_{digest[8:40]}",
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": None if cut else created,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model", "")),
        "output": [
            {
                "id": f"msg_{digest[40:64]}",
                "type": "message",
                "role": "assistant",
                "status": status,
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
