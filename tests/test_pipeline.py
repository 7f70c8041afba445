"""The Make pipeline end to end: real make, real scripts, real HTTP to the emulator."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, Emulator, input_dir, make, read_json, write_json

EXAMPLE = read_json(ROOT / "data" / "example.json")


def build_dir(tmp_path: Path, step: str, input: Path | str = "data/example.json") -> Path:
    return input_dir(tmp_path / "build", input) / step


def test_caption_example_end_to_end(emulator: Emulator, tmp_path: Path) -> None:
    make("caption", env=emulator.env(), BUILD=tmp_path / "build", STEP="caption")
    b = build_dir(tmp_path, "caption")
    merged = read_json(b / "merged.json")
    assert [r["image_path"] for r in merged] == [r["image_path"] for r in EXAMPLE]
    answered = [r for r in merged if "generated_caption" in r]
    # One record of the example has no caption: skipped, listed, and passed through untouched.
    skipped = read_json(b / "skipped.jsonl")
    assert [s["custom_id"] for s in skipped] == ["images/chart-gdp.png"]
    assert skipped[0]["missing"] == ["caption"]
    assert len(answered) == len(EXAMPLE) - 1
    for record in answered:
        # The emulator's answer echoes the start of the prompt: each record got its own answer.
        assert record["generated_caption"].startswith("Emulated answer ")
        assert record["title"][:20] in record["generated_caption"]
    untouched = next(r for r in merged if r["image_path"] == "images/chart-gdp.png")
    assert untouched == next(r for r in EXAMPLE if r["image_path"] == "images/chart-gdp.png")
    # Requests carry the image and the step's parameters.
    requests = read_json(b / "requests.jsonl")
    body = requests[0]["body"]
    assert body["model"] == "gpt-4o-mini" and body["max_tokens"] == 300
    image = body["messages"][1]["content"][1]
    assert image == {
        "type": "image_url",
        "image_url": {"url": EXAMPLE[0]["image_url"], "detail": "low"},
    }
    assert read_json(b / "errors.jsonl") == []
    batches = emulator.batches()
    assert len(batches) == 1 and batches[0].metadata["br_step"] == "caption"
    assert (b / "batch_001.id").read_text().strip() == batches[0].id


def test_rerun_of_a_finished_pipeline_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    env, build = emulator.env(), tmp_path / "build"
    make("caption", env=env, BUILD=build, STEP="caption")
    merged = build_dir(tmp_path, "caption") / "merged.json"
    before = merged.read_bytes()
    emulator.admin("reset_stats", {})
    (ROOT / "data" / "example.json").touch()  # a touched input changes no request
    make("caption", env=env, BUILD=build, STEP="caption")
    calls = emulator.stats()["calls"]
    assert not any(k.startswith("POST") for k in calls), calls
    assert merged.read_bytes() == before
    assert len(emulator.batches()) == 1


def test_jsonl_in_and_out_with_many_chunks(emulator: Emulator, tmp_path: Path) -> None:
    records = [
        {"id": i, "title": f"Story number {i:03d}", "image_url": f"https://img.test/{i}.jpg"}
        for i in range(25)
    ]
    data = write_json(tmp_path / "stories.jsonl", records)
    config = tmp_path / "c.yaml"
    config.write_text(
        "model: gpt-4o-mini\ndescribe:\n  user: 'Describe {title}'\n  response_key: text\n"
    )
    make(
        "caption",
        env=emulator.env(),
        BUILD=tmp_path / "build",
        INPUT=data,
        CONFIG=config,
        STEP="describe",
        DATA_KEY="id",
        MAX_REQUESTS=10,
    )
    b = build_dir(tmp_path, "describe", data)
    assert sorted(p.name for p in b.glob("chunk_*.jsonl")) == [
        "chunk_001.jsonl",
        "chunk_002.jsonl",
        "chunk_003.jsonl",
    ]
    assert (b / "chunks.mk").read_text().splitlines()[-1] == "CHUNK_IDS := 001 002 003"
    merged = read_json(b / "merged.jsonl")
    assert [r["id"] for r in merged] == list(range(25))
    for r in merged:
        assert f"Describe Story number {r['id']:03d}" in r["text"]
    assert len(emulator.batches()) == 3


def test_output_copies_the_merged_dataset(emulator: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out" / "captioned.json"
    make("caption", env=emulator.env(), BUILD=tmp_path / "build", STEP="caption", OUTPUT=out)
    assert out.read_bytes() == (build_dir(tmp_path, "caption") / "merged.json").read_bytes()


def test_response_key_override(emulator: Emulator, tmp_path: Path) -> None:
    make(
        "caption",
        env=emulator.env(),
        BUILD=tmp_path / "build",
        STEP="article_filter",
        RESPONSE_KEY="verdict",
    )
    merged = read_json(build_dir(tmp_path, "article_filter") / "merged.json")
    verdicts = [r["verdict"] for r in merged if "verdict" in r]
    assert len(verdicts) == len(EXAMPLE) - 1  # one record has no article
    assert all(set(v) == {"keep", "reason"} for v in verdicts)  # parsed structured output
    assert not any("article_filter" in r for r in merged)


def test_a_changed_variable_is_used_on_a_rerun(emulator: Emulator, tmp_path: Path) -> None:
    env, build, out = emulator.env(), tmp_path / "build", tmp_path / "out.json"
    for key in ("first", "second"):
        make("caption", env=env, BUILD=build, RESPONSE_KEY=key, OUTPUT=out)
    assert all("second" in r and "first" not in r for r in read_json(out) if "caption" in r)
    assert len(emulator.batches()) == 1  # the response key changes no request


# ----------------------------------------------------------------------------- user mistakes


def config_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


ERROR_CASES = {
    "unknown step": (
        {"STEP": "captions"},
        "no step 'captions'; steps there: article_filter, caption",
    ),
    "missing user": (
        {"CONFIG": "model: m\nstep1:\n  system: hi\n", "STEP": "step1"},
        "has no 'user' prompt",
    ),
    "wrong type": (
        {
            "CONFIG": "model: m\nstep1:\n  user: '{title}'\n  is_multimodal: maybe\n",
            "STEP": "step1",
        },
        "'is_multimodal' must be a bool",
    ),
    "unknown key": (
        {"CONFIG": "model: m\nstep1:\n  user: '{title}'\n  temprature: 0\n", "STEP": "step1"},
        "unknown key 'temprature'",
    ),
    "bad yaml": ({"CONFIG": "model: [unclosed\n", "STEP": "x"}, "is not valid YAML"),
    "duplicate keys": (
        {"DATA": [{"k": "a", "t": "x"}, {"k": "a", "t": "y"}], "DATA_KEY": "k"},
        "the data key is not unique: 'a' x2",
    ),
    "missing keys": ({"DATA": [{"t": "x"}, {"k": "b", "t": "y"}], "DATA_KEY": "k"}, "index 0"),
    "five missing fields": (
        {"DATA": [{"k": str(i)} for i in range(6)], "DATA_KEY": "k"},
        "5 consecutive records (index 0 to 4) lack the prompt field(s) image_url, t of step",
    ),
    "bad json input": ({"DATA": "[{oops", "DATA_KEY": "k"}, "is not valid JSON"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_mistakes_get_one_clear_line(case: str, tmp_path: Path) -> None:
    variables, expected = ERROR_CASES[case]
    variables = dict(variables)
    args = {"BUILD": tmp_path / "build", "STEP": variables.pop("STEP", "caption")}
    if "CONFIG" in variables:
        args["CONFIG"] = config_with(tmp_path, variables.pop("CONFIG"))
    if "DATA" in variables:
        data = variables.pop("DATA")
        path = tmp_path / "data.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        args["INPUT"] = path
        args["CONFIG"] = config_with(tmp_path, "model: m\ns:\n  user: 'T {t}'\n  response_key: r\n")
        args["STEP"] = "s"
    args.update(variables)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = make("caption", env=env, check=False, **args)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1, result.stderr
    assert expected in ours[0]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "build").rglob("requests.jsonl"))  # nothing half-written


def test_missing_input_or_config_is_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for var in ("INPUT", "CONFIG"):
        result = make("caption", env=env, check=False, **{var: "nope/missing"})
        assert result.returncode != 0
        assert f"{var}=nope/missing does not exist; set {var}=path/to/" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_no_key_says_how_to_set_it(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = make("caption", env=env, check=False, BUILD=tmp_path / "build")
    assert result.returncode != 0
    assert "OPENAI_API_KEY is not set" in result.stderr and "make demo" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_key_is_one_line(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--api-key", "the-right-key").start()
    try:
        env = emu.env(OPENAI_API_KEY="a-wrong-key")
        result = make("caption", env=env, check=False, BUILD=tmp_path / "build")
        assert result.returncode != 0
        assert "OPENAI_API_KEY in the environment was rejected (401)" in result.stderr
        assert "a-wrong-key" not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr
    finally:
        emu.stop()


# ----------------------------------------------------------------------------- utilities


def test_status_and_check(emulator: Emulator, tmp_path: Path) -> None:
    env = emulator.env()
    make("caption", env=env, BUILD=tmp_path / "build", STEP="caption")
    batch_id = (build_dir(tmp_path, "caption") / "batch_001.id").read_text().strip()
    out = make("status", env=env, LIMIT=5).stdout
    assert batch_id in out and "completed" in out and "caption" in out
    out = make("status", env=env, FILTER='select(.status == "in_progress")').stdout
    assert batch_id not in out
    out = make("status", env=env, FILTER=".request_counts.completed").stdout
    assert "11" in out.split()
    out = make("check", env=env, BATCH=batch_id).stdout
    assert f'"id": "{batch_id}"' in out and '"status": "completed"' in out
    bad = make("check", env=env, BATCH="batch_nope", check=False)
    assert bad.returncode != 0 and "no batch batch_nope" in bad.stderr


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_cancel_stops_the_run_and_a_rerun_sends_the_rest(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "30").start()
    try:
        env, build = emu.env(), tmp_path / "build"
        args = ["make", "--no-print-directory", "caption", f"BUILD={build}", "STEP=caption"]
        run = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        b = build_dir(tmp_path, "caption")
        wait_for(b / "batch_001.id")
        out = make("cancel", env=env, BUILD=build, STEP="caption").stdout
        assert "cancelled 1 batch(es)" in out
        _, stderr = run.communicate(timeout=120)
        assert run.returncode != 0
        assert "was cancelled outside this run" in stderr and "rerun make" in stderr
        assert not (b / "merged.json").exists()
        emu.faults(processing_seconds=0.3)
        make("caption", env=env, BUILD=build, STEP="caption")
        merged = read_json(b / "merged.json")
        assert sum("generated_caption" in r for r in merged) == len(EXAMPLE) - 1
        statuses = sorted(x.status for x in emu.batches())
        assert statuses == ["cancelled", "completed"]
    finally:
        emu.stop()


def test_a_batch_id_the_server_does_not_know_is_one_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    env, build = emulator.env(), tmp_path / "build"
    make("caption", env=env, BUILD=build, STEP="caption")
    b = build_dir(tmp_path, "caption")
    (b / "results_001.jsonl").unlink()
    (b / "batch_001.id").write_text("batch_from_another_server\n")
    result = make("caption", env=env, check=False, BUILD=build, STEP="caption")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "names batch_from_another_server, which this server does not have" in result.stderr
    assert len(emulator.batches()) == 1  # nothing resubmitted behind the user's back
