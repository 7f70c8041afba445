"""The model endpoints the emulator answers beyond plain chat: image parts checked and counted
as the API does, /v1/responses and /v1/embeddings live and in batches, every answer checked
against the published spec's schemas."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import jsonschema
import openai
import pytest
from batch_emulator.images import image_tokens
from emulator_helpers import *  # noqa: F403 - the fixtures: emu, client, check, start_emulator
from emulator_helpers import MODEL, image_bytes, raw_json, read_jsonl, upload, wait_batch
from PIL import Image

SCHEMA = {
    "type": "object",
    "properties": {"keep": {"type": "boolean"}, "why": {"type": "string"}},
    "required": ["keep", "why"],
    "additionalProperties": False,
}


def data_url(mime: str, raw: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def animated_gif() -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def image_line(custom_id: str, url: str, detail: str = "auto") -> dict[str, Any]:
    part = {"type": "image_url", "image_url": {"url": url, "detail": detail}}
    content = [{"type": "text", "text": "caption this"}, part]
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def run_batch(client: openai.OpenAI, endpoint: str, lines: list[dict[str, Any]]) -> Any:
    f = upload(client, lines)
    b = client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h")
    return wait_batch(client, b.id)


# ---------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((4000, 3000), "low", 85),
        ((1024, 1024), "high", 765),  # OpenAI's worked example: 768 x 768, 4 tiles
        ((2048, 4096), "high", 1105),  # OpenAI's worked example: 768 x 1536, 6 tiles
        ((4096, 4096), "auto", 765),
        ((512, 512), "auto", 255),
        ((64, 48), "high", 255),  # small images are not scaled up (UNVERIFIED)
        ((1920, 1080), "auto", 1105),  # 1365 x 768: 3 x 2 tiles
    ],
)
def test_image_token_rule(size: tuple[int, int], detail: str, tokens: int) -> None:
    assert image_tokens(*size, detail) == tokens


def test_image_parts_are_checked_in_batches(client: openai.OpenAI) -> None:
    good = {
        "png": image_line("png", data_url("image/png", image_bytes(1024, 1024)), "high"),
        "jpeg": image_line("jpeg", data_url("image/jpeg", image_bytes(64, 64, "JPEG")), "low"),
        "webp": image_line("webp", data_url("image/webp", image_bytes(30, 30, "WEBP"))),
        "gif": image_line("gif", data_url("image/gif", image_bytes(30, 30, "GIF"))),
        "remote": image_line("remote", "https://example.com/photos/a.jpg?size=big"),
    }
    bad = {
        "animated": (image_line("animated", data_url("image/gif", animated_gif())), "format"),
        "mislabelled": (
            image_line("mislabelled", data_url("image/jpeg", image_bytes(10, 10))),
            "format",
        ),
        "bmp": (image_line("bmp", data_url("image/bmp", image_bytes(10, 10, "BMP"))), "format"),
        "not-base64": (image_line("not-base64", "data:image/png;base64,!!!notbase64"), "image"),
        "not-an-image": (image_line("not-an-image", data_url("image/png", b"hello")), "image"),
        "ftp": (image_line("ftp", "ftp://example.com/a.png"), "image"),
        "no-host": (image_line("no-host", "https://"), "image"),
    }
    b = run_batch(client, "/v1/chat/completions", [*good.values(), *(x for x, _ in bad.values())])
    assert b.status == "completed"
    assert b.request_counts.to_dict() == {"total": 12, "completed": 5, "failed": 7}
    answered = {x["custom_id"]: x["response"]["body"] for x in read_jsonl(client, b.output_file_id)}
    assert set(answered) == set(good)
    text = math.ceil(len("caption this") / 4) + 4
    prompt = {k: v["usage"]["prompt_tokens"] - text for k, v in answered.items()}
    assert prompt == {"png": 765, "jpeg": 85, "webp": 255, "gif": 255, "remote": 255}
    failed = {x["custom_id"]: x["response"] for x in read_jsonl(client, b.error_file_id)}
    for custom_id, (_, kind) in bad.items():
        assert failed[custom_id]["status_code"] == 400
        error = failed[custom_id]["body"]["error"]
        code = "invalid_image_format" if kind == "format" else "invalid_image"
        assert (error["code"], error["param"]) == (code, "messages"), custom_id


def test_bad_image_in_a_live_call(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
        }
    ]
    with pytest.raises(openai.BadRequestError) as exc:
        client.with_options(max_retries=0).chat.completions.create(model=MODEL, messages=messages)
    check("ErrorResponse", exc.value.response.json())
    assert exc.value.code == "invalid_image"


# ---------------------------------------------------------------------------- responses


def test_responses_live(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    raw = client.responses.with_raw_response.create(
        model=MODEL, instructions="be brief", input="What is in the news?"
    )
    body = raw_json(raw)
    check("Response", body)
    r = client.responses.create(model=MODEL, instructions="be brief", input="What is in the news?")
    assert r.id == body["id"] and r.id.startswith("resp_") and r.status == "completed"
    assert r.output_text.startswith("Emulated answer ") and r.output_text.endswith("news?")
    chars = len("be brief") + len("What is in the news?")
    assert r.usage.input_tokens == math.ceil(chars / 4) + 4
    assert r.usage.output_tokens == math.ceil(len(r.output_text) / 4)
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens

    image = data_url("image/png", image_bytes(1024, 1024))
    parts = [
        {"type": "input_text", "text": "Caption this"},
        {"type": "input_image", "image_url": image, "detail": "high"},
    ]
    fmt = {"type": "json_schema", "name": "verdict", "schema": SCHEMA, "strict": True}
    structured_raw = client.responses.with_raw_response.create(
        model=MODEL,
        instructions="judge",
        input=[{"role": "user", "content": parts}],
        text={"format": fmt},
    )
    structured = raw_json(structured_raw)
    check("Response", structured)
    text = structured["output"][0]["content"][0]["text"]
    jsonschema.validate(json.loads(text), SCHEMA)
    assert structured["text"]["format"]["type"] == "json_schema"
    assert structured["usage"]["input_tokens"] == math.ceil(len("judgeCaption this") / 4) + 4 + 765


def test_an_answer_longer_than_its_cap_stops_there(
    client: openai.OpenAI, check: Callable[[str, Any], None]
) -> None:
    long = "What happened in the valley after the floods of the spring? " * 3
    raw = client.responses.with_raw_response.create(model=MODEL, input=long, max_output_tokens=16)
    body = raw_json(raw)
    check("Response", body)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"]["output_tokens"] == 16
    assert len(body["output"][0]["content"][0]["text"]) == 64
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long}], max_tokens=5
    )
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 5
    content = chat.choices[0].message.content or ""
    assert len(content) == 20 and content.startswith("Emulated answer ")
    roomy = client.responses.create(model=MODEL, input=long, max_output_tokens=500)
    assert roomy.status == "completed" and roomy.usage.output_tokens < 500


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": "hi", "seed": 3}, "seed"),
        ({"input": "hi", "max_output_tokens": 8}, "max_output_tokens"),
        ({"input": "hi", "max_output_tokens": "a"}, "max_output_tokens"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
         "text.format.schema"),
        ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ],
)  # fmt: skip
def test_responses_requests_the_spec_refuses_are_400(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.post("/responses", body={"model": MODEL, **extra}, cast_to=object)
    assert refused.value.body["param"] == param  # type: ignore[index]


def test_responses_batch(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    def line(custom_id: str, text: str, url: str = "/v1/responses") -> dict[str, Any]:
        body = {"model": MODEL, "instructions": "be brief", "input": text}
        return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}

    lines = [line(f"r{i}", f"question {i}") for i in range(5)]
    lines.append(line("boom", "EMULATOR_ERROR:500"))
    b = run_batch(client, "/v1/responses", lines)
    check("Batch", b)
    assert b.request_counts.to_dict() == {"total": 6, "completed": 5, "failed": 1}
    out = read_jsonl(client, b.output_file_id)
    for x in out:
        check("Response", x["response"]["body"])
    used = sum(x["response"]["body"]["usage"]["input_tokens"] for x in out)
    assert b.usage.input_tokens == used
    (err,) = read_jsonl(client, b.error_file_id)
    assert err["custom_id"] == "boom" and err["response"]["status_code"] == 500
    mixed = run_batch(
        client, "/v1/responses", [line("a", "x"), line("b", "y", "/v1/chat/completions")]
    )
    assert mixed.status == "failed"
    assert (mixed.errors.data[0].code, mixed.errors.data[0].line) == ("invalid_url", 2)


# ---------------------------------------------------------------------------- embeddings


def embed_raw(client: openai.OpenAI, **kw: Any) -> dict[str, Any]:
    return raw_json(client.embeddings.with_raw_response.create(**kw))


def test_embeddings_live(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    one = embed_raw(client, model="text-embedding-3-small", input="hello", encoding_format="float")
    check("CreateEmbeddingResponse", one)
    vector = one["data"][0]["embedding"]
    assert len(vector) == 1536 and abs(math.sqrt(sum(v * v for v in vector)) - 1) < 1e-4
    assert one["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    again = embed_raw(
        client, model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    assert again["data"][0]["embedding"] == vector  # deterministic
    many = embed_raw(
        client,
        model="text-embedding-3-small",
        input=["hello", "world"],
        dimensions=256,
        encoding_format="float",
    )
    check("CreateEmbeddingResponse", many)
    assert [len(d["embedding"]) for d in many["data"]] == [256, 256]
    assert [d["index"] for d in many["data"]] == [0, 1]
    assert many["data"][0]["embedding"] != many["data"][1]["embedding"]
    large = embed_raw(client, model="text-embedding-3-large", input="x", encoding_format="float")
    assert len(large["data"][0]["embedding"]) == 3072
    ada = embed_raw(client, model="text-embedding-ada-002", input="x", encoding_format="float")
    assert len(ada["data"][0]["embedding"]) == 1536
    packed = embed_raw(
        client, model="text-embedding-3-small", input="hello", encoding_format="base64"
    )
    floats = struct.unpack("<1536f", base64.b64decode(packed["data"][0]["embedding"]))
    assert max(abs(a - b) for a, b in zip(floats, vector, strict=True)) < 1e-6
    sdk = client.embeddings.create(model="text-embedding-3-small", input="hello")  # SDK: base64
    assert len(sdk.data[0].embedding) == 1536
    no_retry = client.with_options(max_retries=0)
    for bad in (
        {"model": "text-embedding-ada-002", "input": "x", "dimensions": 10},
        {"model": "text-embedding-3-small", "input": "x", "dimensions": 5000},
        {"model": "text-embedding-3-small", "input": ""},
        {"model": "text-embedding-3-small", "input": "x", "encoding_format": "int8"},
    ):
        with pytest.raises(openai.BadRequestError) as exc:
            no_retry.embeddings.create(**bad)
        check("ErrorResponse", exc.value.response.json())


def test_embeddings_batch(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    def line(custom_id: str, given: Any, **body: Any) -> dict[str, Any]:
        body = {"model": "text-embedding-3-small", "input": given, **body}
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}

    lines = [line("one", "a cat"), line("two", ["a dog", "a bird"], dimensions=8)]
    lines.append(line("empty", ""))
    b = run_batch(client, "/v1/embeddings", lines)
    assert b.request_counts.to_dict() == {"total": 3, "completed": 2, "failed": 1}
    out = {x["custom_id"]: x["response"]["body"] for x in read_jsonl(client, b.output_file_id)}
    for body in out.values():
        check("CreateEmbeddingResponse", body)
    assert [len(d["embedding"]) for d in out["two"]["data"]] == [8, 8]
    live = embed_raw(client, model="text-embedding-3-small", input="a cat", encoding_format="float")
    assert out["one"]["data"][0]["embedding"] == live["data"][0]["embedding"]
    assert b.usage.input_tokens == sum(x["usage"]["prompt_tokens"] for x in out.values())

    no_input = run_batch(
        client, "/v1/embeddings", [line("a", "x"), {**line("b", "y"), "body": {"model": "m"}}]
    )
    assert (no_input.errors.data[0].code, no_input.errors.data[0].param) == (
        "invalid_request",
        "body.input",
    )


def test_embeddings_batch_input_limit(client: openai.OpenAI) -> None:
    """50,000 embedding inputs across a batch's requests at most (the spec's limit)."""
    texts = [f"t{i}" for i in range(2001)]
    over = run_batch(client, "/v1/embeddings", [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "text-embedding-3-small", "input": texts}}
        for i in range(25)
    ])  # fmt: skip
    assert over.status == "failed"
    assert over.errors.data[0].code == "too_many_embedding_inputs"
    assert "50,025" in over.errors.data[0].message
