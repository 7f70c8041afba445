"""Gemini's lines, both ways: the pipeline's request line (OpenAI's batch shape, as
requests.jsonl holds it) as a `{key, request}` line of Gemini's Batch API, and a
result (a responses-file line, or an inline response) as the common row (provider.py).

Facts: /work/shared/reference/gemini-batch-api/FACTS.md (section numbers below), and
docs/api-facts-gemini.md. The request is a GenerateContentRequest written in the proto's
snake_case, as the guide's JSONL example is (the service reads both spellings, §3.1):

- `system` messages -> `system_instruction`; `user` -> role `user`, `assistant` -> `model`;
- a text part -> `{text}`; an image part: a data URL -> `inline_data {mime_type, data}` (how a
  local image travels: the chunk already holds it as a data URL), an http(s) URL -> `file_data
  {mime_type, file_uri}`. UNVERIFIED (§9.1): whether the Developer API fetches an arbitrary
  public URL in `file_uri`; it is the only way to pass a URL without downloading it here, and a
  refusal comes back as that request's 400, never a crash. `detail` has no per-part equivalent
  before Gemini 3 and is left out (the tile rule prices the image whatever it says);
- `max_tokens` / `max_completion_tokens` -> `generation_config.max_output_tokens`, and
  `temperature`, `top_p`, `stop`, `seed`, `n`, the penalties under their Gemini names;
- structured output: OpenAI's `json_schema` -> `response_mime_type: application/json` with
  `response_json_schema` (the step's schema is plain JSON Schema already; `response_schema`
  would need a lossy translation to the OpenAPI subset); `json_object` -> the MIME type alone.

A `/v1/responses` body is read the same way (`instructions`, `input`); embeddings are not
offered (Gemini batches them through another route, asyncBatchEmbedContent).

A chunk file holds these lines, exactly as they are uploaded (or sent inline), so each line
says what every reader of a chunk needs (`identity`), in fields the API knows (it refuses an
unknown field, "no such field"):
- the key is the request hash (hex, the one answers/ and the merge key rows by), a space, and
  the pipeline's custom_id verbatim: a JSON string, echoed on its result line (§3.2, §6.2), so
  paths, URLs, unicode and 5,000 characters come back as they went, and two records asking the
  same thing stay two requests;
- the model is the request's own `model` field (`models/...`), the GenerateContentRequest field
  the SDK itself sets on an inline request (§3.1). UNVERIFIED that the service accepts it in a
  file line; it names the job's own model, and third-party clients write it there too.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from br.batches.provider import UNKNOWN, failed
from br.cli import UserError
from br.prompts.images.identity import request_hash
from br.prompts.tokens import gemini_request_tokens

ENDPOINT = "generateContent"  # what a chunk of Gemini lines sends, for ChunkInfo.endpoint

# generation_config's names for OpenAI's sampling parameters.
GENERATION = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "max_output_tokens": "max_output_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "n": "candidate_count",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
IGNORED = {"model", "messages", "instructions", "input", "response_format", "text", "store"}
# google.rpc.Code -> HTTP status, for a per-request error that carries the RPC code (UNVERIFIED
# which of the two a real error line holds, §6.2: both are read).
RPC_HTTP = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409,
            11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}  # fmt: skip
RETRYABLE_STATUS = {408, 409, 429}
# finishReason values that end an answer normally.
FINISHED = {"STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED", None}


# ----------------------------------------------------------------------------- requests


def is_line(line: dict[str, Any]) -> bool:
    """A Gemini line (`{key, request}`), not the pipeline's."""
    return "key" in line and "request" in line and "custom_id" not in line


def key_of(custom_id: Any, hash_hex: str) -> str:
    return f"{hash_hex} {custom_id if custom_id is not None else ''}"


def identity(line: dict[str, Any]) -> tuple[str, str, str, int]:
    """(key, request hash, model, estimated input tokens) of a Gemini line."""
    key = str(line.get("key") or "")
    if not re.fullmatch(r"[0-9a-f]{64}", key[:64]) or key[64:65] != " ":
        raise UserError(f"key {key[:80]!r} is not one this tool made; rerun make to re-split")
    request = line.get("request") or {}
    model = str(request.get("model") or "").removeprefix("models/")
    return key, key[:64], model, gemini_request_tokens(request)


def shape(request: dict[str, Any]) -> dict[str, Any]:
    """The `{key, request}` line of one request line (a Gemini line is returned as it is)."""
    if is_line(request):
        return request
    url = str(request.get("url") or "/v1/chat/completions")
    body = request.get("body") or {}
    if url.endswith("/embeddings"):
        raise UserError(
            "Gemini's Batch API takes no embeddings requests here (endpoint: /v1/embeddings); "
            "run that step on OpenAI"
        )
    messages = body["messages"] if "messages" in body else responses_messages(body)
    out: dict[str, Any] = {"model": f"models/{str(body.get('model')).removeprefix('models/')}"}
    system = [text_part(m.get("content")) for m in messages if m.get("role") == "system"]
    if system:
        out["system_instruction"] = {"parts": [p for s in system for p in s]}
    out["contents"] = [
        {"role": "model" if m.get("role") == "assistant" else "user", "parts": parts(m)}
        for m in messages
        if m.get("role") != "system"
    ]
    config = generation_config(body)
    if config:
        out["generation_config"] = config
    return {"key": key_of(request.get("custom_id"), request_hash(request)), "request": out}


def responses_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A /v1/responses body's `instructions` and `input` as chat messages."""
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    for item in given if isinstance(given, list) else []:
        content = item.get("content")
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": p.get("image_url")}}
                if p.get("type") == "input_image"
                else {"type": "text", "text": p.get("text") or ""}
                for p in content
            ]
        messages.append({"role": item.get("role") or "user", "content": content})
    return messages


def text_part(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    return [{"text": p.get("text") or ""} for p in content or [] if p.get("type") == "text"]


def parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"text": content}]
    out: list[dict[str, Any]] = []
    for part in content or []:
        if part.get("type") in ("text", "input_text", "output_text"):
            out.append({"text": part.get("text") or ""})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            out.append(image_part(image.get("url") if isinstance(image, dict) else image))
    return out


def image_part(url: Any) -> dict[str, Any]:
    url = str(url or "")
    m = re.match(r"data:([^;,]+)(?:;[^,]*)?;base64,", url)
    if m:
        return {"inline_data": {"mime_type": m[1], "data": url[m.end() :]}}
    path = urlparse(url).path
    mime = mimetypes.guess_type(path)[0] or "image/jpeg"  # UNVERIFIED: a guess the API accepts
    return {"file_data": {"mime_type": mime, "file_uri": url}}


def generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in body.items():
        if key in GENERATION:
            config[GENERATION[key]] = value
        elif key == "stop":
            config["stop_sequences"] = [value] if isinstance(value, str) else list(value)
        elif key not in IGNORED:
            raise UserError(
                f"Gemini has no equivalent of the request parameter {key!r}; remove it from the "
                "step to run it on Gemini"
            )
    fmt = body.get("response_format") or (body.get("text") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
        config["response_mime_type"] = "application/json"
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if spec else fmt.get("schema")
        if schema is not None:
            config["response_json_schema"] = schema
    return config


# ----------------------------------------------------------------------------- results


def pick(obj: Any, camel: str) -> Any:
    """`obj[camel]`, or its snake_case spelling (the service writes camelCase; both read)."""
    if not isinstance(obj, dict):
        return None
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower())


def usage_of(meta: Any) -> dict[str, Any] | None:
    """usageMetadata under OpenAI's names (what the report reads), its own keys kept beside.
    Thinking tokens are billed as output, so they count there."""
    if not isinstance(meta, dict):
        return None
    prompt = int(pick(meta, "promptTokenCount") or 0)
    output = int(pick(meta, "candidatesTokenCount") or 0) + int(
        pick(meta, "thoughtsTokenCount") or 0
    )
    cached = int(pick(meta, "cachedContentTokenCount") or 0)
    return {
        **meta,
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": int(pick(meta, "totalTokenCount") or prompt + output),
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def answer_row(response: Any) -> dict[str, Any]:
    """The common row of a GenerateContentResponse (§9.2)."""
    response = response if isinstance(response, dict) else {}
    candidates = pick(response, "candidates") or []
    usage = usage_of(pick(response, "usageMetadata"))
    if not candidates:
        feedback = pick(response, "promptFeedback") or {}
        reason = str(pick(feedback, "blockReason") or "no_candidates")
        return {**failed(reason.lower(), f"the prompt was blocked: {reason}", 200, False),
                "usage": usage}  # fmt: skip
    candidate = candidates[0]
    content = pick(candidate, "content") or {}
    texts = [
        p["text"]
        for p in pick(content, "parts") or []
        if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
    ]
    finish = pick(candidate, "finishReason")
    if not texts and finish not in FINISHED:
        message = f"the answer stopped for {finish} and holds no text"
        return {**failed(str(finish).lower(), message, 200, False), "usage": usage}
    row: dict[str, Any] = {
        "outcome": "succeeded",
        "response": "".join(texts),
        "error": None,
        "retryable": False,
        "usage": usage,
    }
    if finish == "MAX_TOKENS":
        row["cut_short"] = True  # stopped at the step's max_tokens: kept, and counted
    return row


def error_row(error: Any) -> dict[str, Any]:
    """The common row of a per-request error (a google.rpc.Status-like object, §6)."""
    error = error if isinstance(error, dict) else {}
    code, status_name = error.get("code"), error.get("status")
    number = int(code) if isinstance(code, int) or str(code).isdigit() else 0
    status = number if 100 <= number < 600 else RPC_HTTP.get(number, 0)
    name = str(status_name).lower() if status_name else (f"http_{status}" if status else UNKNOWN)
    retryable = status in RETRYABLE_STATUS or status >= 500 or status == 0
    return failed(name, str(error.get("message") or ""), status or None, retryable)


def row_of(item: dict[str, Any]) -> dict[str, Any]:
    """A result item (a file line, or an inline response): its response, else its error."""
    if pick(item, "response") is not None:
        return answer_row(pick(item, "response"))
    return error_row(pick(item, "error"))


def file_rows(data: bytes) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(key, row) of each line of a responses file, split on b"\\n" only (a key or an answer may
    hold U+2028 and the like); a line that cannot be parsed becomes an error row for its key."""
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", errors="replace")
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            line = None
        if isinstance(line, dict):
            key = line.get("key")
            yield (str(key) if key is not None else None), row_of(line)
            continue
        m = re.search(r'"key"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
        message = f"line {n} of the responses file could not be parsed: {text[:200]!r}"
        yield (
            (json.loads(f'"{m[1]}"') if m else None),
            failed("unparseable_line", message, None, True),
        )


def inline_rows(items: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(key, row) of inline responses, keyed by the metadata each echoes (never by order: the
    service has been seen answering out of order, §6.1)."""
    for item in items if isinstance(items, list) else []:
        meta = pick(item, "metadata") or {}
        key = meta.get("key") if isinstance(meta, dict) else None
        yield (str(key) if key is not None else None), row_of(item)
