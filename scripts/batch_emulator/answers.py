"""Answers to model requests, by endpoint: what a request costs, whether it fails, and the
body it gets. Deterministic: the same request in the same batch always gets the same answer.

A message text holding ``EMULATOR_ERROR:<code>`` fails that request, for tests:
``context_length_exceeded`` -> 400, ``500`` -> 500, ``429`` -> 429, any other code -> 400.
"""

from __future__ import annotations

from typing import Any

from . import chat, embeddings, images, responses_api
from .exceptions import ApiError, error_envelope
from .faults import marker_failure, random_failure

Answer = tuple[int, dict[str, Any]]
_READERS = {"/v1/chat/completions": chat, "/v1/responses": responses_api}


def texts(endpoint: str, body: dict[str, Any]) -> list[str]:
    if endpoint == "/v1/embeddings":
        return embeddings.texts(body)
    reader = _READERS.get(endpoint)
    return reader.texts(body) if reader else []


def image_parts(endpoint: str, body: dict[str, Any]) -> list[images.ImagePart]:
    """The request's images, checked; ImageRejected for the first one the API would refuse."""
    reader = _READERS.get(endpoint)
    if reader is None:
        return []
    return [images.check_url(url, detail) for url, detail in reader.images_of(body)]


def _image_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """The images' tokens; an image that does not check counts nothing (it fails anyway)."""
    try:
        return sum(images.part_tokens(p) for p in image_parts(endpoint, body))
    except images.ImageRejected:
        return 0


def prompt_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """The estimated input tokens of one request: 4 characters a token, 4 a message, images
    by OpenAI's rule (see images.py)."""
    if endpoint == "/v1/embeddings":
        return embeddings.prompt_tokens(body)
    reader = _READERS.get(endpoint)
    return reader.prompt_tokens(body, _image_tokens(endpoint, body)) if reader else 0


def marker_error(code: str) -> Answer:
    if code == "context_length_exceeded":
        return 400, error_envelope(
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in more tokens. Please reduce the length of the messages.",
            "invalid_request_error",
            "messages",
            "context_length_exceeded",
        )
    if code == "500":
        return 500, error_envelope(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        )
    if code == "429":
        return 429, error_envelope(
            "Rate limit reached for requests. Please try again later.",
            "requests",
            None,
            "rate_limit_exceeded",
        )
    return 400, error_envelope(f"Emulated error: {code}.", "invalid_request_error", None, code)


def content_error(endpoint: str, body: dict[str, Any]) -> Answer | None:
    """The 400 the endpoint itself would give this body (a bad image, a bad embedding input)."""
    if endpoint not in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings"):
        return 400, error_envelope(
            f"The emulator does not answer {endpoint}.",
            "invalid_request_error",
            None,
            "unsupported_endpoint",
        )
    try:
        if endpoint == "/v1/embeddings":
            embeddings.check(body)
        else:
            if endpoint == "/v1/responses":
                responses_api.check(body)
            else:
                chat.check(body)
            image_parts(endpoint, body)
    except images.ImageRejected as exc:
        param = "messages" if endpoint == "/v1/chat/completions" else "input"
        return 400, error_envelope(exc.message, "invalid_request_error", param, exc.code)
    except ApiError as exc:
        return exc.status, exc.body()
    return None


def failure(
    endpoint: str, body: dict[str, Any], settings: dict[str, Any], batch_id: str, custom_id: str
) -> Answer | None:
    """Why this request fails, if it does: its content, a marker, or the random error rate."""
    problem = content_error(endpoint, body)
    if problem is not None:
        return problem
    code = marker_failure(texts(endpoint, body)) or random_failure(settings, batch_id, custom_id)
    return marker_error(code) if code else None


def succeed(endpoint: str, body: dict[str, Any], *, created: int) -> Answer:
    """The 200 answer to a request that does not fail."""
    if endpoint == "/v1/embeddings":
        return 200, embeddings.answer(body)
    tokens = _image_tokens(endpoint, body)
    if endpoint == "/v1/responses":
        return 200, responses_api.answer(body, created=created, image_tokens=tokens)
    return 200, chat.answer(body, created=created, image_tokens=tokens)


def answer(
    endpoint: str,
    body: dict[str, Any],
    *,
    created: int,
    settings: dict[str, Any] | None = None,
    batch_id: str = "",
    custom_id: str = "",
) -> Answer:
    """(status, body) for one request; without ``settings`` no random errors (live calls)."""
    quiet = {"request_error_rate": 0.0, "seed": 0}
    failed = failure(endpoint, body, settings or quiet, batch_id, custom_id)
    return failed if failed is not None else succeed(endpoint, body, created=created)


def usage_tokens(body: Any) -> tuple[int, int]:
    """(input, output) tokens of a successful answer body, whatever the endpoint."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    given = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    produced = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return int(given or 0), int(produced or 0)
