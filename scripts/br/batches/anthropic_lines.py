"""Anthropic's batch lines: a request of the pipeline shaped as `{custom_id, params}`, the
identity read back from such a line, and what a result line means.

Facts from ../shared/reference/anthropic-message-batches/FACTS.md (section in brackets).

The custom_id. Anthropic allows only `[a-zA-Z0-9_-]{1,64}` [§3.1], and a DATA_KEY may be a
path, a URL, unicode or 5,000 characters long. The id sent is derived, deterministically, from
what identifies the request: the base64url of its request hash (43 characters: the same
`request_hash` answers/ and the merge key rows by, so a chunk line says which request it is
without requests.jsonl), a `-`, and 20 characters of the base64url of the sha256 of the
pipeline's custom_id (unique within a batch: two records asking the same thing stay two
requests). 64 characters in all. The rows in answers/ and results_NNN.jsonl carry this id; the
merge joins them to records by the request hash, as for every provider.

The params [§9]: the chat request's system message becomes `system`; the user message's text
and image parts become Anthropic's blocks (an image URL as a `url` source, a data URL, which
is what a local image becomes in a chunk, as a `base64` source); `max_tokens` (or
`max_completion_tokens`) is required and the config refuses a step without it
(br/anthropic_api.py); `stop` becomes `stop_sequences`; a `response_format` JSON schema becomes
`output_config.format` [§9.3]; `image_detail` has no counterpart and is left out; anything
else under the step's `body:` is passed as it is.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from br.batches.provider import failed
from br.cli import UserError
from br.prompts.images.identity import decode_data_url, request_hash
from br.prompts.tokens import chat_tokens, system_tokens

ENDPOINT = "/v1/messages"  # what a chunk of Anthropic lines sends, for ChunkInfo.endpoint
MAPPED = {"model", "messages", "max_tokens", "max_completion_tokens", "stop", "response_format"}
# error.type of an errored line -> its HTTP status [§7.1]; invalid_request_error is permanent.
STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
PERMANENT = {"invalid_request_error"}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def safe_id(custom_id: str, request_hash_hex: str) -> str:
    """The custom_id sent for a request (see the top): 64 characters of [A-Za-z0-9_-]."""
    digest = b64(hashlib.sha256(str(custom_id).encode()).digest())[:20]
    return f"{b64(bytes.fromhex(request_hash_hex))}-{digest}"


def hash_of(safe: str) -> str:
    """The request hash a derived custom_id carries (hex)."""
    try:
        raw = base64.urlsafe_b64decode(safe[:43] + "=") if len(safe) == 64 else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UserError(f"custom_id {safe!r} is not one this tool derived; rerun make to re-split")
    return raw.hex()


# ----------------------------------------------------------------------------- shaping


def image_block(url: str) -> dict[str, Any]:
    if decode_data_url(url) is not None:
        head, _, payload = url.partition(",")
        source = {"type": "base64", "media_type": head[5:].split(";", 1)[0], "data": payload}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def blocks(content: Any) -> Any:
    """A chat message's content as Anthropic's: a string stays one; parts become blocks."""
    if isinstance(content, str):
        return content
    out = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "image_url":
            image = part.get("image_url")
            out.append(image_block(image.get("url") if isinstance(image, dict) else image))
        else:
            raise UserError(f"a message part of type {kind!r} has no equivalent on Anthropic")
    return out


def shape(request: dict[str, Any]) -> dict[str, Any]:
    """A pipeline request (a chat completion) as Anthropic's batch line."""
    body = request.get("body") or {}
    if request.get("url") not in (None, "/v1/chat/completions"):
        raise UserError(f"{request.get('url')} requests have no equivalent on Anthropic")
    system = [m.get("content") for m in body.get("messages") or [] if m.get("role") == "system"]
    messages = [
        {"role": m.get("role"), "content": blocks(m.get("content"))}
        for m in body.get("messages") or []
        if m.get("role") != "system"
    ]
    params: dict[str, Any] = {
        "model": body.get("model"),
        "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens"),
    }
    if system:
        params["system"] = "\n\n".join(s if isinstance(s, str) else json.dumps(s) for s in system)
    params["messages"] = messages
    if body.get("stop"):
        stop = body["stop"]
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if schema is not None:
        params["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    params.update({k: v for k, v in body.items() if k not in MAPPED})
    cid = str(request.get("custom_id") or "")
    return {"custom_id": safe_id(cid, request_hash(request)), "params": params}


def identity(line: dict[str, Any]) -> tuple[str, str, str, int]:
    """(custom_id, request hash, model, estimated input tokens) of an Anthropic line."""
    cid = str(line.get("custom_id") or "")
    params = line.get("params") or {}
    tokens = chat_tokens(params.get("messages") or [], claude=True) + system_tokens(params)
    return cid, hash_of(cid), str(params.get("model")), tokens


# ----------------------------------------------------------------------------- results


def outcome(result: dict[str, Any]) -> dict[str, Any]:
    """The common row (provider.py) of one result line's `result` [§5.2]."""
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") or {}
        texts, tools = [], []
        for block in message.get("content") or []:
            if block.get("type") == "text":
                texts.append(block.get("text") or "")
            elif block.get("type") == "tool_use":
                tools.append(block.get("input"))
        stop = message.get("stop_reason")
        if stop == "refusal":
            return failed("refusal", "the model refused (stop_reason: refusal)", 200, False)
        value = json.dumps(tools[0], ensure_ascii=False) if tools else "".join(texts)
        if not tools and not texts:
            return failed("refusal", "the response has no content", 200, retryable=False)
        row = {
            "outcome": "succeeded",
            "response": value,
            "error": None,
            "retryable": False,
            "usage": message.get("usage"),
        }
        if stop == "max_tokens":
            row["cut_short"] = True
        return row
    if kind == "errored":
        envelope = result.get("error") or {}
        error = envelope.get("error") if isinstance(envelope.get("error"), dict) else envelope
        code = str(error.get("type") or "unknown_error")
        message = str(error.get("message") or "")
        return failed(code, message, STATUS.get(code), retryable=code not in PERMANENT)
    if kind == "canceled":  # the batch was cancelled before this request ran: send it again
        return failed("batch_cancelled", "cancelled before it ran", None, True)
    if kind == "expired":  # 24 hours passed before it ran: send it again
        return failed("batch_expired", "expired before it ran", None, True)
    return failed("unknown_error", f"a result of type {kind!r}", None, True)
