"""OpenAI's request API as a config meets it: the endpoints, the keys each accepts, the documented
ranges and choices of the request parameters, and the models' context windows.

Facts of OpenAI's API only (openapi-full.yaml: CreateChatCompletionRequest, CreateResponse,
CreateEmbeddingRequest; ../shared/reference/), checked when the config is read: out of range,
every request of a batch would come back a 400, after the batch is paid for. How a request body
is built for each endpoint is the prompts room's business (br/prompts/endpoints.py).
"""

from __future__ import annotations

from typing import Any

from br.cli import UserError
from br.limits import MIN_OUTPUT_TOKENS

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"
ENDPOINTS = (CHAT, RESPONSES, EMBEDDINGS)

IMAGE_DETAILS = ("auto", "low", "high")
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
# The documented ranges: (kind, lowest, highest); None: no bound. The spec gives max_tokens and
# max_completion_tokens no minimum, but the API refuses less than 1 (a Responses
# max_output_tokens: less than MIN_OUTPUT_TOKENS, checked in endpoint_of).
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

# Context windows (tokens) of known models, for the plan's and make_requests' warning. A model
# matches its exact name, else the longest name it starts with (gpt-4o-mini-2024-07-18 ->
# gpt-4o-mini). Published figures; a config's `context_windows: {model: tokens}` overrides.
CONTEXT_WINDOWS = {
    "gpt-3.5-turbo": 16_385,
    "gpt-4": 8_192,
    "gpt-4-turbo": 128_000,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-5": 400_000,
    "gpt-5-mini": 400_000,
    "gpt-5-nano": 400_000,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
}


def context_window(model: str, overrides: dict[str, int] | None = None) -> int | None:
    """The model's context window in tokens, or None for a model nobody told us about."""
    for table in (overrides or {}, CONTEXT_WINDOWS):
        if model in table:
            return table[model]
        prefixes = [name for name in table if model.startswith(name + "-")]
        if prefixes:
            return table[max(prefixes, key=len)]
    return None


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
        check_output_caps(where, raw)
    return endpoint


def check_output_caps(where: str, raw: dict[str, Any]) -> None:
    """A Responses step's output cap (max_tokens, max_completion_tokens or body:
    max_output_tokens, all sent as max_output_tokens) is a whole number the API takes."""
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
