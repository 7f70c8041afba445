"""Multi-step pipelines, question rounds, jq selection and structured outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from br.answers.values import Merger
from br.config import load_config
from conftest import ROOT, Emulator, input_dir, make, read_json, write_json

EXAMPLE = read_json(ROOT / "data" / "example.json")
STEPS = ["01-article_filter", "02-caption", "03-question", "04-question"]


def test_four_step_pipeline_killed_in_step_three_resumes(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "1").start()
    try:
        env, build = emu.env(), tmp_path / "build"
        root = input_dir(build) / "pipeline"
        args = [
            "make",
            "--no-print-directory",
            "pipeline",
            f"BUILD={build}",
            "CONFIG=configs/qa.yaml",
        ]
        run = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)
        deadline = time.time() + 120
        while not (root / "03-question" / "batch_001.id").exists():
            assert time.time() < deadline and run.poll() is None
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        assert not (root / "03-question" / "merged.json").exists()
        batches_before = len(emu.batches())

        make("pipeline", env=env, BUILD=build, CONFIG="configs/qa.yaml")
        for step in STEPS:
            assert (root / step / "merged.json").exists()
        # The rerun resumed in step three: steps one and two sent nothing again.
        assert len(emu.batches()) == batches_before + 1  # the fourth step's batch
        final = read_json(root / "04-question" / "merged.json")
    finally:
        emu.stop()

    assert [r["image_path"] for r in final] == [r["image_path"] for r in EXAMPLE]
    kept = 0
    for record in final:
        original = next(r for r in EXAMPLE if r["image_path"] == record["image_path"])
        if "article" not in original:  # skipped by the filter: no verdict, still processed
            assert "article_filter" not in record
        else:
            assert set(record["article_filter"]) == {"keep", "reason"}
        if record.get("article_filter", {}).get("keep") is False:
            # Filtered out: passes every later step untouched.
            assert {k: v for k, v in record.items() if k != "article_filter"} == original
            continue
        kept += 1
        if "caption" in original:
            assert record["generated_caption"].startswith("Emulated answer ")
        rounds = record["qa_rounds"]
        assert len(rounds) == 2 and rounds[0] != rounds[1]
        assert all(set(r) == {"question", "answer"} for r in rounds)
        history = record["dialog_history"]
        assert history.index(rounds[0]["question"]) < history.index(rounds[1]["question"])
    assert 0 < kept < len(EXAMPLE)  # the emulator's filter keeps about three in four


def test_pipeline_steps_from_the_command_line(emulator: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "final.json"
    make(
        "pipeline",
        env=emulator.env(),
        BUILD=tmp_path / "build",
        STEPS="article_filter caption",
        OUTPUT=out,
    )
    final = read_json(out)
    assert any("generated_caption" in r for r in final)
    assert all("article_filter" in r for r in final if "article" in r)


def test_jq_where_placeholders_extract_and_data_key(emulator: Emulator, tmp_path: Path) -> None:
    records = [
        {"film": {"title": "Alpha", "year": 1999}, "lang": "en"},
        {"film": {"title": "Alpha", "year": 2004}, "lang": "fr"},
        {"film": {"title": "Beta", "year": 1999}, "lang": "en"},
    ]
    data = write_json(tmp_path / "films.json", records)
    config = tmp_path / "c.yaml"
    config.write_text(
        """\
model: gpt-4o-mini
review:
  is_multimodal: false
  where: .lang == "en"
  user: 'Review {.film.title} ({.film.year})'
  response_format:
    type: object
    properties: {stars: {type: integer, minimum: 1, maximum: 5}, text: {type: string}}
    required: [stars, text]
    additionalProperties: false
  extract: .stars
  response_key: stars
"""
    )
    make(
        "caption",
        env=emulator.env(),
        BUILD=tmp_path / "build",
        INPUT=data,
        CONFIG=config,
        STEP="review",
        DATA_KEY='.film.title + " " + (.film.year | tostring)',
    )
    b = input_dir(tmp_path / "build", data) / "review"
    requests = read_json(b / "requests.jsonl")
    assert [r["custom_id"] for r in requests] == ["Alpha 1999", "Beta 1999"]
    assert requests[0]["body"]["messages"][0]["content"] == "Review Alpha (1999)"
    assert requests[0]["body"]["response_format"]["json_schema"]["strict"] is True
    merged = read_json(b / "merged.json")
    assert isinstance(merged[0]["stars"], int) and 1 <= merged[0]["stars"] <= 5
    assert merged[1] == records[1]  # not selected: untouched
    assert isinstance(merged[2]["stars"], int)


def test_a_response_that_breaks_the_schema_is_a_recorded_error(
    emulator: Emulator, tmp_path: Path
) -> None:
    # The emulator does not honour `pattern`, as a model without strict mode might not.
    data = write_json(tmp_path / "d.json", [{"k": "a", "t": "x"}, {"k": "b", "t": "y"}])
    config = tmp_path / "c.yaml"
    config.write_text(
        """\
model: gpt-4o-mini
code:
  is_multimodal: false
  user: 'Code for {t}'
  response_format:
    type: object
    properties: {code: {type: string, pattern: '^[0-9]+$'}}
    required: [code]
  response_key: code
"""
    )
    variables = {"INPUT": data, "CONFIG": config, "STEP": "code", "DATA_KEY": "k"}
    result = make("caption", env=emulator.env(), BUILD=tmp_path / "build", **variables)
    assert "2 failed (2 schema_mismatch)" in result.stderr
    errors = read_json(input_dir(tmp_path / "build", data) / "code" / "errors.jsonl")
    assert [(e["custom_id"], e["stage"], e["code"]) for e in errors] == [
        ("a", "response", "schema_mismatch"),
        ("b", "response", "schema_mismatch"),
    ]
    assert "does not match" in errors[0]["message"]


@pytest.mark.parametrize(
    ("text", "code"),
    [("not json {", "invalid_json"), ('{"keep": "yes", "reason": "r"}', "schema_mismatch")],
)
def test_structured_output_checks(text: str, code: str) -> None:
    step = load_config(ROOT / "configs" / "example.yaml").step("article_filter")
    merger = Merger(step, "image_path", "article_filter")
    assert merger.value('{"keep": false, "reason": "a chart"}') == {
        "keep": False,
        "reason": "a chart",
    }
    with pytest.raises(ValueError) as caught:
        merger.value(text)
    assert caught.value.args[0] == code


def test_question_step_allows_blank_fields(emulator: Emulator, tmp_path: Path) -> None:
    data = write_json(tmp_path / "q.json", [{"image_path": "a.jpg", "image_url": "http://x/a.jpg"}])
    variables = {"INPUT": data, "CONFIG": "configs/qa.yaml", "STEP": "question"}
    make("caption", env=emulator.env(), BUILD=tmp_path / "build", **variables)
    (record,) = read_json(input_dir(tmp_path / "build", data) / "question" / "merged.json")
    assert len(record["qa_rounds"]) == 1
    assert record["dialog_history"].startswith("Question: ")
    request = read_json(input_dir(tmp_path / "build", data) / "question" / "requests.jsonl")[0]
    parts = request["body"]["messages"][1]["content"]
    assert parts[-1] == {"type": "image_url", "image_url": {"url": "http://x/a.jpg"}}
    assert read_json(input_dir(tmp_path / "build", data) / "question" / "skipped.jsonl") == []
