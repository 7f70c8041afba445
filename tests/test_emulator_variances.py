"""The emulator's server variances and its seeded account history: each
variance both as a command-line option and as a key of POST /_emulator/faults."""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable
from typing import Any

import openai
import pytest
from emulator_helpers import *  # noqa: F403 - the fixtures: emu, client, check, start_emulator
from emulator_helpers import FAST, TERMINAL, Emu, create_batch, read_jsonl, req_line, wait_batch


def test_listing_refused_by_option(
    start_emulator: Callable[..., Emu], check: Callable[[str, Any], None]
) -> None:
    emu = start_emulator(
        *FAST, "--no-file-listing", "--no-batch-listing", "--listing-status", "501"
    )
    client = emu.client(max_retries=0)
    for call in (client.files.list, client.batches.list):
        with pytest.raises(openai.InternalServerError) as exc:
            call()
        assert exc.value.status_code == 501
        check("ErrorResponse", exc.value.response.json())
    # Everything else still works: upload, create, retrieve.
    b = wait_batch(client, create_batch(client, [req_line("a", "x")]).id)
    assert b.status == "completed" and client.files.retrieve(b.output_file_id).bytes > 0
    calls = emu.admin("GET", "/_emulator/stats")["calls"]
    assert calls["GET /v1/files"] == 1 and calls["GET /v1/batches"] == 1


def test_listing_refused_at_run_time(emu: Emu, client: openai.OpenAI) -> None:
    assert emu.admin("GET", "/_emulator/faults")["listing_status"] == 405
    settings = emu.admin("POST", "/_emulator/faults", {"no_batch_listing": True})
    assert settings["no_batch_listing"] is True and settings["no_file_listing"] is False
    with pytest.raises(openai.APIStatusError) as exc:
        client.with_options(max_retries=0).batches.list()
    assert exc.value.status_code == 405
    assert client.files.list().data == []  # file listing untouched
    emu.admin("POST", "/_emulator/faults", {"no_file_listing": True, "listing_status": 404})
    with pytest.raises(openai.NotFoundError):
        client.with_options(max_retries=0).files.list()
    emu.admin("POST", "/_emulator/faults", {"no_file_listing": False, "no_batch_listing": False})
    assert list(client.batches.list()) == []
    for bad in ({"listing_status": 418}, {"never_end": "yes"}):
        with pytest.raises(urllib.error.HTTPError) as err:
            emu.admin("POST", "/_emulator/faults", bad)
        assert err.value.code == 400


@pytest.mark.parametrize("how", ["option", "faults"])
def test_drop_metadata(start_emulator: Callable[..., Emu], how: str) -> None:
    emu = start_emulator(*FAST, *(["--drop-metadata"] if how == "option" else []))
    if how == "faults":
        emu.admin("POST", "/_emulator/faults", {"drop_metadata": True})
    client = emu.client()
    b = create_batch(client, [req_line("a", "x")], metadata={"step": "caption"})
    assert b.metadata is None
    assert wait_batch(client, b.id).metadata is None
    assert [x.metadata for x in client.batches.list()] == [None]
    emu.admin("POST", "/_emulator/faults", {"drop_metadata": False})
    kept = create_batch(client, [req_line("a", "x")], metadata={"step": "caption"})
    assert kept.metadata == {"step": "caption"}


@pytest.mark.parametrize("how", ["option", "faults"])
def test_bare_error_lines(start_emulator: Callable[..., Emu], how: str) -> None:
    emu = start_emulator(*FAST, *(["--bare-error-lines"] if how == "option" else []))
    if how == "faults":
        emu.admin("POST", "/_emulator/faults", {"bare_error_lines": True})
    client = emu.client()
    lines = [req_line("ok", "x"), req_line("bad", "EMULATOR_ERROR:context_length_exceeded")]
    b = wait_batch(client, create_batch(client, lines).id)
    assert b.request_counts.to_dict() == {"total": 2, "completed": 1, "failed": 1}
    (line,) = read_jsonl(client, b.error_file_id)
    assert set(line) == {"id", "custom_id", "response", "error"}
    assert line["custom_id"] == "bad" and line["response"] is None
    assert set(line["error"]) == {"type", "message"} and line["error"]["type"] == "request_failed"
    assert line["error"]["message"].startswith("Error code: 400 - {'error': {")
    assert "context_length_exceeded" in line["error"]["message"]
    (ok,) = read_jsonl(client, b.output_file_id)
    assert ok["response"]["status_code"] == 200  # successes keep the usual shape


@pytest.mark.parametrize("how", ["option", "faults"])
def test_never_end(start_emulator: Callable[..., Emu], how: str) -> None:
    emu = start_emulator(
        "--validating-seconds", "0", "--processing-seconds", "0",
        *(["--never-end"] if how == "option" else []),
    )  # fmt: skip
    if how == "faults":
        emu.admin("POST", "/_emulator/faults", {"never_end": True})
    client = emu.client()
    b = create_batch(client, [req_line("a", "x")])
    time.sleep(1)  # several ticks, each of which would have ended a normal batch
    assert client.batches.retrieve(b.id).status == "in_progress"
    emu.admin("POST", "/_emulator/faults", {"never_end": False})
    assert client.batches.retrieve(b.id).status == "in_progress"  # captured at creation
    assert wait_batch(client, client.batches.cancel(b.id).id).status == "cancelled"
    assert wait_batch(client, create_batch(client, [req_line("a", "x")]).id).status == "completed"


@pytest.mark.parametrize("how", ["option", "faults", "off"])
def test_no_output_on_cancel(start_emulator: Callable[..., Emu], how: str) -> None:
    args = ["--validating-seconds", "0", "--processing-seconds", "30"]
    emu = start_emulator(*args, *(["--no-output-on-cancel"] if how == "option" else []))
    if how == "faults":
        emu.admin("POST", "/_emulator/faults", {"no_output_on_cancel": True})
    client = emu.client()
    b = create_batch(client, [req_line(f"r{i}", "x") for i in range(10)])
    wait_batch(client, b.id, ("in_progress", *TERMINAL))
    done = wait_batch(client, client.batches.cancel(b.id).id)
    assert done.status == "cancelled" and done.request_counts.total == 10
    if how == "off":
        assert done.error_file_id is not None  # the unrun requests, as batch_cancelled lines
    else:
        assert done.output_file_id is None and done.error_file_id is None


def test_seed_history(start_emulator: Callable[..., Emu], tmp_path: Any) -> None:
    state = tmp_path / "seeded"
    emu = start_emulator(*FAST, state_dir=state, name="seeded")
    client = emu.client()
    own = create_batch(client, [req_line("a", "x")])
    before = time.time()
    made = emu.admin(
        "POST",
        "/_emulator/seed",
        {"batches": 2000, "files": 2000, "age_seconds": 3600, "metadata": {"job": "old"}},
    )
    assert made == {"batches": 2000, "files": 4000, "age_seconds": 3600}
    emu.admin("POST", "/_emulator/reset_stats", {})
    batches = list(client.batches.list(limit=100))
    assert len(batches) == 2001 and batches[0].id == own.id  # newest first
    created = [b.created_at for b in batches]
    assert created == sorted(created, reverse=True)
    seeded = batches[1:]
    assert all(b.status == "completed" and b.metadata == {"job": "old"} for b in seeded)
    assert before - 3601 <= min(created) and max(created) - min(created) >= 3500
    stats = emu.admin("GET", "/_emulator/stats")
    assert stats["calls"]["GET /v1/batches"] == 21  # 2,001 batches, 100 a page
    assert stats["bytes_served"]["GET /v1/batches"] > 2001 * 500
    assert stats["batches_created"] == 1 and stats["seeded"] == {"batches": 2000, "files": 4000}
    page = client.files.list(purpose="batch", limit=4000)
    assert len(page.data) == 4000 and page.has_more  # 4,000 seeded + the one uploaded
    assert client.files.content(seeded[0].input_file_id).text.startswith('{"custom_id": "seed-')
    emu.stop()
    again = start_emulator(*FAST, state_dir=state, name="seeded-again").client()
    assert again.batches.retrieve(seeded[-1].id).metadata == {"job": "old"}
    assert again.files.retrieve(seeded[-1].input_file_id).filename.startswith("seed_batch_")
    again.files.delete(seeded[-1].input_file_id)
    assert len(again.files.list(purpose="batch").data) == 4000


def test_seed_rejects_bad_payloads(emu: Emu) -> None:
    for bad in ({"batches": -1}, {"files": "many"}, {"age_seconds": -5}, {"nope": 1},
                {"batches": 1, "metadata": {"k": 1}}):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as exc:
            emu.admin("POST", "/_emulator/seed", bad)
        assert exc.value.code == 400
    assert emu.admin("GET", "/_emulator/stats")["batches_created"] == 0
