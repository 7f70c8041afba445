"""A request's line and hash from its step's shape (br/prompts/shapes.py), with no server: for
every shape of every endpoint and step kind, the same bytes as encoding the request whole
(records.dumps) and the same hash (identity.request_hash)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from br import records
from br.config import Config
from br.prompts.build import build_requests
from br.prompts.images.identity import data_url, make_marker, request_hash
from br.records import dumps, iter_records

# Values that escape differently in a line (UTF-8) and in the canonical form (ASCII), and
# values that empty a text or the image (a shape of their own).
TEXTS = [
    "plain",
    "",
    'quote " and \\ back',
    "é ø 北京 \u2028 \U0001f600",
    "tab\t nl\n nul \x00 del \x7f",
]
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
    "detail": {"user": "{title}", "image_detail": "high", "temperature": 0.25},
    "reasoning": {
        "endpoint": "/v1/responses",
        "model": "gpt-5-mini",
        "user": "{title} / {caption}",
        "reasoning_effort": "low",
        "verbosity": "low",
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
        key: Any = i if i % 3 == 0 else f"r{i} {TEXTS[i % len(TEXTS)]}"  # ids that escape
        record = {"id": key, "title": title, "caption": caption}
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


def test_a_shape_follows_the_exact_float_mode_of_records_dumps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a number beyond a double is read, records.dumps writes in Python (a YAML key read
    as a bool becomes "True"): the shapes learned before are not used after it."""
    monkeypatch.setattr(records, "_exact_read", False)  # the mode is the process's: put back
    data = tmp_path / "data.jsonl"
    rows = ['{"id": "a", "title": "x"}', '{"id": "b", "n": 1e400, "title": "y"}']
    data.write_text("\n".join([*rows, '{"id": "c", "title": "z"}', ""]))
    schema = {"type": "object", "properties": {True: {"type": "string"}}}  # YAML's `on:`
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    steps = {"s": {"user": "{title}", "is_multimodal": False, "response_format": fmt}}
    step = Config(Path("test.yaml"), {"model": "gpt-4o-mini", **steps}).step("s")
    # Each line beside the whole encoding at the time it is written (as make_requests writes).
    pairs = [
        (b.line, dumps(b.request) + "\n")
        for b in build_requests(iter_records(data), step, "id", warn=lambda _: None)
    ]
    assert [line for line, _ in pairs] == [whole for _, whole in pairs]
    assert '"true"' in pairs[0][0] and '"True"' in pairs[2][0]  # before and after the switch


def test_a_body_that_holds_a_value_inside_a_longer_string_is_encoded_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were an endpoint to embed a text in a longer string, its stand-in would be left inside
    a piece: that shape is not used, and the request is encoded whole."""
    from br.prompts import endpoints, shapes

    def embedding(step: Any, texts: list[str], image: str | None) -> dict[str, Any]:
        return {**endpoints.request_body(step, texts, image), "note": f"about {texts[0]}"}

    monkeypatch.setattr(shapes, "request_body", embedding)
    step = Config(Path("t.yaml"), {"model": "gpt-4o-mini", **STEPS}).step("plain")
    maker = shapes.Shapes(step)
    assert maker.encode("r1", ["a text"], None) is None


def test_a_value_is_escaped_as_json_escapes_it_through_orjson_or_not() -> None:
    from json.encoder import encode_basestring

    from br.prompts.shapes import escape

    for value in [*TEXTS, "lone \ud800 surrogate", "".join(map(chr, range(0x800)))]:
        assert escape(value) == encode_basestring(value)
