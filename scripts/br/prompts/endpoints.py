"""What differs by endpoint: the step keys each accepts, and the request body each is sent.

A step's `endpoint:` is /v1/chat/completions (the default), /v1/responses or /v1/embeddings;
a Batch API batch holds one endpoint only, and a step's requests all share one.

- chat completions: `messages` (system, then the user text and the image part), as always.
- responses: `system` -> `instructions`; the user text (and the image, as an `input_image`
  part) -> `input`; structured output in the Responses API's own `text.format`;
  `max_tokens` / `max_completion_tokens` -> `max_output_tokens`; `reasoning_effort` ->
  `reasoning.effort`; `verbosity` -> `text.verbosity`.
- embeddings: the `user` template is the text to embed (`input`), with `dimensions` and
  `encoding_format`; no system prompt, image or sampling parameter.
"""

from __future__ import annotations

from typing import Any

from br.cli import UserError

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"
ENDPOINTS = (CHAT, RESPONSES, EMBEDDINGS)

IMAGE_KEYS = {"is_multimodal", "image_key", "image_detail", "image_max_side", "image_quality"}
QUESTION_KEYS = {"kind", "dialog_history", "context", "image_url"}
EMBEDDING_KEYS = {"dimensions", "encoding_format"}
# Chat-completions parameters the Responses API has no counterpart for (CreateResponse).
NOT_IN_RESPONSES = {
    "seed",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
}
# Chat-completions parameters a step may set directly (anything else goes under `body:`);
# none means anything to an embedding.
MIN_OUTPUT_TOKENS = 16  # the spec's minimum of a Responses max_output_tokens
BODY_KEYS = {
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "verbosity",
    "logprobs",
    "top_logprobs",
    "service_tier",
}
# The documented ranges of the request parameters (openapi-full.yaml: CreateChatCompletionRequest
# and CreateResponse), checked when the config is read: out of range, every request of the
# batch would come back a 400, after the batch is paid for. (kind, lowest, highest); None: no
# bound. The spec gives max_tokens and max_completion_tokens no minimum, but the API refuses
# less than 1 (a Responses max_output_tokens: less than 16, checked in endpoint_of).
RANGES: dict[str, tuple[str, float | None, float | None]] = {
    "temperature": ("number", 0, 2),
    "top_p": ("number", 0, 1),
    "presence_penalty": ("number", -2, 2),
    "frequency_penalty": ("number", -2, 2),
    "n": ("integer", 1, 128),
    "seed": ("integer", -(2**63), 2**63 - 1),
    "max_tokens": ("integer", 1, None),
    "max_completion_tokens": ("integer", 1, None),
    "top_logprobs": ("integer", 0, 20),
}
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast")
CHOICES: dict[str, tuple[str, ...]] = {
    "reasoning_effort": REASONING_EFFORTS,
    "verbosity": ("low", "medium", "high"),
    "service_tier": SERVICE_TIERS,
}
REFUSED: dict[str, set[str]] = {
    CHAT: set(EMBEDDING_KEYS),
    RESPONSES: EMBEDDING_KEYS | NOT_IN_RESPONSES | QUESTION_KEYS,
    EMBEDDINGS: ({"system", "response_format"} | IMAGE_KEYS | QUESTION_KEYS | BODY_KEYS),
}
WHY = {
    CHAT: "it is an embeddings parameter (set endpoint: /v1/embeddings)",
    RESPONSES: "the Responses API has no such parameter (or the step kind is chat-only)",
    EMBEDDINGS: "an embedding takes only the text (user), dimensions and encoding_format",
}


def endpoint_of(where: str, raw: dict[str, Any]) -> str:
    """The step's endpoint, checked, and its keys checked against it (one line if wrong)."""
    endpoint = raw.get("endpoint", CHAT)
    if endpoint not in ENDPOINTS:
        raise UserError(f"{where}: endpoint '{endpoint}' is not one of {', '.join(ENDPOINTS)}")
    wrong = sorted(k for k in raw if k in REFUSED[endpoint])
    if wrong:
        raise UserError(
            f"{where}: '{wrong[0]}' makes no sense with endpoint {endpoint}: {WHY[endpoint]}; "
            "remove it"
        )
    if endpoint == EMBEDDINGS:
        check_embedding_keys(where, raw)
    if endpoint == RESPONSES:
        body = raw.get("body") if isinstance(raw.get("body"), dict) else {}
        caps = {k: raw.get(k) for k in ("max_tokens", "max_completion_tokens")}
        caps["body: max_output_tokens"] = body.get("max_output_tokens")
        for key, value in caps.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"{where}: {key} must be a whole number of tokens, not {value!r}")
            if value < MIN_OUTPUT_TOKENS:
                raise UserError(
                    f"{where}: {key}: {value} is below the Responses API's minimum of "
                    f"{MIN_OUTPUT_TOKENS} (sent as max_output_tokens); raise it"
                )
    return endpoint


def check_parameters(where: str, body: dict[str, Any], endpoint: str) -> None:
    """The step's request parameters (its keys and its body:) within the API's documented types
    and ranges, or one line naming the first that is not. null is the API's default."""
    for key, value in body.items():
        if value is None:
            continue
        problem = parameter_problem(key, value, endpoint)
        if problem:
            raise UserError(f"{where}: '{key}' {problem}, not {value!r}")
    if (
        endpoint == CHAT
        and body.get("top_logprobs") is not None
        and body.get("logprobs") is not True
    ):
        raise UserError(
            f"{where}: 'top_logprobs' needs logprobs: true; add it, or remove top_logprobs"
        )


def parameter_problem(key: str, value: Any, endpoint: str) -> str | None:
    """What a parameter's value must be, if it is not."""
    if key in RANGES:
        kind, low, high = RANGES[key]
        types = (int,) if kind == "integer" else (int, float)
        noun = "a whole number" if kind == "integer" else "a number"
        span = f" from {low:g} to {high:g}" if high is not None else f" of at least {low:g}"
        if key == "seed":
            span = ""
        ok = isinstance(value, types) and not isinstance(value, bool)
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            return f"must be {noun}{span}"
        return None
    if key == "logprobs" and not isinstance(value, bool):
        return "must be true or false"
    if key == "stop":
        many = isinstance(value, list) and 1 <= len(value) <= 4
        if not (isinstance(value, str) or (many and all(isinstance(s, str) for s in value))):
            return "must be a string or a list of 1 to 4 strings"
    if key in CHOICES:
        choices = CHOICES[key] + (
            ("ultrafast",) if key == "service_tier" and endpoint == RESPONSES else ()
        )
        if value not in choices:
            return f"must be one of {', '.join(choices)}"
    return None


def check_embedding_keys(where: str, raw: dict[str, Any]) -> None:
    dims = raw.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise UserError(f"{where}: dimensions must be a positive whole number, like 256")
    fmt = raw.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise UserError(f"{where}: encoding_format must be float or base64, not '{fmt}'")
    extra = sorted(set(raw.get("body") or {}) - {"user"})
    if extra:
        raise UserError(
            f"{where}: body: '{extra[0]}' is not an embeddings parameter (the API takes input, "
            "model, dimensions, encoding_format and user); remove it"
        )


def chat_body(step: Any, texts: list[str], image: str | None) -> dict[str, Any]:
    """A chat-completions body: messages, the step's parameters, its response_format."""
    messages: list[dict[str, Any]] = []
    if step.system:
        messages.append({"role": "system", "content": step.system})
    if image is None and len(texts) == 1:
        content: Any = texts[0]
    else:
        content = [{"type": "text", "text": t} for t in texts if t]
        if image:
            part: dict[str, Any] = {"url": image}
            if step.image_detail:
                part["detail"] = step.image_detail
            content.append({"type": "image_url", "image_url": part})
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"model": step.model, "messages": messages, **step.body}
    if step.response_format:
        body["response_format"] = step.response_format
    return body


def responses_body(chat: dict[str, Any]) -> dict[str, Any]:
    """The /v1/responses body of a chat-completions body built for the same step.

    Built from the chat body so that local images, resolved in `messages` by request_images,
    carry over as they are (a `br-image:` reference or a URL).
    """
    body: dict[str, Any] = {"model": chat["model"]}
    messages = chat.get("messages") or []
    system = [m["content"] for m in messages if m.get("role") == "system"]
    if system:
        body["instructions"] = "\n\n".join(system)
    items = []
    for message in messages:
        if message.get("role") == "system":
            continue
        content = message.get("content")
        if isinstance(content, str):
            items.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content or []:
            if part.get("type") == "text":
                parts.append({"type": "input_text", "text": part.get("text") or ""})
            elif part.get("type") == "image_url":
                image = part.get("image_url") or {}
                # `detail` is required in InputImageContent; the API's default is auto.
                detail = image.get("detail") or "auto"
                parts.append(
                    {"type": "input_image", "image_url": image.get("url"), "detail": detail}
                )
        items.append({"role": message["role"], "content": parts})
    if len(items) == 1 and isinstance(items[0]["content"], str):
        body["input"] = items[0]["content"]
    else:
        body["input"] = items
    text: dict[str, Any] = {}
    for key, value in chat.items():
        if key in ("model", "messages", "response_format"):
            continue
        if key in ("max_tokens", "max_completion_tokens"):
            body["max_output_tokens"] = value
        elif key == "reasoning_effort":
            body["reasoning"] = {**(body.get("reasoning") or {}), "effort": value}
        elif key == "verbosity":
            text["verbosity"] = value
        else:
            body[key] = value
    fmt = chat.get("response_format")
    if fmt:
        text["format"] = text_format(fmt)
    if text:
        body["text"] = {**text, **(body.get("text") or {})}
    return body


def text_format(response_format: dict[str, Any]) -> dict[str, Any]:
    """Chat's response_format as the Responses API's text.format (name and schema flattened)."""
    if response_format.get("type") != "json_schema":
        return {"type": response_format.get("type")}
    spec = response_format.get("json_schema") or {}
    fmt: dict[str, Any] = {"type": "json_schema", "name": spec.get("name") or "answer"}
    fmt["schema"] = spec.get("schema")
    if "strict" in spec:
        fmt["strict"] = spec["strict"]
    if spec.get("description"):
        fmt["description"] = spec["description"]
    return fmt


def embeddings_body(step: Any, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": step.model, "input": text, **step.body}
    return body


def shaped(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """A body as the endpoint takes it (chat bodies are the common draft; see make_requests)."""
    return responses_body(body) if url == RESPONSES else body


def describe_vector(value: Any) -> str | None:
    """'vector of 256 floats' (or '3 vectors of 256 floats') for an embedding, else None."""

    def is_vector(v: Any) -> bool:
        return (
            isinstance(v, list)
            and bool(v)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        )

    if is_vector(value):
        return f"vector of {len(value)} floats"
    if isinstance(value, list) and value and all(is_vector(v) for v in value):
        sizes = sorted({len(v) for v in value})
        size = "/".join(map(str, sizes))
        return f"{len(value)} vectors of {size} floats"
    return None
