"""Answers to Gemini ``GenerateContentRequest`` bodies, as a batch's requests get them.

Deterministic, as ``chat`` answers OpenAI's (docs/api-facts-gemini.md "Requests"): the text
``Emulated answer <hash>: <start of the last user turn>``, or, with ``responseMimeType:
application/json``, JSON valid against ``responseJsonSchema`` (plain JSON Schema) or
``responseSchema`` (the OpenAPI subset, ``type: "OBJECT"``). ``maxOutputTokens`` cuts the
answer (``finishReason: MAX_TOKENS``). Usage: 4 characters a token, images by Gemini's tile
rule (258 tokens an image up to 384 px, else 258 per tile). Both spellings of the proto's
field names are read (camelCase and snake_case), as the service accepts both.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

from . import images
from .chat import canonical_json, capped
from .faults import marker_failure, random_failure
from .schema_values import example_for_schema
from .store import sha256_hex

TILE_TOKENS = 258
SMALL_SIDE = 384

Failure = dict[str, Any]  # {"code", "message", "status"}


def pick(obj: Any, camel: str) -> Any:
    """``obj[camel]``, or its snake_case spelling."""
    if not isinstance(obj, dict):
        return None
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower())


def _parts(content: Any) -> list[dict[str, Any]]:
    parts = pick(content, "parts")
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _contents(req: dict[str, Any]) -> list[Any]:
    contents = pick(req, "contents")
    return contents if isinstance(contents, list) else []


def texts(req: dict[str, Any]) -> list[str]:
    found = [p["text"] for p in _parts(pick(req, "systemInstruction")) if "text" in p]
    for content in _contents(req):
        found += [p["text"] for p in _parts(content) if isinstance(p.get("text"), str)]
    return found


def _inline_images(req: dict[str, Any]) -> list[str]:
    urls = []
    for content in _contents(req):
        for part in _parts(content):
            data = pick(part, "inlineData")
            mime = str(pick(data, "mimeType") or "")
            if isinstance(data, dict) and mime.startswith("image/"):
                urls.append(f"data:{mime};base64,{data.get('data', '')}")
    return urls


def image_tokens(width: int, height: int) -> int:
    if width <= SMALL_SIDE and height <= SMALL_SIDE:
        return TILE_TOKENS
    tile = min(768.0, max(256.0, min(width, height) / 1.5))
    return TILE_TOKENS * math.ceil(width / tile) * math.ceil(height / tile)


def prompt_tokens(req: dict[str, Any]) -> int:
    total = math.ceil(sum(len(t) for t in texts(req)) / 4)
    for url in _inline_images(req):
        with contextlib.suppress(images.ImageRejected):
            total += image_tokens(*images.check_url(url).size)
    for content in _contents(req):
        total += TILE_TOKENS * sum(1 for p in _parts(content) if pick(p, "fileData"))
    return total


def _error(code: int, status: str, message: str) -> Failure:
    return {"code": code, "message": message, "status": status}


def check(req: Any) -> Failure | None:
    """The 400 the API would answer this request with, or None."""
    if not isinstance(req, dict):
        return _error(
            400, "INVALID_ARGUMENT", "Invalid request: expected a GenerateContentRequest."
        )
    contents = _contents(req)
    if not contents or not any(_parts(c) for c in contents):
        return _error(
            400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified"
        )
    for url in _inline_images(req):
        try:
            images.check_url(url)
        except images.ImageRejected:
            return _error(
                400,
                "INVALID_ARGUMENT",
                "Unable to process input image. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            )
    return None


MARKERS = {
    "context_length_exceeded": (
        400,
        "INVALID_ARGUMENT",
        "The input token count exceeds the maximum number of tokens allowed.",
    ),
    "500": (500, "INTERNAL", "An internal error has occurred."),
    "429": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
}


def failure(req: Any, settings: dict[str, Any], batch: str, key: str) -> Failure | None:
    """Why this request fails: its body, a marker, or the random error rate."""
    problem = check(req)
    if problem is not None:
        return problem
    code = marker_failure(texts(req)) or random_failure(settings, batch, key)
    if not code:
        return None
    return _error(*MARKERS.get(code, (400, "INVALID_ARGUMENT", f"Emulated error: {code}.")))


def _json_schema(schema: Any) -> Any:
    """``responseSchema`` (OpenAPI subset: upper-case types, ``nullable``) as JSON Schema."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _json_schema(v) for k, v in schema.items() if k != "nullable"}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: _json_schema(v) for k, v in schema["properties"].items()}
    return out


def _last_user_text(req: dict[str, Any]) -> str:
    for content in reversed(_contents(req)):
        if pick(content, "role") in (None, "user"):
            return " ".join(p["text"] for p in _parts(content) if isinstance(p.get("text"), str))
    return ""


def answer(req: dict[str, Any], model: str) -> dict[str, Any]:
    """A ``GenerateContentResponse`` for a request that does not fail."""
    digest = sha256_hex(canonical_json(req))
    h8 = digest[:8]
    config = pick(req, "generationConfig") or {}
    text = f"Emulated answer {h8}: {_last_user_text(req)[:60]}"
    if pick(config, "responseMimeType") == "application/json":
        schema = pick(config, "responseJsonSchema")
        if schema is None and pick(config, "responseSchema") is not None:
            schema = _json_schema(pick(config, "responseSchema"))
        if schema is None:
            text = canonical_json({"answer": text})
        else:
            text = canonical_json(example_for_schema(schema, schema, "value", h8))
    text, produced, cut = capped(text, pick(config, "maxOutputTokens"))
    prompt = prompt_tokens(req)
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "MAX_TOKENS" if cut else "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": produced,
            "totalTokenCount": prompt + produced,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        },
        "modelVersion": model.removeprefix("models/"),
        "responseId": digest[8:30],
    }
