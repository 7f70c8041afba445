"""The prompts room as a library, with no server and no make: records -> request lines.

The request builder (templates, placeholders, the missing-field rule, where:, the data key),
each endpoint's body built once with its image already resolved, and request identity.
Steps are parsed from config mappings by the real config code; images are real files.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from br.cli import UserError
from br.config import Config, Step
from br.prompts.build import Built, build_requests, step_requests
from br.prompts.images.cache import LocalImages
from br.prompts.images.formats import ImageOptions
from br.prompts.images.identity import (
    Marker,
    canonical_body,
    data_url,
    materialise,
    request_hash,
)
from br.prompts.preflight import Preflight
from br.prompts.templates import Template, custom_id_of, key_function
from PIL import Image

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"


def step(**keys: Any) -> Step:
    """Step 's' of a config holding only it (model gpt-4o-mini unless given). Steps send an
    image (the field image_url) unless they say is_multimodal: false, as in a config."""
    data = {"model": "gpt-4o-mini", "s": {"user": "Describe {title}", **keys}}
    return Config(Path("test.yaml"), data).step("s")


def built(records: list[dict[str, Any]], s: Step, key: str = "id", **kw: Any) -> list[Built]:
    return list(build_requests(iter(records), s, key, **kw))


def png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path, "PNG")
    return path


# --------------------------------------------------------------------------- templates


def test_a_template_fills_fields_jq_paths_and_literal_braces() -> None:
    t = Template("{title} by {.author.name} in {{braces}} ({n})")
    text, missing = t.fill({"title": "T", "author": {"name": "Ann"}, "n": 3})
    assert (text, missing) == ("T by Ann in {braces} (3)", [])
    assert not t.unclosed
    assert Template("a {b").unclosed


def test_a_template_names_what_a_record_lacks_and_defaults_fill_blanks() -> None:
    t = Template("{title} {caption}")
    assert t.fill({"title": "T", "caption": None}) == ("T ", ["caption"])
    assert t.fill({"title": "T"}, defaults={}) == ("T ", [])


def test_the_data_key_is_a_field_or_a_jq_expression() -> None:
    assert custom_id_of({"id": 7}, key_function("id")) == "7"
    assert custom_id_of({"id": "a"}, key_function("id")) == "a"
    assert custom_id_of({"id": {"x": 1}}, key_function("id")) is None
    assert custom_id_of({"t": "x", "y": 2}, key_function('.t + "-" + (.y|tostring)')) == "x-2"
    with pytest.raises(UserError, match="gives 2 values"):
        key_function(".tags[]")({"tags": [1, 2]})


# --------------------------------------------------------------------------- the builder


def test_five_records_in_a_row_lacking_a_field_stop_the_build() -> None:
    s = step(is_multimodal=False)
    records = [{"id": i} for i in range(4)] + [{"id": 4, "title": "ok"}]
    out = built(records, s)
    assert [b.missing for b in out] == [["title"]] * 4 + [[]]
    assert out[-1].request is not None
    with pytest.raises(UserError, match="5 consecutive records .*title"):
        built([{"id": i} for i in range(5)], s)


def test_where_selects_records_and_every_yields_the_others_too() -> None:
    s = step(where=".n > 1", is_multimodal=False)
    records = [{"id": i, "title": f"t{i}", "n": i} for i in range(4)]
    assert [b.custom_id for b in built(records, s)] == ["2", "3"]
    every = built(records, s, every=True)
    assert [b.selected for b in every] == [False, False, True, True]
    with pytest.raises(UserError, match="where: .* failed on 1 of 2 records"):
        built(
            [{"id": 1, "title": "x", "n": 2}, {"id": 2, "title": "y", "n": "a"}],
            step(where=".n - 1", is_multimodal=False),
        )


def test_data_keys_must_be_present_and_unique() -> None:
    with pytest.raises(UserError, match="1 record.*no usable data key .*index 1"):
        built([{"id": 1, "title": "a"}, {"title": "b"}], step(is_multimodal=False))
    with pytest.raises(UserError, match="not unique: '1' x2"):
        built([{"id": 1, "title": "a"}, {"id": 1, "title": "b"}], step(is_multimodal=False))


def test_a_response_key_the_data_already_holds_is_refused() -> None:
    s = step(response_key="answer", is_multimodal=False)
    with pytest.raises(UserError, match=r"response_key 'answer' .* \(record 1,"):
        built(
            [{"id": 1, "title": "a"}, {"id": 2, "title": "b", "answer": "x"}],
            s,
            response_key="answer",
        )


# --------------------------------------------------------------------------- each endpoint's body


def test_a_chat_body_holds_the_system_the_text_the_image_and_the_parameters() -> None:
    s = step(
        system="Be brief.",
        image_detail="low",
        max_tokens=50,
        response_format={"type": "json_object"},
    )
    (b,) = built([{"id": 1, "title": "T", "image_url": "https://x/a.png"}], s)
    assert b.request == {
        "custom_id": "1",
        "method": "POST",
        "url": CHAT,
        "body": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe T"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/a.png", "detail": "low"},
                        },
                    ],
                },
            ],
            "max_tokens": 50,
            "response_format": {"type": "json_object"},
        },
    }
    (text_only,) = built([{"id": 1, "title": "T"}], step(is_multimodal=False))
    assert text_only.request is not None
    assert text_only.request["body"]["messages"] == [{"role": "user", "content": "Describe T"}]


def test_a_responses_body_is_built_in_its_own_shape() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    s = step(
        endpoint=RESPONSES,
        system="Sys.",
        max_tokens=100,
        reasoning_effort="low",
        verbosity="high",
        response_format=schema,
        body={"metadata": {"k": "v"}},
    )
    (b,) = built([{"id": 1, "title": "T", "image_url": "https://x/a.png"}], s)
    assert b.request is not None and b.request["url"] == RESPONSES
    body = b.request["body"]
    assert "messages" not in body
    assert body["instructions"] == "Sys."
    assert body["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Describe T"},
                {"type": "input_image", "image_url": "https://x/a.png", "detail": "auto"},
            ],
        }
    ]
    assert body["max_output_tokens"] == 100 and body["reasoning"] == {"effort": "low"}
    assert body["metadata"] == {"k": "v"}
    assert body["text"]["verbosity"] == "high"
    fmt = body["text"]["format"]
    assert (fmt["type"], fmt["name"], fmt["strict"]) == ("json_schema", "s", True)
    assert fmt["schema"]["additionalProperties"] is False  # a bare schema made strict
    (plain,) = built([{"id": 1, "title": "T"}], step(endpoint=RESPONSES, is_multimodal=False))
    assert plain.request is not None and plain.request["body"]["input"] == "Describe T"


def test_the_parameters_keep_the_config_s_order_so_the_bytes_never_vary() -> None:
    # A set's order varies with the process's string hashing: every run would write other
    # bytes, and make would rebuild requests.jsonl and everything after it.
    s = step(is_multimodal=False, top_p=0.5, max_tokens=20, temperature=1, seed=3)
    (b,) = built([{"id": 1, "title": "T"}], s)
    assert b.request is not None
    assert list(b.request["body"]) == [
        "model",
        "messages",
        "top_p",
        "max_tokens",
        "temperature",
        "seed",
    ]


def test_an_embeddings_body_is_the_text_to_embed() -> None:
    s = step(endpoint=EMBEDDINGS, user="{title}: {caption}", dimensions=256)
    (b,) = built([{"id": 1, "title": "T", "caption": "C", "image_url": "x.png"}], s)
    assert b.request is not None
    assert b.request["body"] == {"model": "gpt-4o-mini", "input": "T: C", "dimensions": 256}


# --------------------------------------------------------------------------- images resolved first


def test_a_local_image_is_resolved_before_the_body_is_built(tmp_path: Path) -> None:
    path = png(tmp_path / "img" / "a.png")
    s = step(endpoint=RESPONSES, image_key="image_path", image_detail="low")
    records = [{"id": 1, "title": "T", "image_path": "img/a.png"}]
    with LocalImages(tmp_path, ImageOptions(), tmp_path / "cache", "image_path") as local:
        (b,) = built(records, s, local=local)
    assert b.request is not None
    (part,) = [p for p in b.request["body"]["input"][0]["content"] if p["type"] == "input_image"]
    marker = Marker.parse(part["image_url"])
    assert marker is not None and marker.path == path
    assert marker.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (marker.width, marker.height) == (64, 48)
    # The chunk gets the bytes inline, and the request keeps its identity.
    line = materialise(b.line)
    assert data_url("image/png", path.read_bytes()) in line
    assert request_hash(json.loads(line)) == request_hash(b.request)


def test_a_resized_image_is_cached_and_referenced(tmp_path: Path) -> None:
    png(tmp_path / "big.png", (800, 600))
    s = step(image_key="image_path", image_max_side=200)
    cache = tmp_path / "cache"
    with LocalImages(tmp_path, ImageOptions.from_step(s), cache, "image_path") as local:
        (b,) = built([{"id": 1, "title": "T", "image_path": "big.png"}], s, local=local)
    assert b.request is not None
    url = b.request["body"]["messages"][0]["content"][1]["image_url"]["url"]
    marker = Marker.parse(url)
    assert marker is not None and (marker.width, marker.height) == (200, 150)
    assert marker.path.parent == cache.resolve() and marker.path.exists()


def test_an_image_that_cannot_be_sent_skips_its_record_without_counting_as_missing(
    tmp_path: Path,
) -> None:
    (tmp_path / "x.bmp").write_bytes(b"BM" + b"\0" * 64)
    s = step(image_key="image_path")
    records = [{"id": i, "title": "T", "image_path": "gone.png"} for i in range(6)]
    records.append({"id": 6, "title": "T", "image_path": "x.bmp"})
    with LocalImages(tmp_path, ImageOptions(), None, "image_path") as local:
        out = built(records, s, local=local)  # seven skips in a row: not the missing rule
    assert all(b.request is None and b.missing == [] for b in out)
    assert out[0].reason == "image_path: gone.png: file not found"
    assert out[-1].reason is not None and "a BMP file" in out[-1].reason


def test_the_preflight_cache_skips_a_record_whose_image_url_failed(tmp_path: Path) -> None:
    cache = tmp_path / "preflight.json"
    now = time.time()
    cache.write_text(
        json.dumps(
            {
                "passed": {"https://x/ok.png": now},
                "failed": {"https://x/bad.png": ["HTTP 404", now]},
            }
        )
    )
    checker = Preflight(cache, "image_url", offline=True)  # the cache's verdicts only
    records = [
        {"id": 1, "title": "a", "image_url": "https://x/ok.png"},
        {"id": 2, "title": "b", "image_url": "https://x/bad.png"},
    ]
    out = list(step_requests(iter(records), step(), "id", None, checker))
    assert [(b.request is not None, reason) for b, reason in out] == [
        (True, None),
        (False, "image_url: HTTP 404"),
    ]


# --------------------------------------------------------------------------- request identity


def test_a_request_is_its_url_and_body_not_its_custom_id() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    a = {"custom_id": "a", "url": CHAT, "body": body}
    assert request_hash(a) == request_hash({**a, "custom_id": "b"})
    assert request_hash(a) != request_hash({**a, "url": RESPONSES})
    assert request_hash(a) != request_hash({**a, "body": {**body, "model": "n"}})


def test_an_image_counts_by_its_bytes_whatever_carries_them(tmp_path: Path) -> None:
    path = png(tmp_path / "a.png")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    def request(url: str) -> dict[str, Any]:
        part = {"type": "image_url", "image_url": {"url": url}}
        return {"url": CHAT, "body": {"messages": [{"role": "user", "content": [part]}]}}

    marker = f"br-image:{sha}:image/png:{len(data)}:64x48:{path}"
    moved = f"br-image:{sha}:image/png:{len(data)}:64x48:/elsewhere/a.png"
    inline = data_url("image/png", data)
    assert request_hash(request(marker)) == request_hash(request(inline))
    assert request_hash(request(marker)) == request_hash(request(moved))
    assert request_hash(request(marker)) != request_hash(
        request(data_url("image/png", data + b"x"))
    )
    canonical = canonical_body(request(marker)["body"])
    assert canonical["messages"][0]["content"][0]["image_url"]["url"] == f"sha256:{sha}"
