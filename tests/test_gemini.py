"""Gemini's Batch API behind the provider seam (br/batches/gemini.py), driven through the engine
and the exactly-once layer above the seam (Engine, Submitter, a real Ledger and the machine's
index under BR_STATE_DIR) against the real emulator, with the real google-genai SDK over HTTP.
No mocks: faults are the emulator's own (drop_after, expire).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from br.batches import gemini_shape
from br.batches.chunk import Chunk, Done
from br.batches.engine import Engine
from br.batches.gemini import Gemini
from br.batches.gemini_batch import status_of
from br.cli import UserError
from br.config import Config
from br.layout import StepDir
from br.prompts.images.identity import request_hash
from br.records import dumps
from conftest import PYTHON, ROOT, Emulator
from google import genai
from google.genai import types

KEY = "test-gemini-key"
MODEL = "gemini-2.5-flash"
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAE"
    "hQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
def gemini(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Gemini:
    """The provider against the test's emulator, the machine's state in the test's directory."""
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.root)
    monkeypatch.setenv("BR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BR_POLL_MIN", "0.05")
    monkeypatch.setenv("BR_POLL_MAX", "0.2")
    return Gemini(config())


def config() -> Config:
    return Config(Path("test.yaml"), {"model": MODEL})


def request(cid: str, text: str, **body: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    return {
        "custom_id": cid,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": messages, **body},
    }


def write_chunk(step: StepDir, requests: list[dict[str, Any]], nnn: str = "001") -> Chunk:
    """The chunk as the split writes it: Gemini's own lines."""
    step.root.mkdir(parents=True, exist_ok=True)
    lines = "".join(dumps(gemini_shape.shape(r)) + "\n" for r in requests)
    step.chunk(nnn).write_text(lines, encoding="utf-8")
    return Chunk(nnn=nnn, path=step.chunk(nnn))


def run(step: StepDir, provider: Gemini, chunks: list[Chunk], **options: Any) -> list[str]:
    engine = Engine(step, config(), provider, "caption", **options)
    engine.begin(chunks)
    return engine.run()


def results(step: StepDir, nnn: str = "001") -> dict[str, dict[str, Any]]:
    rows = [json.loads(x) for x in step.results(nnn).read_text(encoding="utf-8").split("\n") if x]
    return {r["custom_id"][65:]: r for r in rows}  # the key: the request hash, a space, the id


def sdk(emu: Emulator) -> genai.Client:
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=emu.root))


CREATE, UPLOAD = "POST /{version}/models/{model}", "POST /upload/{version}/files"


def created(emu: Emulator) -> int:
    return int(emu.stats().get("gemini_batches_created", 0))


def calls(emu: Emulator, route: str) -> int:
    return int(emu.stats()["calls"].get(route, 0))


# ----------------------------------------------------------------------------- end to end

ODD_KEYS = [
    "images/with space/ünïcødé ☃.png",
    "https://example.test/a?b=c&d=e#f",
    "x" * 5000,
    'line\u2028separator and "quotes" and \\ backslash',
]


def test_shape_upload_create_poll_and_rows_by_key(
    gemini: Gemini, emulator: Emulator, tmp_path: Path
) -> None:
    step = StepDir(tmp_path / "caption")
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}},
        "required": ["label"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}
    image = {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}
    requests = [request(k, f"say {n}") for n, k in enumerate(ODD_KEYS)]
    requests += [
        request("json", "label it", response_format=fmt, temperature=0),
        request("short", "words " * 50, max_tokens=2),
        request("boom", "EMULATOR_ERROR:500"),
        request("bad", "EMULATOR_ERROR:context_length_exceeded"),
        {**request("image", ""), "body": {"model": MODEL, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "what is it"}, image]}]}},
    ]  # fmt: skip
    chunk = write_chunk(step, requests)
    assert run(step, gemini, [chunk], retries=0) == []
    assert isinstance(chunk.state, Done)
    rows = results(step)
    assert set(rows) == {r["custom_id"] for r in requests}  # every key came back whole
    for n, key in enumerate(ODD_KEYS):
        assert rows[key]["outcome"] == "succeeded" and rows[key]["response"].endswith(f"say {n}")
    assert set(json.loads(rows["json"]["response"])) == {"label"}
    assert rows["short"]["cut_short"] is True
    assert rows["image"]["usage"]["prompt_tokens"] >= 258  # the image reached the server
    assert rows["boom"]["error"]["status"] == 500 and rows["boom"]["retryable"] is True
    assert rows["bad"]["error"]["status"] == 400 and rows["bad"]["retryable"] is False
    # One create, inline (the chunk is small: no upload), recognisable by its display name.
    stats = emulator.stats()
    assert created(emulator) == 1 and stats["calls"].get(UPLOAD, 0) == 0
    client = sdk(emulator)  # kept: a collected client closes its pool
    (job,) = list(client.batches.list())
    sha = step.chunk("001").read_bytes()
    assert job.display_name.startswith(f"br {__import__('hashlib').sha256(sha).hexdigest()} 0 ")
    assert step.batch_id("001").read_text().strip() == job.name


def test_a_rerun_finds_the_batch_and_creates_nothing(
    gemini: Gemini, emulator: Emulator, tmp_path: Path
) -> None:
    step = StepDir(tmp_path / "caption")
    requests = [request(f"r{i}", f"say {i}") for i in range(3)]
    assert run(step, gemini, [write_chunk(step, requests)]) == []
    first = results(step)
    # build/ is gone (the ledger with it): the machine's index still names the batch.
    for path in step.root.iterdir():
        if path.is_file():
            path.unlink()
    emulator.admin("reset_stats", {})
    again = Gemini(config())
    assert run(step, again, [write_chunk(step, requests)]) == []
    assert calls(emulator, CREATE) == calls(emulator, UPLOAD) == 0 and created(emulator) == 1
    assert {k: r["response"] for k, r in results(step).items()} == {
        k: r["response"] for k, r in first.items()
    }


def test_an_unanswered_create_is_found_in_the_list_not_paid_twice(
    gemini: Gemini, emulator: Emulator, tmp_path: Path
) -> None:
    """drop_after: the emulator makes the batch, then drops the connection; the run looks in
    the list (by display name, back to the create's moment) before trying again."""
    emulator.faults(
        http_error_rate=1.0,
        http_error_kinds=["drop_after"],
        http_error_routes=[CREATE],
    )
    step = StepDir(tmp_path / "caption")
    assert run(step, gemini, [write_chunk(step, [request("a", "x"), request("b", "y")])]) == []
    stats = emulator.stats()
    assert created(emulator) == 1 and stats["calls"][CREATE] == 1
    assert stats["calls"].get(UPLOAD, 0) == 0  # a small chunk goes inline: no upload
    assert stats["http_faults_injected"] == 1
    assert {r["outcome"] for r in results(step).values()} == {"succeeded"}


KILLED_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from br.batches.chunk import Chunk
from br.batches.engine import Engine
from br.batches.gemini import Gemini
from br.config import Config
from br.layout import StepDir
step, config = StepDir(Path(sys.argv[2])), Config(Path("test.yaml"), {"model": sys.argv[3]})
engine = Engine(step, config, Gemini(config), "caption")
engine.begin([Chunk(nnn="001", path=step.chunk("001"))])
engine.submit_ready()
"""


def test_a_killed_create_is_adopted_from_the_list_by_the_next_run(
    gemini: Gemini, emulator: Emulator, tmp_path: Path
) -> None:
    """The run is killed (SIGKILL) with its create sent and unanswered (the server made the
    batch; its answer is held back): the ledger holds the intent only, and the rerun finds the
    batch in the list by its display name and pays nothing more. The chunk is small, so the
    job is an inline one: its display name carries the label as a file job's does."""
    step = StepDir(tmp_path / "caption")
    write_chunk(step, [request("a", "x")])
    emulator.faults(response_delay={"POST /{version}/models/{model}": 60})
    args = [PYTHON, "-c", KILLED_RUN, str(ROOT / "scripts"), str(step.root), MODEL]
    proc = subprocess.Popen(args)
    try:
        while created(emulator) == 0:
            assert proc.poll() is None, "the run ended before its create was made"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    last = [json.loads(x) for x in step.ledger.read_text().splitlines()][-1]
    assert (last["op"], last["phase"]) == ("create", "intent")
    emulator.faults(response_delay={})
    assert run(step, Gemini(config()), [write_chunk(step, [request("a", "x")])]) == []
    assert created(emulator) == 1 and calls(emulator, UPLOAD) == 0  # an inline job, found
    assert results(step)["a"]["outcome"] == "succeeded"


def test_an_expired_job_sends_its_requests_again(
    gemini: Gemini, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.faults(expire=True)
    step = StepDir(tmp_path / "caption")
    chunk = write_chunk(step, [request("a", "x"), request("b", "y")])
    engine = Engine(step, config(), gemini, "caption", retries=1)
    engine.begin([chunk])
    engine.submit_ready()
    while not engine.ledger.ended:
        engine.poll()
        time.sleep(0.05)
    assert list(engine.ledger.ended.values()) == ["expired"]
    emulator.faults(expire=False)
    assert engine.run() == []
    rows = results(step)
    assert {r["outcome"] for r in rows.values()} == {"succeeded"}
    assert {r["attempts"] for r in rows.values()} == {2} and created(emulator) == 2


def test_a_failed_job_stops_its_chunk_with_the_reason(
    gemini: Gemini, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.faults(fail="server_error")
    step = StepDir(tmp_path / "caption")
    chunk = write_chunk(step, [request("a", "x")])
    (reason,) = run(step, gemini, [chunk])
    assert "invalid_argument" in reason and "server_error" in reason
    assert created(emulator) == 1 and not step.results("001").exists()


def test_a_data_key_with_slashes_spaces_and_100_characters_round_trips(
    gemini: Gemini, emulator: Emulator, tmp_path: Path
) -> None:
    keys = [f"photos/2026/{i} " + "k" * (100 - len(f"photos/2026/{i} ")) for i in range(3)]
    assert all(len(k) == 100 for k in keys)
    step = StepDir(tmp_path / "caption")
    assert run(step, gemini, [write_chunk(step, [request(k, k) for k in keys])]) == []
    assert sorted(results(step)) == sorted(keys)


def test_results_out_of_order_are_matched_by_key(
    gemini: Gemini, emulator: Emulator, tmp_path: Path
) -> None:
    """The emulator shuffles a job's results; each row still answers its own prompt."""
    step = StepDir(tmp_path / "caption")
    keys = [f"k{i:02d}" for i in range(20)]
    assert run(step, gemini, [write_chunk(step, [request(k, f"prompt {k}") for k in keys])]) == []
    batch = gemini.retrieve(step.batch_id("001").read_text().strip())
    order = [str(k)[65:] for k, _ in gemini.result_rows(batch)]
    assert sorted(order) == keys and order != keys  # shuffled on the server
    assert all(r["response"].endswith(f"prompt {k}") for k, r in results(step).items())


# ----------------------------------------------------------------------------- the seam


def test_states_map_onto_the_seam(gemini: Gemini) -> None:
    assert [status_of(f"BATCH_STATE_{s}") for s in ("PENDING", "RUNNING", "SUCCEEDED")] == [
        "validating", "in_progress", "completed",
    ]  # fmt: skip
    assert status_of(types.JobState.JOB_STATE_EXPIRED) == "expired"
    assert status_of("BATCH_STATE_CANCELLED") == "cancelled"
    assert status_of("JOB_STATE_FAILED") == "failed"


def test_cancel_listing_describe_and_delete_file(
    gemini: Gemini, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BR_GEMINI_INLINE_BYTES", "0")  # through the File API
    emulator.faults(processing_seconds=30.0)
    step = StepDir(tmp_path / "caption")
    chunk = write_chunk(step, [request("a", "x")])
    engine = Engine(step, config(), gemini, "caption")
    engine.begin([chunk])
    engine.submit_ready()
    batch_id = step.batch_id("001").read_text().strip()
    (row,) = list(gemini.listing(10))
    assert row["id"] == batch_id and row["metadata"]["br_step"] == "caption"
    assert row["state"].startswith("BATCH_STATE_")
    assert gemini.cancel(batch_id).status == "cancelled"
    assert gemini.describe(batch_id)["metadata"]["state"] == "BATCH_STATE_CANCELLED"
    batch = gemini.retrieve(batch_id)
    assert batch.input_file_id and batch.files == [batch.input_file_id]
    gemini.delete_file(batch.input_file_id)
    with pytest.raises(UserError):
        gemini.delete_file(batch.input_file_id)


def test_a_missing_or_rejected_key_is_one_line_naming_the_variable(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env found above it
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.root)
    with pytest.raises(UserError, match="GEMINI_API_KEY is not set"):
        Gemini(config()).retrieve("batches/abc")
    strict = Emulator(tmp_path / "strict", "--api-key", KEY).start()
    try:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", strict.root)
        monkeypatch.setenv("GOOGLE_API_KEY", "wrong-key-not-secret")
        with pytest.raises(UserError) as err:
            list(Gemini(config()).pages())
        message = str(err.value)
        assert "rejected the key in GOOGLE_API_KEY" in message and "\n" not in message
        assert "wrong-key-not-secret" not in message
    finally:
        strict.stop()


def test_shape_is_gemini_lines(gemini: Gemini) -> None:
    asked = request("a/b c", "hi", max_tokens=5, stop="x")
    line = gemini.shape(asked)
    assert line == {
        "key": f"{request_hash(asked)} a/b c",
        "request": {
            "model": f"models/{MODEL}",
            "system_instruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generation_config": {"max_output_tokens": 5, "stop_sequences": ["x"]},
        },
    }
    assert gemini.shape(line) == line
    url = gemini_shape.image_part("https://img.test/a/photo.png?x=1")
    assert url == {
        "file_data": {"mime_type": "image/png", "file_uri": "https://img.test/a/photo.png?x=1"}
    }
    with pytest.raises(UserError, match="logprobs"):
        gemini.shape(request("a", "hi", logprobs=True))


def rows_of(lines: list[dict[str, Any]]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    return gemini_shape.file_rows(b"".join(json.dumps(x).encode() + b"\n" for x in lines))


# ----------------------------------------------------------------------------- plan data


def test_gemini_tokens_count_images_by_the_tile_rule() -> None:
    from br.prompts.tokens import estimate_tokens, gemini_image_tokens

    assert gemini_image_tokens(384, 384) == 258  # small: one flat charge
    assert gemini_image_tokens(1536, 1024) == 258 * 3 * 2  # tiles of 1024 / 1.5 px
    assert gemini_image_tokens(3000, 300) == 258 * 12 * 2  # the tile never under 256 px
    text = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 400}]}
    assert estimate_tokens(text) == 100
    one_px = request("a", "")["body"] | {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "abcd"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            }
        ]
    }
    assert estimate_tokens(one_px) == 1 + 258  # fmt: skip
    # OpenAI's models keep OpenAI's rule (4 a message, 85 a low-detail image).
    assert estimate_tokens({**text, "model": "gpt-4o-mini"}) == 104


def test_gemini_prices_when_the_config_names_none() -> None:
    from br.prices import price_of

    assert price_of(config(), MODEL) == {"input": 0.15, "cached_input": 0.15, "output": 1.25}
    mine = Config(Path("t.yaml"), {"prices": {MODEL: {"input": 1, "output": 2}}})
    assert price_of(mine, MODEL) == {"input": 1.0, "cached_input": 1.0, "output": 2.0}
    assert price_of(config(), "gpt-4o-mini") is None
