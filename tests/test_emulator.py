"""End-to-end tests of scripts/emulator.py: a real subprocess driven by the real openai SDK."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from emulator_helpers import *  # noqa: F403 - the fixtures: emu, client, check, start_emulator
from emulator_helpers import (
    FAST,
    MODEL,
    TERMINAL,
    Emu,
    create_batch,
    png_data_url,
    raw_json,
    read_jsonl,
    req_line,
    upload,
    wait_batch,
)

# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def test_files_crud(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    content = b'{"a": 1}\n'
    f = client.files.create(file=("x.jsonl", content), purpose="batch")
    check("OpenAIFile", f)
    assert f.status == "processed" and f.purpose == "batch" and f.bytes == len(content)
    assert f.filename == "x.jsonl" and f.expires_at == f.created_at + 2592000
    assert client.files.retrieve(f.id).to_dict() == f.to_dict()
    assert client.files.content(f.id).content == content
    raw = client.files.with_raw_response.content(f.id)
    assert raw.headers["content-type"] == "application/octet-stream"

    g = client.files.create(
        file=("notes.txt", b"hello"),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    check("OpenAIFile", g)
    assert g.expires_at == g.created_at + 3600
    h = client.files.create(file=("img.png", b"\x89PNG"), purpose="vision")
    assert h.expires_at is None

    listing = raw_json(client.files.with_raw_response.list())
    check("ListFilesResponse", listing)
    assert [x["id"] for x in listing["data"]] == [h.id, g.id, f.id]  # desc by default
    assert listing["first_id"] == h.id and listing["last_id"] == f.id
    assert not listing["has_more"]
    asc = [x.id for x in client.files.list(order="asc")]
    assert asc == [f.id, g.id, h.id]
    assert [x.id for x in client.files.list(purpose="batch")] == [f.id]
    page = raw_json(client.files.with_raw_response.list(limit=1, order="asc"))
    assert page["has_more"] and [x["id"] for x in page["data"]] == [f.id]
    page2 = raw_json(client.files.with_raw_response.list(limit=1, order="asc", after=f.id))
    assert [x["id"] for x in page2["data"]] == [g.id]
    assert [x.id for x in client.files.list(limit=1, order="asc")] == [f.id, g.id, h.id]
    empty = raw_json(client.files.with_raw_response.list(purpose="assistants"))
    check("ListFilesResponse", empty)
    assert empty["data"] == [] and not empty["has_more"]

    deleted = client.files.delete(f.id)
    check("DeleteFileResponse", deleted)
    assert deleted.deleted and deleted.id == f.id
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError) as exc:
            call(f.id)
        check("ErrorResponse", exc.value.response.json())


def test_file_upload_errors(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("notes.txt", b"{}"), purpose="batch")
    check("ErrorResponse", exc.value.response.json())
    assert exc.value.body == {
        "message": "Invalid file format for Batch API. Must be .jsonl",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("a.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    assert exc.value.code == "invalid_value" and exc.value.param == "purpose"
    with pytest.raises(openai.BadRequestError):
        client.files.create(
            file=("a.jsonl", b"{}"),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 10},
        )
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.list(limit=0)
    check("ErrorResponse", exc.value.response.json())


def test_large_upload_streams_to_disk(emu: Emu, client: openai.OpenAI) -> None:
    line = json.dumps(req_line("x", "y" * 1000)).encode() + b"\n"
    content = line * 3000  # ~3 MB, above python-multipart's in-memory threshold
    f = client.files.create(file=("big.jsonl", content), purpose="batch")
    assert f.bytes == len(content)
    assert client.files.content(f.id).content == content
    assert not any((emu.state_dir / "tmp").iterdir())


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def test_batch_lifecycle(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    lines = [req_line(f"ok-{i}", f"question number {i}") for i in range(30)]
    lines.append(req_line("ctx", "too long EMULATOR_ERROR:context_length_exceeded"))
    lines.append(req_line("boom", "EMULATOR_ERROR:500"))
    lines.append(req_line("slow", "EMULATOR_ERROR:429"))
    b = create_batch(client, lines, metadata={"job": "t1"})
    check("Batch", b)
    assert b.status == "validating" and b.request_counts.total == 0
    assert b.expires_at == b.created_at + 86400 and b.metadata == {"job": "t1"}
    assert b.output_file_id is None and b.errors is None

    seen: list[str] = []
    done_counts: list[int] = []
    while True:
        cur = client.batches.retrieve(b.id)
        check("Batch", cur)
        if not seen or seen[-1] != cur.status:
            seen.append(cur.status)
        if cur.status == "in_progress":
            done_counts.append(cur.request_counts.completed + cur.request_counts.failed)
        if cur.status in TERMINAL:
            break
        time.sleep(0.02)
    assert cur.status == "completed", seen
    assert seen[-1] == "completed" and set(seen) <= {
        "validating",
        "in_progress",
        "finalizing",
        "completed",
    }
    assert done_counts == sorted(done_counts)
    for ts in ("in_progress_at", "finalizing_at", "completed_at"):
        assert isinstance(getattr(cur, ts), int)
    assert cur.failed_at is None and cur.model == MODEL
    assert cur.request_counts.to_dict() == {"total": 33, "completed": 30, "failed": 3}

    out = read_jsonl(client, cur.output_file_id)
    err = read_jsonl(client, cur.error_file_id)
    assert len(out) == 30 and len(err) == 3
    assert [x["custom_id"] for x in out] != [f"ok-{i}" for i in range(30)]  # shuffled
    assert sorted(x["custom_id"] for x in out) == sorted(f"ok-{i}" for i in range(30))
    for line in out:
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_") and line["error"] is None
        resp = line["response"]
        assert resp["status_code"] == 200 and resp["request_id"].startswith("req_")
        check("CreateChatCompletionResponse", resp["body"])
        assert resp["body"]["model"] == MODEL
        assert resp["body"]["choices"][0]["message"]["content"].startswith("Emulated answer ")
    by_id = {x["custom_id"]: x for x in err}
    assert by_id["ctx"]["response"]["status_code"] == 400
    assert by_id["ctx"]["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert by_id["ctx"]["response"]["body"]["error"]["param"] == "messages"
    assert by_id["boom"]["response"]["status_code"] == 500
    assert by_id["slow"]["response"]["status_code"] == 429
    assert by_id["slow"]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
    for line in err:
        assert line["error"] is None
        check("ErrorResponse", line["response"]["body"])

    usage = cur.usage
    assert usage is not None
    prompt = sum(x["response"]["body"]["usage"]["prompt_tokens"] for x in out)
    completion = sum(x["response"]["body"]["usage"]["completion_tokens"] for x in out)
    assert (usage.input_tokens, usage.output_tokens) == (prompt, completion)
    assert usage.total_tokens == prompt + completion

    for fid, kind in ((cur.output_file_id, "output"), (cur.error_file_id, "error")):
        meta = client.files.retrieve(fid)
        check("OpenAIFile", meta)
        assert meta.purpose == "batch_output" and meta.filename == f"{b.id}_{kind}.jsonl"


def test_all_requests_failed_has_no_output_file(client: openai.OpenAI) -> None:
    b = create_batch(client, [req_line(f"r{i}", "EMULATOR_ERROR:429") for i in range(4)])
    b = wait_batch(client, b.id)
    assert b.status == "completed" and b.output_file_id is None and b.error_file_id
    assert b.request_counts.to_dict() == {"total": 4, "completed": 0, "failed": 4}


def test_list_batches_pagination(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    f = upload(client, [req_line("a", "hi")])
    ids = [
        client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(5)
    ]
    page = raw_json(client.batches.with_raw_response.list(limit=2))
    check("ListBatchesResponse", page)
    assert [x["id"] for x in page["data"]] == ids[::-1][:2] and page["has_more"]
    assert page["first_id"] == ids[4] and page["last_id"] == ids[3]
    last = raw_json(client.batches.with_raw_response.list(limit=2, after=ids[1]))
    assert [x["id"] for x in last["data"]] == [ids[0]] and not last["has_more"]
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]
    for b in client.batches.list():
        check("Batch", b)


@pytest.mark.parametrize(
    ("lines", "code", "line", "param"),
    [
        pytest.param([json.dumps(req_line("a", "x")), "{not json"], "invalid_json_line", 2, None),
        *[
            pytest.param(
                [{k: v for k, v in req_line("a", "x").items() if k != field}],
                "missing_required_parameter",
                1,
                field,
                id=f"missing-{field}",
            )
            for field in ("custom_id", "method", "url", "body")
        ],
        pytest.param(
            [{**req_line("a", "x"), "url": "/v1/embeddings"}], "invalid_url", 1, "url", id="url"
        ),
        pytest.param(
            [req_line("a", "x"), req_line("b", "y", stream=True)],
            "streaming_unsupported",
            2,
            "body.stream",
            id="stream",
        ),
        pytest.param(
            [{**req_line("a", "x"), "body": {"messages": []}}],
            "invalid_request",
            1,
            "body.model",
            id="no-model",
        ),
        pytest.param(
            [{**req_line("a", "x"), "body": {"model": MODEL}}],
            "invalid_request",
            1,
            "body.messages",
            id="no-messages",
        ),
        pytest.param(
            [req_line("a", "x"), req_line("a", "y")],
            "duplicate_custom_id",
            2,
            "custom_id",
            id="duplicate",
        ),
        pytest.param(
            [req_line("a", "x"), req_line("b", "y", model="gpt-4o")],
            "mismatched_model",
            2,
            "body.model",
            id="models",
        ),
        pytest.param([], "empty_file", None, None, id="empty"),
    ],
)
def test_validation_failures(
    client: openai.OpenAI,
    check: Callable[[str, Any], None],
    lines: list[Any],
    code: str,
    line: int | None,
    param: str | None,
) -> None:
    b = wait_batch(client, create_batch(client, lines).id)
    check("Batch", b)
    assert b.status == "failed" and isinstance(b.failed_at, int)
    assert b.request_counts.to_dict() == {"total": 0, "completed": 0, "failed": 0}
    assert b.errors is not None and b.errors.object == "list"
    err = b.errors.data[0]
    assert (err.code, err.line, err.param) == (code, line, param), err
    assert err.message
    assert b.output_file_id is None and b.error_file_id is None


def test_too_many_requests_and_error_cap(client: openai.OpenAI) -> None:
    lines = ["{bad"] * 150
    b = wait_batch(client, create_batch(client, lines).id)
    assert b.status == "failed" and len(b.errors.data) == 100
    assert [e.line for e in b.errors.data[:3]] == [1, 2, 3]
    many = [json.dumps(req_line(f"r{i}", "x")) for i in range(50_001)]
    b = wait_batch(client, create_batch(client, many).id)
    assert b.status == "failed" and b.errors.data[0].code == "too_many_requests"


def test_missing_input_file(client: openai.OpenAI) -> None:
    b = client.batches.create(
        input_file_id="file-doesnotexist", endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert b.status == "validating"
    b = wait_batch(client, b.id)
    assert b.status == "failed"
    err = b.errors.data[0]
    assert (err.code, err.line, err.param) == ("invalid_request", None, "file_id")
    assert "file-doesnotexist" in err.message


def test_create_batch_rejections(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    f = upload(client, [req_line("a", "x")])

    def create(**kw: Any) -> openai.BadRequestError:
        args: dict[str, Any] = {
            "input_file_id": f.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **kw,
        }
        with pytest.raises(openai.BadRequestError) as exc:
            client.batches.create(**args)
        check("ErrorResponse", exc.value.response.json())
        return exc.value

    e = create(endpoint="/v1/invalid/endpoint")
    assert (e.code, e.param) == ("invalid_value", "endpoint")
    assert "Invalid value: '/v1/invalid/endpoint'. Supported values are:" in e.message
    for window in ("1h", "48h", "invalid", ""):
        e = create(completion_window=window)
        assert e.param == "completion_window" and "completion_window" in e.message + e.param
    e = create(metadata={"tags": ["a", "b"]})
    assert (e.code, e.param) == ("invalid_type", "metadata.tags")
    assert e.body["message"] == (
        "Invalid type for 'metadata.tags': expected a string, but got an array instead."
    )
    create(metadata={f"k{i}": "v" for i in range(17)})
    create(metadata={"k" * 65: "v"})
    create(metadata={"k": "v" * 513})
    create(metadata={"k": 1})
    ok = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={f"k{i}": "v" * 512 for i in range(16)},
    )
    check("Batch", ok)
    with pytest.raises(openai.NotFoundError) as nf:
        client.batches.retrieve("batch_nope")
    check("ErrorResponse", nf.value.response.json())
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_nope")


def test_processing_zero_completes_on_next_read(start_emulator: Callable[..., Emu]) -> None:
    emu = start_emulator(
        "--validating-seconds", "0", "--processing-seconds", "0", "--finalizing-seconds", "0"
    )
    client = emu.client()
    b = create_batch(client, [req_line(f"r{i}", "x") for i in range(3)])
    assert b.status == "validating"
    b = client.batches.retrieve(b.id)
    assert b.status == "completed" and b.request_counts.completed == 3


def test_token_limit(start_emulator: Callable[..., Emu], check: Callable[[str, Any], None]) -> None:
    text = "x" * 396  # ceil(396 / 4) + 4 = 103 tokens per request
    emu = start_emulator(
        "--validating-seconds", "0", "--processing-seconds", "60", "--token-limit", "500"
    )
    client = emu.client()
    first = wait_batch(
        client,
        create_batch(client, [req_line(f"r{i}", text) for i in range(4)]).id,
        ("in_progress", *TERMINAL),
    )
    assert first.status == "in_progress"  # 412 tokens enqueued
    second = wait_batch(client, create_batch(client, [req_line("a", text)]).id)
    check("Batch", second)
    assert second.status == "failed"
    err = second.errors.data[0]
    assert err.code == "token_limit_exceeded" and err.line is None and err.param is None
    assert err.message.startswith(f"Enqueued token limit reached for {MODEL} in organization")
    assert "Limit: 500 enqueued tokens." in err.message
    other = wait_batch(
        client,
        create_batch(client, [req_line("a", text, model="gpt-4o")]).id,
        ("in_progress", *TERMINAL),
    )
    assert other.status == "in_progress"  # the limit is per model
    client.batches.cancel(first.id)
    wait_batch(client, first.id)
    third = wait_batch(
        client, create_batch(client, [req_line("a", text)]).id, ("in_progress", *TERMINAL)
    )
    assert third.status == "in_progress"  # room again once the first batch is gone


def test_expire_via_admin(
    emu: Emu, client: openai.OpenAI, check: Callable[[str, Any], None]
) -> None:
    assert emu.admin("POST", "/_emulator/faults", {"expire": True})["expire"] is True
    b = create_batch(client, [req_line(f"r{i}", f"q{i}") for i in range(10)])
    emu.admin("POST", "/_emulator/faults", {"expire": False})  # captured at creation
    b = wait_batch(client, b.id)
    check("Batch", b)
    assert b.status == "expired" and isinstance(b.expired_at, int)
    assert b.request_counts.to_dict() == {"total": 10, "completed": 5, "failed": 5}
    out = read_jsonl(client, b.output_file_id)
    err = read_jsonl(client, b.error_file_id)
    assert len(out) == 5 and len(err) == 5
    for line in err:
        assert line["response"] is None
        assert line["error"] == {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        }
    assert {x["custom_id"] for x in out + err} == {f"r{i}" for i in range(10)}


def test_fail_via_admin(emu: Emu, client: openai.OpenAI) -> None:
    emu.admin("POST", "/_emulator/faults", {"fail": "model_not_found"})
    b = create_batch(client, [req_line("a", "x")])
    emu.admin("POST", "/_emulator/faults", {"fail": None})
    b = wait_batch(client, b.id)
    assert b.status == "failed" and b.errors.data[0].code == "model_not_found"
    assert wait_batch(client, create_batch(client, [req_line("a", "x")]).id).status == "completed"


def test_cancel(emu: Emu, client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    emu.admin("POST", "/_emulator/faults", {"processing_seconds": 30})
    b = create_batch(client, [req_line(f"r{i}", "x") for i in range(20)])
    emu.admin("POST", "/_emulator/faults", {"processing_seconds": 0.3})
    wait_batch(client, b.id, ("in_progress",))
    c = client.batches.cancel(b.id)
    check("Batch", c)
    assert c.status == "cancelling" and isinstance(c.cancelling_at, int)
    assert client.batches.cancel(b.id).status in ("cancelling", "cancelled")
    c = wait_batch(client, b.id)
    check("Batch", c)
    assert c.status == "cancelled" and isinstance(c.cancelled_at, int)
    assert c.request_counts.total == 20
    assert c.request_counts.completed + c.request_counts.failed == 20
    err = read_jsonl(client, c.error_file_id)
    cancelled = [x for x in err if x["error"] and x["error"]["code"] == "batch_cancelled"]
    assert cancelled and all(x["response"] is None for x in cancelled)
    assert client.batches.cancel(b.id).status == "cancelled"  # cancelling cancelled is allowed

    done = wait_batch(client, create_batch(client, [req_line("a", "x")]).id)
    with pytest.raises(openai.ConflictError) as exc:
        client.with_options(max_retries=0).batches.cancel(done.id)
    check("ErrorResponse", exc.value.response.json())
    assert exc.value.status_code == 409
    assert exc.value.body == {
        "message": "Cannot cancel a batch with status 'completed'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    failed = wait_batch(client, create_batch(client, ["{bad"]).id)
    with pytest.raises(openai.ConflictError):
        client.with_options(max_retries=0).batches.cancel(failed.id)

    # Cancel while validating: nothing ran, no files.
    emu.admin("POST", "/_emulator/faults", {"validating_seconds": 30})
    v = create_batch(client, [req_line("a", "x")])
    assert client.batches.cancel(v.id).status == "cancelling"
    emu.admin("POST", "/_emulator/faults", {"validating_seconds": 0.05})


# --------------------------------------------------------------------------------------
# Auth, persistence, faults, upstream, concurrency
# --------------------------------------------------------------------------------------


def test_api_key(start_emulator: Callable[..., Emu], check: Callable[[str, Any], None]) -> None:
    emu = start_emulator("--api-key", "sk-right-key-1234", *FAST)
    wrong = "sk-wrong-key-98765"
    with pytest.raises(openai.AuthenticationError) as exc:
        emu.client(api_key=wrong).files.list()
    envelope = exc.value.response.json()
    check("ErrorResponse", envelope)
    assert exc.value.status_code == 401
    assert envelope["error"]["code"] == "invalid_api_key"
    assert envelope["error"]["type"] == "invalid_request_error"
    assert wrong not in envelope["error"]["message"]
    assert envelope["error"]["message"].startswith("Incorrect API key provided")
    assert emu.client(api_key="sk-right-key-1234").files.list().data == []
    req = urllib.request.Request(emu.base_url + "/files")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(req, timeout=10)
    assert missing.value.code == 401
    assert emu.admin("GET", "/_emulator/stats")["calls"]["GET /v1/files"] == 3


def test_any_key_accepted_without_api_key(emu: Emu) -> None:
    assert emu.client(api_key="anything").files.list().data == []


def test_restart_persistence(start_emulator: Callable[..., Emu], tmp_path: Path) -> None:
    state = tmp_path / "persist"
    args = ("--validating-seconds", "0.05", "--processing-seconds", "1.5")
    emu = start_emulator(*args, state_dir=state, name="first")
    client = emu.client()
    b = create_batch(client, [req_line(f"r{i}", "x") for i in range(5)], metadata={"k": "v"})
    wait_batch(client, b.id, ("in_progress", *TERMINAL))
    emu.stop()
    emu2 = start_emulator(*args, state_dir=state, name="second")
    client2 = emu2.client()
    again = client2.batches.retrieve(b.id)
    assert again.metadata == {"k": "v"} and again.input_file_id == b.input_file_id
    assert again.status in ("in_progress", "finalizing", "completed")
    done = wait_batch(client2, b.id)
    assert done.status == "completed" and done.request_counts.completed == 5
    assert len(read_jsonl(client2, done.output_file_id)) == 5
    assert client2.files.retrieve(b.input_file_id).purpose == "batch"
    emu2.stop(signal.SIGINT)


def test_request_error_rate(emu: Emu, client: openai.OpenAI) -> None:
    faults = emu.admin("POST", "/_emulator/faults", {"request_error_rate": 0.5, "seed": 7})
    assert faults["request_error_rate"] == 0.5 and faults["seed"] == 7
    lines = [req_line(f"r{i}", f"q{i}") for i in range(40)]
    b = wait_batch(client, create_batch(client, lines).id)
    assert b.status == "completed" and 0 < b.request_counts.failed < 40
    err = read_jsonl(client, b.error_file_id)
    assert {x["response"]["status_code"] for x in err} <= {429, 500}
    # A retry of the failed requests in a NEW batch is decided independently.
    failed_ids = {x["custom_id"] for x in err}
    emu.admin("POST", "/_emulator/faults", {"request_error_rate": 0.0})
    retry = wait_batch(
        client, create_batch(client, [x for x in lines if x["custom_id"] in failed_ids]).id
    )
    assert retry.request_counts.completed == len(failed_ids)


def test_http_faults_are_retried(emu: Emu) -> None:
    client = emu.client(max_retries=12)
    emu.admin(
        "POST",
        "/_emulator/faults",
        {"http_error_rate": 0.3, "http_error_kinds": ["429", "500", "drop"], "seed": 3},
    )
    f = upload(client, [req_line("a", "x")])
    b = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for _ in range(8):
        client.batches.retrieve(b.id)
        client.files.list()
    assert wait_batch(client, b.id).status == "completed"
    stats = emu.admin("GET", "/_emulator/stats")
    assert stats["http_faults_injected"] > 0
    assert stats["calls"]["GET /v1/batches/{id}"] > 8
    assert emu.admin("GET", "/_emulator/faults")["http_error_rate"] == 0.3

    # drop_after: the batch is created but the answer is lost.
    emu.admin(
        "POST", "/_emulator/faults", {"http_error_rate": 1.0, "http_error_kinds": ["drop_after"]}
    )
    with pytest.raises(openai.APIConnectionError):
        emu.client(max_retries=0).batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    emu.admin("POST", "/_emulator/faults", {"http_error_rate": 0.0})
    assert len(list(client.batches.list())) == 2
    emu.admin("POST", "/_emulator/reset_stats")
    assert emu.admin("GET", "/_emulator/stats")["calls"] == {}
    assert emu.admin("GET", "/_emulator/stats")["batches_created"] == 2


def test_response_delay_and_http_error_routes(emu: Emu) -> None:
    client = emu.client(max_retries=0)
    f = upload(client, [req_line("a", "x")])
    emu.admin("POST", "/_emulator/faults", {"response_delay": {"POST /v1/batches": 2}})
    answered = threading.Event()
    created: list[Any] = []

    def create() -> None:
        created.append(
            client.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        )
        answered.set()

    thread = threading.Thread(target=create)
    thread.start()
    while emu.admin("GET", "/_emulator/stats")["batches_created"] < 1:
        time.sleep(0.02)
    listed = [b.id for b in client.batches.list()]  # other routes are not delayed
    seen_before_answer = not answered.is_set()
    thread.join(30)
    assert seen_before_answer and [b.id for b in created] == listed
    assert emu.admin("GET", "/_emulator/faults")["response_delay"] == {"POST /v1/batches": 2.0}
    for bad in ({"POST /v1/batches": -1}, {"/v1/batches": 1}, ["POST /v1/files"]):
        with pytest.raises(urllib.error.HTTPError) as exc:
            emu.admin("POST", "/_emulator/faults", {"response_delay": bad})
        assert exc.value.code == 400
    emu.admin("POST", "/_emulator/faults", {"response_delay": {}})
    # http_error_routes: faults on the listed routes only.
    emu.admin(
        "POST",
        "/_emulator/faults",
        {
            "http_error_rate": 1.0,
            "http_error_kinds": ["500"],
            "http_error_routes": ["POST /v1/files"],
        },
    )
    assert client.batches.retrieve(listed[0]).id == listed[0]
    with pytest.raises(openai.InternalServerError):
        upload(client, [req_line("b", "y")])


def test_admin_rejects_bad_settings(emu: Emu) -> None:
    for body in ({"nope": 1}, {"http_error_rate": 2}, {"http_error_kinds": ["x"]}):
        with pytest.raises(urllib.error.HTTPError) as exc:
            emu.admin("POST", "/_emulator/faults", body)
        assert exc.value.code == 400


def test_upstream_mode(start_emulator: Callable[..., Emu]) -> None:
    upstream = start_emulator(*FAST, name="upstream")
    front = start_emulator(
        *FAST,
        "--upstream",
        upstream.base_url,
        "--upstream-concurrency",
        "2",
        "--allow-open-relay",
        name="front",
    )
    client = front.client()
    lines = [req_line(f"r{i}", f"q{i}") for i in range(8)] + [req_line("bad", "EMULATOR_ERROR:500")]
    b = wait_batch(client, create_batch(client, lines).id)
    assert b.status == "completed"
    assert b.request_counts.to_dict() == {"total": 9, "completed": 8, "failed": 1}
    out = read_jsonl(client, b.output_file_id)
    direct = upstream.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "q3"}]
    )
    by_id = {x["custom_id"]: x for x in out}
    assert by_id["r3"]["response"]["body"]["choices"][0]["message"]["content"] == (
        direct.choices[0].message.content
    )
    err = read_jsonl(client, b.error_file_id)
    assert err[0]["custom_id"] == "bad" and err[0]["response"]["status_code"] == 500
    calls = upstream.admin("GET", "/_emulator/stats")["calls"]
    assert calls["POST /v1/chat/completions"] == 10  # 9 batch requests + the direct call
    forwarded = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "q3"}]
    )
    assert forwarded.choices[0].message.content == direct.choices[0].message.content


def test_concurrent_clients(emu: Emu) -> None:
    errors: list[BaseException] = []
    results: list[str] = []

    def worker(n: int) -> None:
        try:
            client = emu.client()
            b = create_batch(client, [req_line(f"w{n}-{i}", f"q{i}") for i in range(5)])
            b = wait_batch(client, b.id)
            assert b.status == "completed" and b.request_counts.completed == 5
            assert len(read_jsonl(client, b.output_file_id)) == 5
            results.append(b.id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(set(results)) == 16
    stats = emu.admin("GET", "/_emulator/stats")
    assert stats["batches_created"] == 16 and stats["requests_processed"] == 80


# --------------------------------------------------------------------------------------
# Direct chat completions
# --------------------------------------------------------------------------------------


def test_chat_completions(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": png_data_url(64, 48)}},
            ],
        },
    ]
    r1 = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
    body = raw_json(r1)
    check("CreateChatCompletionResponse", body)
    r2 = client.chat.completions.create(model=MODEL, messages=messages)
    assert body["id"] == r2.id and body["id"].startswith("chatcmpl-")
    content = r2.choices[0].message.content
    assert content.startswith("Emulated answer ") and content.endswith("What is in this picture?")
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.refusal is None
    chars = len("be brief") + len("What is in this picture?")
    # One 512-px tile at detail auto: 170 + 85 tokens.
    assert r2.usage.prompt_tokens == math.ceil(chars / 4) + 4 * 2 + 255
    assert r2.usage.completion_tokens == math.ceil(len(content) / 4)
    assert r2.usage.total_tokens == r2.usage.prompt_tokens + r2.usage.completion_tokens
    other = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert other.choices[0].message.content != content

    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "count": {"type": "integer", "minimum": 1, "maximum": 5},
            "score": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"type": "string", "enum": ["cat", "dog"]},
            "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "nested": {"$ref": "#/$defs/Nested"},
        },
        "required": ["title", "count", "score", "ok", "tags", "kind", "maybe", "nested"],
        "additionalProperties": False,
        "$defs": {
            "Nested": {
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "required": ["x"],
                "additionalProperties": False,
            }
        },
    }
    js = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "give json"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema, "strict": True},
        },
    )
    value = json.loads(js.choices[0].message.content)
    jsonschema.validate(value, schema)
    assert value["kind"] == "cat" and value["title"].startswith("emulated ")
    jo = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "give json"}],
        response_format={"type": "json_object"},
    )
    assert set(json.loads(jo.choices[0].message.content)) == {"answer"}


def test_chat_completion_errors(client: openai.OpenAI, check: Callable[[str, Any], None]) -> None:
    no_retry = client.with_options(max_retries=0)

    def ask(text: str) -> Any:
        return no_retry.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}]
        )

    with pytest.raises(openai.BadRequestError) as e400:
        ask("EMULATOR_ERROR:context_length_exceeded")
    check("ErrorResponse", e400.value.response.json())
    assert (e400.value.code, e400.value.param) == ("context_length_exceeded", "messages")
    with pytest.raises(openai.InternalServerError):
        ask("EMULATOR_ERROR:500")
    with pytest.raises(openai.RateLimitError) as e429:
        ask("EMULATOR_ERROR:429")
    assert e429.value.code == "rate_limit_exceeded"


def test_unknown_route(emu: Emu, check: Callable[[str, Any], None]) -> None:
    req = urllib.request.Request(
        emu.base_url + "/nothing", headers={"Authorization": "Bearer test-key"}
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 404
    check("ErrorResponse", json.loads(exc.value.read()))
