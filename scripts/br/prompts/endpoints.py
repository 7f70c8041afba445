"""The request body of each endpoint, built once from a step's filled texts and its image.

A step's `endpoint:` is /v1/chat/completions (the default), /v1/responses or /v1/embeddings
(br/openai_api.py holds what each accepts); a Batch API batch holds one endpoint only, and a
step's requests all share one. The image is already resolved when the body is built (a URL, a
data URL, or a local file's `br-image:` reference; images/identity.py).

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

from br.config import Step
from br.openai_api import EMBEDDINGS, RESPONSES


def request_body(step: Step, texts: list[str], image: str | None) -> dict[str, Any]:
    """The body of one request of the step, in its endpoint's shape. `texts` are the filled
    templates (an embedding's is its input); `image` is the resolved image URL, if any."""
    if step.endpoint == EMBEDDINGS:
        return embeddings_body(step, texts[0])
    if step.endpoint == RESPONSES:
        return responses_body(step, texts, image)
    return chat_body(step, texts, image)


def chat_body(step: Step, texts: list[str], image: str | None) -> dict[str, Any]:
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


def responses_body(step: Step, texts: list[str], image: str | None) -> dict[str, Any]:
    """A /v1/responses body: the system prompt as `instructions`, the user's text (and image)
    as `input`, the chat parameters under their Responses names (see the top)."""
    body: dict[str, Any] = {"model": step.body.get("model", step.model)}
    if step.system:
        body["instructions"] = step.system
    if image is None and len(texts) == 1:
        body["input"] = texts[0]
    else:
        parts: list[dict[str, Any]] = [{"type": "input_text", "text": t} for t in texts if t]
        if image:
            # `detail` is required in InputImageContent; the API's default is auto.
            detail = step.image_detail or "auto"
            parts.append({"type": "input_image", "image_url": image, "detail": detail})
        body["input"] = [{"role": "user", "content": parts}]
    text: dict[str, Any] = {}
    for key, value in step.body.items():
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
    fmt = step.response_format or step.body.get("response_format")
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


def embeddings_body(step: Step, text: str) -> dict[str, Any]:
    return {"model": step.model, "input": text, **step.body}


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
