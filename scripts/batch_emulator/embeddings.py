"""``/v1/embeddings``: deterministic vectors seeded by each input's text.

docs/api-facts.md "Embeddings": ``input`` is a string, a list of strings, or token arrays;
``dimensions`` defaults to the model's size; ``encoding_format`` is ``float`` or ``base64``
(little-endian float32); usage is ``{prompt_tokens, total_tokens}``.
"""

from __future__ import annotations

import base64
import math
import random
import struct
from typing import Any

from .exceptions import ApiError
from .store import sha256_hex

DEFAULT_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
FIXED_SIZE_MODELS = ("text-embedding-ada-002",)  # no `dimensions` parameter
MAX_ARRAY = 2048  # spec: "any array must be 2048 dimensions or less"


def inputs(body: dict[str, Any]) -> list[str | list[int]]:
    """The inputs of a request (strings, or token lists), or [] when ``input`` is malformed."""
    given = body.get("input")
    if isinstance(given, str):
        return [given]
    if isinstance(given, list) and given:
        if all(isinstance(x, str) for x in given):
            return list(given)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in given):
            return [given]
        if all(isinstance(x, list) and x for x in given):
            return list(given)
    return []


def count_inputs(body: dict[str, Any]) -> int:
    return len(inputs(body)) or 1


def texts(body: dict[str, Any]) -> list[str]:
    return [x for x in inputs(body) if isinstance(x, str)]


def check(body: dict[str, Any]) -> None:
    """ApiError for a request the endpoint refuses with a 400."""
    items = inputs(body)
    if not items:
        raise ApiError(
            400,
            "'input' must be a non-empty string, a list of strings or a list of token arrays.",
            param="input",
            code="invalid_value",
        )
    if len(items) > MAX_ARRAY:
        raise ApiError(
            400, f"'input' may hold at most {MAX_ARRAY} items.", param="input", code="invalid_value"
        )
    if any(x == "" for x in items):
        raise ApiError(
            400, "'input' cannot be an empty string.", param="input", code="invalid_value"
        )
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError(
            400,
            f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    if "dimensions" in body:
        dims = body["dimensions"]
        model = str(body.get("model", ""))
        if model in FIXED_SIZE_MODELS:
            raise ApiError(
                400, "This model does not support specifying dimensions.", param="dimensions"
            )
        top = DEFAULT_DIMENSIONS.get(model, 3072)
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= top:
            raise ApiError(
                400,
                f"Invalid 'dimensions': expected an integer between 1 and {top}.",
                param="dimensions",
                code="invalid_value",
            )


def vector(model: str, item: str | list[int], dimensions: int) -> list[float]:
    """A unit vector drawn from a generator seeded by the model and the input."""
    rng = random.Random(sha256_hex("embedding", model, item))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 7) for v in values]


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(math.ceil(len(x) / 4) if isinstance(x, str) else len(x) for x in inputs(body))


def answer(body: dict[str, Any]) -> dict[str, Any]:
    model = str(body.get("model", ""))
    dims = int(body.get("dimensions") or DEFAULT_DIMENSIONS.get(model, 1536))
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs(body)):
        values = vector(model, item, dims)
        embedding: Any = values
        if as_base64:
            embedding = base64.b64encode(struct.pack(f"<{dims}f", *values)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = prompt_tokens(body)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
