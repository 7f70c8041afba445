"""The emulator's server variances of Anthropic's Message Batches: `results_url` as a path, or
none at all, each as a command-line option and as a key of POST /_emulator/faults, through
the unmodified `anthropic` SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from conftest import Emulator

KEY = "test-anthropic-key"
FAST = ("--validating-seconds", "0.05", "--processing-seconds", "0.2")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Emulator]]:
    running: list[Emulator] = []
    yield running
    for emu in running:
        emu.stop()


def ended(emu: Emulator) -> tuple[anthropic.Anthropic, Any]:
    client = anthropic.Anthropic(base_url=emu.root, api_key=KEY, max_retries=0)
    params = {"model": "claude-sonnet-4-5", "max_tokens": 50}
    params["messages"] = [{"role": "user", "content": "Hello"}]
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])
    for _ in range(400):
        batch = client.messages.batches.retrieve(batch.id)
        if batch.processing_status == "ended":
            return client, batch
        time.sleep(0.02)
    raise AssertionError("the batch never ended")


@pytest.mark.parametrize("how", ["option", "at run time"])
def test_a_relative_results_url(how: str, tmp_path: Path, started: list[Emulator]) -> None:
    option = ["--relative-results-url"] if how == "option" else []
    emu = Emulator(tmp_path / "emulator", *FAST, *option).start()
    started.append(emu)
    if how == "at run time":
        assert emu.faults(relative_results_url=True)["relative_results_url"] is True
    client, batch = ended(emu)
    assert batch.results_url == f"/v1/messages/batches/{batch.id}/results"
    # The SDK appends a path to its base URL's path: with a base URL at the server's root
    # (as here) that is the reference resolved; under a path prefix it would not be.
    assert [r.custom_id for r in client.messages.batches.results(batch.id)] == ["a"]
    assert client.messages.batches.list().data[0].results_url == batch.results_url


@pytest.mark.parametrize("how", ["option", "at run time"])
def test_no_results_url(how: str, tmp_path: Path, started: list[Emulator]) -> None:
    option = ["--no-results-url"] if how == "option" else []
    emu = Emulator(tmp_path / "emulator", *FAST, *option).start()
    started.append(emu)
    if how == "at run time":
        assert emu.faults(no_results_url=True)["no_results_url"] is True
    client, batch = ended(emu)
    assert batch.results_url is None
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        list(client.messages.batches.results(batch.id))  # the SDK gives up without a call
    # The documented route still serves them.
    route = f"/v1/messages/batches/{batch.id}/results"
    lines = client.get(route, cast_to=str, options={"headers": {"Accept": "application/binary"}})
    assert '"custom_id":"a"' in lines.replace(" ", "")
    emu.faults(no_results_url=False)
    assert client.messages.batches.retrieve(batch.id).results_url.endswith(route)
