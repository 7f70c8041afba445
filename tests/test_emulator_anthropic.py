"""The emulator's Anthropic Message Batches API, driven by the official `anthropic` SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic import Omit
from conftest import Emulator

KEY = "test-anthropic-key"
MODEL = "claude-sonnet-4-5"


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    options = ["--validating-seconds", "0.05", "--processing-seconds", "0.3", "--api-key", KEY]
    emulator = Emulator(tmp_path / "emulator", *options).start()
    yield emulator
    emulator.stop()


def bearer_client(emu: Emulator, key: str = KEY, **kw: Any) -> anthropic.Anthropic:
    """SDK 2.x as shipped: Authorization: Bearer, anthropic-version 2026-10-21."""
    return anthropic.Anthropic(base_url=emu.root, api_key=key, max_retries=2, **kw)


def x_api_key_client(emu: Emulator, key: str = KEY) -> anthropic.Anthropic:
    """What SDKs before 2.x send: X-Api-Key and anthropic-version 2023-06-01."""
    headers = {"anthropic-version": "2023-06-01", "X-Api-Key": key, "Authorization": Omit()}
    return anthropic.Anthropic(base_url=emu.root, api_key=key, default_headers=headers)


def req(custom_id: str, text: str, **params: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    body = {"model": MODEL, "max_tokens": 200, "messages": messages, **params}
    return {"custom_id": custom_id, "params": body}


def wait(client: anthropic.Anthropic, batch_id: str) -> Any:
    for _ in range(600):
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.05)
    raise AssertionError(f"{batch_id} never ended")


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}


def test_batch_to_the_end_with_bearer_and_2026(emu: Emulator) -> None:
    client = bearer_client(emu)
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "ok": {"type": "boolean"}},
        "required": ["label", "ok"],
        "additionalProperties": False,
    }
    tool = {"name": "tag", "input_schema": schema}
    batch = client.messages.batches.create(
        requests=[
            req("plain", "Describe a cat", system="Be brief."),
            req(
                "json",
                "Label it",
                output_config={"format": {"type": "json_schema", "schema": schema}},
            ),
            req("tool", "Tag it", tools=[tool], tool_choice={"type": "tool", "name": "tag"}),
            req("old-param", "Hi", temperature=0.3),
            req("boom", "EMULATOR_ERROR:500"),
            req("short", "A long prompt " * 20, max_tokens=2),
        ]
    )
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == 6 and batch.ended_at is None
    assert (batch.expires_at - batch.created_at).total_seconds() == 86_400
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        list(client.messages.batches.results(batch.id))

    ended = wait(client, batch.id)
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.processing) == (4, 2, 0)
    assert ended.ended_at is not None and ended.results_url.startswith(emu.root + "/v1/messages/")
    got = results(client, batch.id)
    assert set(got) == {"plain", "json", "tool", "old-param", "boom", "short"}
    plain = got["plain"].message
    assert plain.content[0].text.startswith("Emulated answer ") and plain.stop_reason == "end_turn"
    assert plain.usage.input_tokens > 0 and plain.usage.output_tokens > 0
    import json

    value = json.loads(got["json"].message.content[0].text)
    assert set(value) == {"label", "ok"}
    tool_use = got["tool"].message.content[0]
    assert (
        tool_use.type == "tool_use"
        and tool_use.name == "tag"
        and set(tool_use.input) == {"label", "ok"}
    )
    assert got["tool"].message.stop_reason == "tool_use"
    assert got["short"].message.stop_reason == "max_tokens"
    # temperature was removed in 2026-10-21: that request alone is errored, as invalid.
    assert got["old-param"].type == "errored"
    assert got["old-param"].error.error.type == "invalid_request_error"
    assert got["boom"].error.error.type == "api_error"


def test_x_api_key_with_2023_06_01(emu: Emulator) -> None:
    client = x_api_key_client(emu)
    raw = client.messages.batches.with_raw_response.create(
        requests=[req("a", "Hi", temperature=0.3)]
    )
    sent = raw.http_request.headers
    assert sent["x-api-key"] == KEY and "authorization" not in sent
    assert sent["anthropic-version"] == "2023-06-01"
    assert raw.headers["request-id"].startswith("req_")
    batch = raw.parse()
    ended = wait(client, batch.id)
    assert ended.request_counts.succeeded == 1  # temperature is fine under 2023-06-01
    assert results(client, batch.id)["a"].type == "succeeded"


def test_cancel_ends_with_partial_results(emu: Emulator) -> None:
    emu.faults(processing_seconds=3.0, validating_seconds=0.0)
    client = bearer_client(emu)
    batch = client.messages.batches.create(requests=[req(f"r{i}", f"n {i}") for i in range(40)])
    time.sleep(1.0)
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 40
    ended = wait(client, batch.id)
    counts = ended.request_counts
    assert counts.canceled > 0 and counts.succeeded > 0
    assert counts.canceled + counts.succeeded == 40
    kinds = [r.type for r in results(client, batch.id).values()]
    assert kinds.count("canceled") == counts.canceled
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.cancel(batch.id)


def test_expire_fault_expires_the_unfinished_requests(emu: Emulator) -> None:
    emu.faults(expire=True)
    client = bearer_client(emu)
    batch = client.messages.batches.create(requests=[req(f"r{i}", "x") for i in range(10)])
    ended = wait(client, batch.id)
    assert (ended.request_counts.expired, ended.request_counts.succeeded) == (5, 5)
    got = results(client, batch.id)
    assert sorted(r.type for r in got.values()) == ["expired"] * 5 + ["succeeded"] * 5


def test_fail_and_never_end(emu: Emulator) -> None:
    client = bearer_client(emu)
    emu.faults(fail="server_error")
    failing = client.messages.batches.create(requests=[req("a", "x"), req("b", "y")])
    emu.faults(fail=None, never_end=True)
    stuck = client.messages.batches.create(requests=[req("a", "x")])
    ended = wait(client, failing.id)
    assert ended.request_counts.errored == 2
    assert {r.error.error.type for r in results(client, failing.id).values()} == {"api_error"}
    time.sleep(0.5)
    assert client.messages.batches.retrieve(stuck.id).processing_status == "in_progress"


def test_list_pages_newest_first(emu: Emulator) -> None:
    client = bearer_client(emu)
    ids = [client.messages.batches.create(requests=[req("a", "x")]).id for _ in range(5)]
    newest_first = ids[::-1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first
    page = client.messages.batches.list(limit=2)
    assert page.has_more and [b.id for b in page.data] == newest_first[:2]
    assert page.first_id == newest_first[0] and page.last_id == newest_first[1]
    after = client.messages.batches.list(limit=2, after_id=newest_first[1])
    assert [b.id for b in after.data] == newest_first[2:4]
    before = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in before.data] == newest_first[1:3] and before.has_more


def test_delete_only_after_the_end(emu: Emulator) -> None:
    client = bearer_client(emu)
    batch = client.messages.batches.create(requests=[req("a", "x")])
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(batch.id)
    wait(client, batch.id)
    deleted = client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.batches.retrieve(batch.id)
    assert err.value.body["error"]["type"] == "not_found_error"


def test_errors_in_anthropics_envelope(emu: Emulator) -> None:
    for client in (bearer_client(emu, "wrong"), x_api_key_client(emu, "wrong")):
        with pytest.raises(anthropic.AuthenticationError) as err:
            client.messages.batches.list()
        body = err.value.body
        assert err.value.status_code == 401 and body["type"] == "error"
        assert body["error"]["type"] == "authentication_error"
        assert body["request_id"] == err.value.response.headers["request-id"]
    client = bearer_client(emu)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.batches.create(requests=[req("x" * 65, "hi")])
    assert err.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "requests.0.custom_id: String should have at most 64 characters",
    }
    for bad in ([], [req("a/b", "hi")], [req("a", "x"), req("a", "y")], [{"custom_id": "a"}]):
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.create(requests=bad)
    unversioned = bearer_client(emu, default_headers={"anthropic-version": "1999-01-01"})
    with pytest.raises(anthropic.BadRequestError, match="anthropic-version"):
        unversioned.messages.batches.list()
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_missing")


def test_http_faults_and_stats(emu: Emulator) -> None:
    client = bearer_client(emu)
    batch = client.messages.batches.create(requests=[req("a", "x")])
    route = "GET /v1/messages/batches/{id}"
    emu.faults(http_error_rate=1.0, http_error_kinds=["500"], http_error_routes=[route])
    flaky = anthropic.Anthropic(base_url=emu.root, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.InternalServerError) as err:
        flaky.messages.batches.retrieve(batch.id)
    assert err.value.body["error"]["type"] == "api_error"
    emu.faults(http_error_rate=0.0, http_error_routes=[])
    wait(client, batch.id)
    stats = emu.stats()
    assert stats["calls"]["POST /v1/messages/batches"] == 1
    assert stats["calls"][route] >= 2 and stats["http_faults_injected"] >= 1
    assert stats["message_batches_created"] == 1
