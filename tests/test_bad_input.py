"""Bad input is one line, never a wrong result: deep nesting, numbers and text JSON cannot
carry, an OUTPUT that cannot be written, Ctrl+C while a script imports, and lines that say what
is true.

Each is one line on stderr and a non-zero exit, found before anything is paid; what is valid
comes through exactly. Scripts run as real processes, make and the emulator where the behaviour
is end to end.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PYTHON, ROOT, Emulator, input_dir, make, read_json

STEP = {"is_multimodal": False, "user": "Describe {title}.", "response_key": "out"}


def script(name: str, *args: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MAKE"))}
    command = [PYTHON, str(ROOT / "scripts" / name), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def one_line(result: Any, *words: str) -> str:
    """The run failed with exactly one line on stderr, holding every word."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def config_file(tmp_path: Path, **top: Any) -> Path:
    path = tmp_path / "config.yaml"
    data = {"model": "gpt-4o-mini", **top, "caption": STEP}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def dataset(tmp_path: Path, suffix: str, *records: str) -> Path:
    """A dataset of records given as JSON text, kept exactly as written."""
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(r + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text("[\n" + ",\n".join(records) + "\n]\n", encoding="utf-8")
    return path


def build(tmp_path: Path, data: Path) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "requests.jsonl"
    args = ["--input", data, "--config", config_file(tmp_path), "--step", "caption", "-o", out]
    return script("make_requests.py", *args, "--skipped", tmp_path / "skipped.jsonl")


SUFFIXES = [".json", ".jsonl"]
OK = '{"image_path": "a", "title": "fine"}'


# ----------------------------------------------------------------------------- deep nesting


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_deep_nesting_is_one_line_naming_the_record(tmp_path: Path, suffix: str) -> None:
    # 20,000 levels, over CPython's C recursion limits (the old JSON list reader took 12 s and
    # 1 GB here; the review's 100,000 took it past 16 GB, too much to risk in a test).
    deep = "[" * 20_000 + "]" * 20_000
    data = dataset(tmp_path, suffix, OK, f'{{"image_path": "b", "title": {deep}}}')
    where = "record 1 (line 3)" if suffix == ".json" else f"{data}:2"
    one_line(build(tmp_path, data), where, "too deep")
    assert not (tmp_path / "requests.jsonl").exists()


# ----------------------------------------------------------------------------- numbers and text

EXACT = '{"image_path": "a", "title": "t", "big": 123456789012345678901234567890, "huge": 1e400, '
EXACT += '"tiny": -1e-400, "x": 1.5, "n": -9223372036854775809}'


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_both_readers_keep_big_numbers_exactly(tmp_path: Path, suffix: str) -> None:
    from br.records import RecordWriter, iter_records

    data = dataset(tmp_path, suffix, EXACT)
    [record] = list(iter_records(data))
    assert record["big"] == 123456789012345678901234567890 and record["x"] == 1.5
    out = tmp_path / f"out{suffix}"
    with open(out, "w", encoding="utf-8") as f:
        writer = RecordWriter(f, suffix == ".jsonl")
        writer.write(record)
        writer.close()
    text = out.read_text()
    for token in ('"big":123456789012345678901234567890', '"huge":1e400', '"tiny":-1e-400'):
        assert token in text, text
    assert '"n":-9223372036854775809' in text and "Infinity" not in text


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_merged_output_keeps_big_numbers_as_written(
    tmp_path: Path, emulator: Emulator, suffix: str
) -> None:
    data = dataset(tmp_path, suffix, EXACT)
    build_dir = tmp_path / "build"
    env = emulator.env()
    make("caption", env=env, INPUT=data, CONFIG=config_file(tmp_path), BUILD=build_dir)
    merged = input_dir(build_dir, data) / "caption" / f"merged{suffix}"
    text = merged.read_text()
    for token in ('"big":123456789012345678901234567890', '"huge":1e400', '"tiny":-1e-400'):
        assert token in text, text
    assert read_json(merged)[0]["out"].startswith("Emulated answer")


BAD_VALUES = {
    "lone surrogate": ('"\\ud800"', ["lone UTF-16 surrogate", "\\ud800"]),
    "NaN": ("NaN", ["NaN", "not JSON"]),
    "Infinity": ("-Infinity", ["-Infinity", "not JSON"]),
}


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("bad", BAD_VALUES)
def test_values_json_cannot_carry_are_one_line_in_both_readers(
    tmp_path: Path, suffix: str, bad: str
) -> None:
    value, words = BAD_VALUES[bad]
    data = dataset(tmp_path, suffix, OK, f'{{"image_path": "b", "title": {value}}}')
    where = "record 1 (line 3)" if suffix == ".json" else f"{data}:2"
    one_line(build(tmp_path, data), where, *words)
    assert not (tmp_path / "requests.jsonl").exists()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_surrogate_pair_is_one_character(tmp_path: Path, suffix: str) -> None:
    from br.records import iter_records

    data = dataset(tmp_path, suffix, '{"image_path": "a", "title": "\\ud83d\\ude00 \\u00e9"}')
    assert [r["title"] for r in iter_records(data)] == ["\U0001f600 \u00e9"]


# ----------------------------------------------------------------------------- parse errors


def test_a_parse_error_in_a_large_list_names_its_line(tmp_path: Path) -> None:
    """Past 16 MB the old reader said 'between line 1 and line 1'; now: the exact line."""
    data = tmp_path / "data.json"
    row = '{"image_path": "img/%d.png", "title": "' + "x" * 200 + '"}'
    rows = [row % i for i in range(80_000)]
    rows[-1] = rows[-1].replace('"title":', '"title"')
    data.write_text("[\n" + ",\n".join(rows) + "\n]\n")
    assert data.stat().st_size > 16_000_000
    line = one_line(build(tmp_path, data), "not valid JSON", "line 80001", "record 79999")
    assert "between" not in line


def test_a_record_longer_than_a_block_is_read(tmp_path: Path) -> None:
    from br.records import iter_records

    long = "é" * 300_000  # split across reads, mid-character too
    data = dataset(tmp_path, ".json", OK, f'{{"image_path": "b", "title": "{long}", "n": 12345}}')
    assert [r.get("n") for r in iter_records(data)] == [None, 12345]
    assert list(iter_records(data))[1]["title"] == long


# ----------------------------------------------------------------------------- OUTPUT


def output_cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    return {
        "directory": (str(tmp_path / "adir"), "is a directory"),
        "missing directory": (str(tmp_path / "nodir") + "/", "is a directory"),
        "under a file": (str(tmp_path / "afile" / "out.json"), "is a file"),
    }


@pytest.mark.parametrize("case", ["directory", "missing directory", "under a file"])
@pytest.mark.parametrize("goal", ["caption", "pipeline"])
def test_a_bad_output_is_one_line_before_anything_is_sent(
    tmp_path: Path, emulator: Emulator, case: str, goal: str
) -> None:
    output, words = output_cases(tmp_path)[case]
    data = dataset(tmp_path, ".json", OK)
    config = config_file(tmp_path, pipeline=["caption"])
    env = emulator.env()
    variables = {"INPUT": data, "CONFIG": config, "BUILD": tmp_path / "build"}
    result = make(goal, env=env, check=False, OUTPUT=output, **variables)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"OUTPUT={output}" in errors[0] and words in errors[0], errors
    assert emulator.batches() == []  # nothing paid
    assert not (tmp_path / "nodir").exists()


def test_write_if_changed_refuses_a_bad_output_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "m.json"
    source.write_text("[]\n")
    for output, words in output_cases(tmp_path).values():
        result = script("write_if_changed.py", output, "--from", source)
        one_line(result, output, words)
    assert (
        script("write_if_changed.py", tmp_path / "new" / "o.json", "--from", source).returncode == 0
    )
    assert (tmp_path / "new" / "o.json").read_text() == "[]\n"


# ----------------------------------------------------------------------------- Ctrl+C


def entry_scripts() -> list[str]:
    return sorted(
        p.name for p in (ROOT / "scripts").glob("*.py") if "sys.exit(run(main" in p.read_text()
    )


# The interpreter sends itself SIGINT when the script imports its first module after
# __future__ and cli (which installs the handler: its own loading is the one window left), the
# moment the review's Ctrl+C hit. The hook uses only modules loaded at start-up.
INTERRUPT_AT_FIRST_IMPORT = """
import _signal, os, sys
path = sys.argv[1]
sys.path.insert(0, os.path.dirname(path))
def hook(event, args):
    if event == "import" and not hook.sent and args[0] not in ("__future__", "br", "br.cli"):
        hook.sent = True
        os.kill(os.getpid(), _signal.SIGINT)
hook.sent = False
sys.argv = [path, "--help"]
sys.addaudithook(hook)
exec(compile(open(path).read(), path, "exec"), {"__name__": "__main__", "__file__": path})
"""


@pytest.mark.parametrize("name", entry_scripts())
def test_ctrl_c_while_a_script_imports_is_one_line(name: str) -> None:
    result = subprocess.run(
        [PYTHON, "-c", INTERRUPT_AT_FIRST_IMPORT, str(ROOT / "scripts" / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr == "interrupted: rerun the same make command to resume.\n"


# ----------------------------------------------------------------------------- true lines


def test_input_a_directory_says_so(tmp_path: Path) -> None:
    result = make("caption", env=dict(os.environ), check=False, INPUT=tmp_path)
    assert result.returncode != 0
    assert f"INPUT={tmp_path} is a directory" in result.stderr, result.stderr
    assert "does not exist" not in result.stderr


def test_every_record_skipped_says_so(tmp_path: Path) -> None:
    data = dataset(tmp_path, ".json", '{"image_path": "a"}', '{"image_path": "b"}')
    result = build(tmp_path, data)
    assert result.returncode == 0, result.stderr
    assert "all 2 records were skipped" in result.stderr, result.stderr
    args = [tmp_path / "requests.jsonl", "--answers", tmp_path / "answers"]
    result = script("split_requests.py", *args, "-o", tmp_path / "chunks.mk")
    assert result.returncode == 0, result.stderr
    assert "holds no requests" in result.stderr and "is the input empty" not in result.stderr


def test_an_empty_input_says_so(tmp_path: Path) -> None:
    result = build(tmp_path, dataset(tmp_path, ".jsonl"))
    assert result.returncode == 0, result.stderr
    assert "holds no records" in result.stderr, result.stderr


def test_a_tiny_max_cost_is_printed_as_it_is(tmp_path: Path) -> None:
    from br.prices import usd

    assert usd(0.0000001) == "$0.00000010"
    assert usd(0.00125) == "$0.001250" and usd(0.5) == "$0.5000" and usd(12) == "$12.00"
    config = config_file(tmp_path, prices={"gpt-4o-mini": {"input": 0.075, "output": 0.3}})
    data = dataset(tmp_path, ".json", OK)
    args = ["--input", data, "--config", config, "--step", "caption", "--max-cost", "0.0000001"]
    one_line(script("plan.py", *args), "MAX_COST $0.00000010", "nothing was sent")
