"""The original tool's functions and command lines, on top of the pipeline, against the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from batch_requests import (
    check_request,
    handle_captions,
    handle_qna,
    make_requests,
    parse_response,
    retrieve_requests,
    send_batch_request,
    split_jsonl_file,
    split_jsonl_list,
    view_batches,
)
from br.cli import UserError
from conftest import PYTHON, ROOT, TEST_KEY, Emulator, input_dir, read_json, write_json

CONFIG = {
    "model": "gpt-4o-mini",
    "caption": {
        "is_multimodal": False,
        "system": "You caption photos.",
        "user": "Describe {title}.",
        "response_key": "generated_caption",
    },
}
QA = yaml.safe_load((ROOT / "configs" / "qa.yaml").read_text())
SEND = str(ROOT / "scripts" / "send_batch_requests.py")
RECOVER = str(ROOT / "scripts" / "recover_batch_requests.py")


def records(n: int, bad: set[int] | None = None) -> list[dict[str, Any]]:
    title = "EMULATOR_ERROR:context_length_exceeded"
    return [
        {"image_path": f"img/{i}.jpg", "title": title if i in (bad or set()) else f"photo {i}"}
        for i in range(n)
    ]


def finish(batch: Any) -> Any:
    deadline = time.time() + 60
    while batch.status not in {"completed", "failed", "expired", "cancelled"}:
        assert time.time() < deadline, batch.status
        time.sleep(0.1)
        batch = check_request(TEST_KEY, batch.id)
    return batch


@pytest.fixture
def api(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return emulator


# --------------------------------------------------------------------------- functions


def test_make_requests_builds_and_skips_like_the_pipeline() -> None:
    missing = [{"image_path": f"img/x{i}.jpg"} for i in range(4)]  # four in a row: skipped
    data = [*records(3), *missing, {"image_path": "img/last.jpg", "title": "last"}]
    requests = make_requests(CONFIG, "caption", data)
    assert [r["custom_id"] for r in requests] == [
        "img/0.jpg",
        "img/1.jpg",
        "img/2.jpg",
        "img/last.jpg",
    ]
    assert requests[0]["body"]["messages"][1]["content"] == "Describe photo 0."
    assert make_requests(CONFIG, "caption", records(2), "title")[1]["custom_id"] == "photo 1"


def test_make_requests_shapes_each_endpoint_as_the_pipeline_sends_it() -> None:
    config = {
        "model": "gpt-4o-mini",
        "look": {"endpoint": "/v1/responses", "system": "Be brief.", "user": "Describe {title}.",
                 "image_key": "image_path"},
        "embed": {"endpoint": "/v1/embeddings", "model": "text-embedding-3-small",
                  "user": "{title}", "dimensions": 8},
    }  # fmt: skip
    data = [{"image_path": "https://example.com/0.jpg", "title": "photo 0"}]
    look = make_requests(config, "look", data)[0]
    assert look["url"] == "/v1/responses" and "messages" not in look["body"]
    assert look["body"]["instructions"] == "Be brief."
    assert look["body"]["input"][0]["content"] == [
        {"type": "input_text", "text": "Describe photo 0."},
        {"type": "input_image", "image_url": "https://example.com/0.jpg", "detail": "auto"},
    ]
    embed = make_requests(config, "embed", data)[0]
    assert embed["url"] == "/v1/embeddings"
    assert embed["body"] == {"model": "text-embedding-3-small", "input": "photo 0", "dimensions": 8}


def test_five_consecutive_records_missing_fields_raise_value_error() -> None:
    data = records(2) + [{"image_path": f"img/m{i}.jpg"} for i in range(5)]
    with pytest.raises(ValueError, match="5 consecutive records .* title"):
        make_requests(CONFIG, "caption", data)
    with pytest.raises(ValueError, match="no step 'nope'"):
        make_requests(CONFIG, "nope", data)


def test_question_allows_blank_fields_and_handle_qna_appends_rounds(api: Emulator) -> None:
    data = [{"image_path": f"{i}.jpg", "image_url": f"http://x/{i}.jpg"} for i in range(3)]
    for round_ in (1, 2):
        requests = make_requests(QA, "question", data)  # no caption fields: blank, not missing
        assert len(requests) == 3
        (chunk,) = split_jsonl_list(requests, str(api.state_dir.parent), f"question{round_}")
        batch = finish(send_batch_request(TEST_KEY, chunk))
        answers = parse_response(retrieve_requests(TEST_KEY, batch.output_file_id))
        assert handle_qna(data, answers, "qa_rounds", "image_path") is data
        for record in data:
            assert len(record["qa_rounds"]) == round_
            assert set(record["qa_rounds"][-1]) == {"question", "answer"}
            assert record["dialog_history"].count("Question: ") == round_
    history = data[0]["dialog_history"]
    first, second = data[0]["qa_rounds"]
    assert history.index(first["question"]) < history.index(second["question"])


def test_send_check_retrieve_parse_round_trip(api: Emulator, tmp_path: Path) -> None:
    data = records(5, bad={3})
    requests_file = tmp_path / "requests.jsonl"
    requests = make_requests(CONFIG, "caption", data)
    requests_file.write_text("".join(json.dumps(r) + "\n" for r in requests))
    (chunk,) = split_jsonl_file(str(requests_file), "caption")
    assert chunk == str(tmp_path / "batch_caption_1.jsonl")

    batch = send_batch_request(TEST_KEY, chunk)
    assert send_batch_request(TEST_KEY, chunk).id == batch.id  # exactly once
    assert api.stats()["batches_created"] == 1
    batch = finish(batch)
    assert batch.status == "completed" and batch.metadata["br_step"] == "caption"

    answers = parse_response(retrieve_requests(TEST_KEY, batch.output_file_id))
    assert sorted(answers) == ["img/0.jpg", "img/1.jpg", "img/2.jpg", "img/4.jpg"]
    assert all(a.startswith("Emulated answer ") for a in answers.values())
    errors = retrieve_requests(TEST_KEY, batch.error_file_id)
    assert "img/3.jpg" in errors and "context_length_exceeded" in errors
    assert parse_response(errors) == {}

    updated = handle_captions(data, answers, "generated_caption", "image_path")
    assert updated is data
    assert [("generated_caption" in r) for r in data] == [True, True, True, False, True]
    assert data[0]["generated_caption"] == answers["img/0.jpg"]

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "api_key": TEST_KEY}))
    (last,) = view_batches(str(config), limit=1)
    assert last.id == batch.id
    assert len(view_batches(str(config))) == 1


def test_split_sizes(tmp_path: Path) -> None:
    requests = [{"custom_id": str(i), "body": {"model": "m"}} for i in range(2500)]
    paths = split_jsonl_list(requests, str(tmp_path), "caption")
    assert [Path(p).name for p in paths] == [f"batch_caption_{n}.jsonl" for n in (1, 2, 3)]
    assert [len(read_json(Path(p))) for p in paths] == [1000, 1000, 500]
    whole = tmp_path / "sub" / "all.jsonl"
    whole.parent.mkdir()
    whole.write_text("".join(Path(p).read_text() for p in paths))
    again = split_jsonl_file(str(whole), "x")
    assert [len(read_json(Path(p))) for p in again] == [1000, 1000, 500]
    assert all(Path(p).parent == whole.parent for p in again)
    assert read_json(Path(again[2]))[-1]["custom_id"] == "2499"


# --------------------------------------------------------------------------- command lines


def cli(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def job(tmp_path: Path, n: int = 4) -> tuple[Path, Path]:
    data = write_json(tmp_path / "photos.json", records(n))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    return data, config


def test_send_batch_requests_writes_the_output_and_recover_then_sends_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    folder = tmp_path / "my data #1; 50%: x"  # characters make could not take in a target
    folder.mkdir()
    data, config = job(folder)
    env = emulator.env(BUILD=str(tmp_path / "build"))
    out = folder / "out.json"
    result = cli(SEND, "-i", str(data), "-s", "caption", "-c", str(config), "-o", str(out), env=env)
    assert result.returncode == 0, result.stderr
    final = read_json(out)
    assert [r["image_path"] for r in final] == [r["image_path"] for r in records(4)]
    assert all(r["generated_caption"].startswith("Emulated answer ") for r in final)
    state = read_json(tmp_path / "build" / "last_run.json")
    assert state["status"] == "completed" and TEST_KEY not in str(state)

    before = emulator.stats()
    result = cli(RECOVER, env=env)
    assert result.returncode == 0, result.stderr
    assert "nothing to recover" in result.stdout
    after = emulator.stats()
    assert (after["files_created"], after["batches_created"]) == (
        before["files_created"],
        before["batches_created"],
    )


def test_recover_resumes_an_interrupted_run(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "2").start()
    try:
        data, config = job(tmp_path, 6)
        build = tmp_path / "build"
        env = emu.env(BUILD=str(build))
        # -r overrides the config's response_key; -o defaults to the input file.
        args = [PYTHON, SEND, "-i", str(data), "-s", "caption", "-c", str(config), "-r", "cap"]
        send = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)
        deadline = time.time() + 120
        while not list((input_dir(build, data) / "caption").glob("batch_*.id")):
            assert time.time() < deadline and send.poll() is None
            time.sleep(0.02)
        os.killpg(send.pid, signal.SIGKILL)
        send.wait()
        assert read_json(data) == records(6)
        assert read_json(build / "last_run.json")["status"] == "running"
        batches = emu.stats()["batches_created"]

        result = cli(RECOVER, env=env)
        assert result.returncode == 0, result.stderr
        assert emu.stats()["batches_created"] == batches  # the submitted batch was picked up
    finally:
        emu.stop()
    final = read_json(data)
    assert [r["image_path"] for r in final] == [r["image_path"] for r in records(6)]
    assert all(
        r["cap"].startswith("Emulated answer ") and "generated_caption" not in r for r in final
    )
    assert read_json(build / "last_run.json")["status"] == "completed"


def test_command_line_errors_are_one_line(tmp_path: Path) -> None:
    data, config = job(tmp_path)
    env = {**os.environ, "BUILD": str(tmp_path / "build")}
    for args, words in [
        (["-i", str(data), "-s", "nope", "-c", str(config)], "no step 'nope'"),
        (
            ["-i", str(tmp_path / "missing.json"), "-s", "caption", "-c", str(config)],
            "does not exist",
        ),
    ]:
        result = cli(SEND, *args, env=env)
        assert result.returncode == 2 and words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = cli(RECOVER, env=env)
    assert result.returncode == 2 and "no run to recover" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert issubclass(
        type(pytest.raises(ValueError, make_requests, CONFIG, "x", []).value), UserError
    )
