"""A request's line and hash from its step's shape (br/prompts/shapes.py), with no server: for
every shape of every endpoint and step kind, the same bytes as encoding the request whole
(records.dumps) and the same hash (identity.request_hash)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from br.config import Config
from br.prompts.build import build_requests
from br.prompts.images.identity import data_url, make_marker, request_hash
from br.records import dumps

# Values that escape differently in a line (UTF-8) and in the canonical form (ASCII), and
# values that empty a text or the image (a shape of their own).
TEXTS = ["plain", "", 'quote " and \\ back', "é ø 北京 \u2028 \U0001f600", "tab\t nl\n nul \x00"]
IMAGES: list[Any] = [
    "https://example.org/a.jpg",
    "",
    None,
    data_url("image/png", b"\x89PNG bytes"),
    make_marker("ab" * 32, "image/png", 10, 4, 3, Path("/tmp/images/x.png")),
]

STEPS = {
    "caption": {"system": "Caption it.", "user": "Title: {title}\n{caption}", "max_tokens": 50},
    "plain": {"user": "{title}", "is_multimodal": False, "temperature": 0.5},
    "responses": {
        "endpoint": "/v1/responses",
        "system": "Sys",
        "user": "{title}",
        "max_tokens": 20,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "x",
                "schema": {"type": "object", "additionalProperties": False},
                "strict": True,
            },
        },
    },
    "embed": {"endpoint": "/v1/embeddings", "user": "{title} {caption}", "dimensions": 8},
    "question": {
        "system": "You ask.",
        "context": "Caption: {title}",
        "dialog_history": "So far: {dialog_history}",
        "image_url": "{image_url}",
        "user": "Ask {caption}",
    },
    "claude": {"model": "claude-sonnet-4-5", "user": "{title}", "max_tokens": 20},
    "gemini": {"model": "gemini-2.5-flash", "user": "{title}", "system": "s"},
}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_shape_writes_the_bytes_and_hash_of_the_whole_encoding(name: str) -> None:
    config = Config(Path("test.yaml"), {"model": "gpt-4o-mini", **STEPS})
    step = config.step(name)
    records = []
    for i, (title, caption, image) in enumerate(itertools.product(TEXTS, TEXTS, IMAGES)):
        record = {"id": i if i % 2 else f"r{i}", "title": title, "caption": caption}
        record["dialog_history"] = title
        if image is not None:
            record["image_url"] = image
        records.append(record)
    seen = 0
    for built in build_requests(records, step, "id", every=True, warn=lambda _: None):
        if built.request is None:
            continue
        assert built.shaped is not None  # the builder's own: written from its shape
        whole = dumps(built.request) + "\n"
        assert built.line == whole, built.request
        assert built.hash == request_hash(built.request), built.request
        assert built.hash == request_hash(built.request, whole)
        seen += 1
    assert seen > len(records) // 3  # many shapes were written, not only skipped records
