"""The emulator's Gemini Batch API and File API, driven by the official `google-genai` SDK."""

from __future__ import annotations

import io
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import Emulator
from google import genai
from google.genai import errors, types

KEY = "test-gemini-key"
MODEL = "gemini-2.5-flash"


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    options = ["--validating-seconds", "0.05", "--processing-seconds", "0.3", "--api-key", KEY]
    emulator = Emulator(tmp_path / "emulator", *options).start()
    yield emulator
    emulator.stop()


def client(emu: Emulator, version: str = "v1", key: str = KEY) -> genai.Client:
    options = types.HttpOptions(base_url=emu.root, api_version=version)
    return genai.Client(api_key=key, http_options=options)


def inline(key: str, text: str, **config: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    return {**item, "metadata": {"key": key}, **({"config": config} if config else {})}


def wait(c: genai.Client, name: str) -> types.BatchJob:
    for _ in range(600):
        job = c.batches.get(name=name)
        if job.done:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{name} never ended")


def raw_get(emu: Emulator, path: str) -> Any:
    request = urllib.request.Request(f"{emu.root}{path}", headers={"x-goog-api-key": KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_inline_job_to_the_end(emu: Emulator, version: str) -> None:
    c = client(emu, version)
    schema = {"type": "OBJECT", "properties": {"label": {"type": "STRING"}}}
    job = c.batches.create(
        model=MODEL,
        src=[
            inline("plain", "Describe a cat"),
            inline(
                "json", "Label it", response_mime_type="application/json", response_schema=schema
            ),
            inline("short", "words " * 40, max_output_tokens=2),
            inline("boom", "EMULATOR_ERROR:500"),
        ],
        config={"display_name": "my-job"},
    )
    assert job.name.startswith("batches/") and job.display_name == "my-job"
    assert job.state == types.JobState.JOB_STATE_PENDING and not job.done
    ended = wait(c, job.name)
    assert ended.state == types.JobState.JOB_STATE_SUCCEEDED and ended.end_time is not None
    by_key = {r.metadata["key"]: r for r in ended.dest.inlined_responses}
    assert set(by_key) == {"plain", "json", "short", "boom"}
    assert by_key["plain"].response.text.startswith("Emulated answer ")
    assert set(json.loads(by_key["json"].response.text)) == {"label"}
    assert by_key["short"].response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert by_key["boom"].response is None and by_key["boom"].error.code == 500
    # On the wire: BATCH_STATE_*, counts as strings, the output twice (metadata and response).
    op = json.loads(raw_get(emu, f"/{version}/{job.name}"))
    assert op["done"] is True and op["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    stats = op["metadata"]["batchStats"]
    assert stats == {"requestCount": "4", "successfulRequestCount": "3", "failedRequestCount": "1"}
    assert op["response"]["inlinedResponses"] == op["metadata"]["output"]["inlinedResponses"]


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_file_job_to_the_end(emu: Emulator, version: str) -> None:
    c = client(emu, version)
    lines = [
        {"key": f"row/{i} with space", "request": inline("", f"line {i}")["contents"]}
        for i in range(5)
    ]
    lines = [{"key": line["key"], "request": {"contents": line["request"]}} for line in lines]
    lines.append({"key": "bad", "request": {"contents": []}})
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = c.files.upload(
        file=io.BytesIO(data), config={"mime_type": "jsonl", "display_name": "in"}
    )
    assert uploaded.name.startswith("files/") and uploaded.size_bytes == len(data)
    assert uploaded.state == types.FileState.ACTIVE
    assert c.files.get(name=uploaded.name).display_name == "in"
    job = c.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "file-job"})
    ended = wait(c, job.name)
    assert ended.state == types.JobState.JOB_STATE_SUCCEEDED
    name = ended.dest.file_name
    assert name == f"files/batch-{job.name.removeprefix('batches/')}"
    out = [json.loads(x) for x in c.files.download(file=name).decode().splitlines()]
    by_key = {line["key"]: line for line in out}
    assert set(by_key) == {line["key"] for line in lines}
    assert by_key["row/3 with space"]["response"]["candidates"][0]["content"]["parts"][0][
        "text"
    ].endswith("line 3")
    assert by_key["bad"]["error"]["code"] == 400
    # The guide's download route gives the same bytes.
    file_id = name.removeprefix("files/")
    assert raw_get(
        emu, f"/download/{version}/files/{file_id}:download?alt=media"
    ) == c.files.download(file=name)
    c.files.delete(name=uploaded.name)
    with pytest.raises(errors.ClientError):
        c.files.get(name=uploaded.name)


def test_cancel_expire_fail(emu: Emulator) -> None:
    c = client(emu)
    emu.faults(processing_seconds=30.0)
    running = c.batches.create(model=MODEL, src=[inline("a", "x")])
    time.sleep(0.2)
    assert c.batches.get(name=running.name).state == types.JobState.JOB_STATE_RUNNING
    c.batches.cancel(name=running.name)
    cancelled = c.batches.get(name=running.name)
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED and cancelled.done
    emu.faults(processing_seconds=0.3, expire=True)
    expiring = c.batches.create(model=MODEL, src=[inline("a", "x")])
    emu.faults(expire=False, fail="server_error")
    failing = c.batches.create(model=MODEL, src=[inline("a", "x")])
    emu.faults(fail=None)
    expired = wait(c, expiring.name)
    assert expired.state == types.JobState.JOB_STATE_EXPIRED and expired.dest is None
    failed = wait(c, failing.name)
    assert failed.state == types.JobState.JOB_STATE_FAILED and failed.dest is None
    op = json.loads(raw_get(emu, f"/v1beta/{failing.name}"))
    assert (
        op["metadata"]["state"] == "BATCH_STATE_FAILED" and "server_error" in op["error"]["message"]
    )


def test_list_pages_and_delete(emu: Emulator) -> None:
    c = client(emu, "v1beta")
    names = [c.batches.create(model=MODEL, src=[inline("a", "x")]).name for _ in range(5)]
    listed = [j.name for j in c.batches.list(config={"page_size": 2})]
    assert listed == names[::-1]
    page = json.loads(raw_get(emu, "/v1beta/batches?pageSize=2"))
    assert len(page["operations"]) == 2 and page["nextPageToken"]
    c.batches.delete(name=names[0])
    with pytest.raises(errors.ClientError) as err:
        c.batches.get(name=names[0])
    assert err.value.code == 404 and err.value.status == "NOT_FOUND"


def test_errors_in_googles_envelope(emu: Emulator) -> None:
    for version in ("v1", "v1beta"):
        bad = client(emu, version, key="wrong")  # kept: a collected client closes its pool
        with pytest.raises(errors.ClientError) as err:
            list(bad.batches.list())
        assert err.value.code == 400 and err.value.status == "INVALID_ARGUMENT"
        assert err.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    c = client(emu)
    with pytest.raises(errors.ClientError) as err:
        c.batches.create(model=MODEL, src=[])
    assert err.value.code == 400
    with pytest.raises(errors.ClientError) as err:
        c.batches.create(model=MODEL, src="files/doesnotexist")
    assert err.value.code in (403, 404)


def test_openai_and_gemini_share_v1(emu: Emulator) -> None:
    c = client(emu)
    job = c.batches.create(model=MODEL, src=[inline("a", "x")])
    oai = openai.OpenAI(base_url=emu.url, api_key=KEY)
    f = oai.files.create(
        file=(
            "in.jsonl",
            b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}\n',
        ),
        purpose="batch",
    )
    ob = oai.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert [b.id for b in oai.batches.list()] == [ob.id]
    assert [j.name for j in c.batches.list()] == [job.name]
    assert oai.batches.retrieve(ob.id).id == ob.id
    stats = emu.stats()
    assert stats["calls"]["POST /{version}/models/{model}"] == 1
    assert stats["calls"]["GET /v1/batches"] == 1 and stats["gemini_batches_created"] == 1
