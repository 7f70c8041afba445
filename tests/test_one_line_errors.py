"""A user's mistake is one line, in the scripts that build, plan, merge and show: config
mistakes, `where:` errors, text that is not UTF-8, a full disk, a read-only build directory,
oversized requests, unclear placeholders and data keys, a rejected key; and a JSON list is
streamed, its errors one line with their position.

Scripts run as real processes (one line on stderr, the exit code, the files on disk); the disk
full and read-only cases use a real tmpfs and a real read-only bind mount (root only: they skip,
saying so, elsewhere).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from br.records import iter_records
from conftest import PYTHON, ROOT, TEST_KEY, Emulator, read_json, write_json

STEP: dict[str, Any] = {
    "is_multimodal": False,
    "user": "Describe {title}.",
    "response_key": "out",
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MAKE"))}
    env.update(extra)
    return env


def script(name: str, *args: Any, env: dict[str, str] | None = None) -> Any:
    command = [PYTHON, str(ROOT / "scripts" / name), *map(str, args)]
    return subprocess.run(
        command, cwd=ROOT, env=env or clean_env(), capture_output=True, text=True, timeout=600
    )


def one_line_error(result: Any, *words: str, warnings: bool = False) -> str:
    """The run failed with exactly one line on stderr (after warnings, if allowed), holding
    every word."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    if warnings:
        lines = [line for line in lines if not line.startswith("warning: ")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def config_file(tmp_path: Path, step: dict[str, Any] | None = None, **top: Any) -> Path:
    path = tmp_path / "config.yaml"
    data = {"model": "gpt-4o-mini", **top, "caption": step if step is not None else STEP}
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def records(n: int) -> list[dict[str, Any]]:
    return [{"image_path": f"img/{i}.png", "title": f"photo {i}"} for i in range(n)]


def build(tmp_path: Path, data: Path, config: Path, *extra: Any, out: Path | None = None) -> Any:
    out = out or tmp_path / "requests.jsonl"
    args = ["--input", data, "--config", config, "--step", "caption", "-o", out]
    return script("make_requests.py", *args, "--skipped", out.with_name("skipped.jsonl"), *extra)


def plan(data: Path, config: Path, *extra: Any) -> Any:
    return script("plan.py", "--input", data, "--config", config, "--step", "caption", *extra)


# --------------------------------------------------------------------------------- config mistakes


MISTAKES = {
    "no response key": ({"response_key": None}, ["response key", "RESPONSE_KEY"]),
    "extract jq": ({"extract": ".keep | ["}, ["extract", ".keep | ["]),
    "schema": ({"response_format": {"type": "objekt"}}, ["response_format", "objekt"]),
    "image_detail": (
        {"image_detail": "medium", "is_multimodal": True},
        ["image_detail", "medium", "auto, low or high"],
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_config_mistakes_are_found_when_requests_are_built_and_by_plan(
    tmp_path: Path, mistake: str
) -> None:
    change, words = MISTAKES[mistake]
    step = {k: v for k, v in {**STEP, **change}.items() if v is not None}
    config = config_file(tmp_path, step)
    data = write_json(tmp_path / "data.json", records(3))
    line = one_line_error(build(tmp_path, data, config), *words)
    assert not (tmp_path / "requests.jsonl").exists()
    # make plan reports the very same line.
    assert one_line_error(plan(data, config), *words) == line
    if mistake == "no response key":  # RESPONSE_KEY given: both go ahead
        assert build(tmp_path, data, config, "--response-key", "answer").returncode == 0
        assert plan(data, config, "--response-key", "answer").returncode == 0
        assert len(read_json(tmp_path / "requests.jsonl")) == 3
    if mistake == "schema":  # and merge never tracebacks on it either
        args = ["--input", data, "--config", config, "--step", "caption", "--requests"]
        args += [tmp_path / "r.jsonl", "--answers", tmp_path / "answers", "--errors"]
        result = script("merge_results.py", *args, tmp_path / "e.jsonl", "-o", tmp_path / "m.json")
        assert one_line_error(result, *words) == line
        assert not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------------------------ where: is jq


WHERE_DATA = [
    {"image_path": "a", "title": "x", "n": 0, "flag": False},
    {"image_path": "b", "title": None, "flag": None},
    {"image_path": "c"},
    {"image_path": "d", "title": "", "n": 1},
]


@pytest.mark.parametrize(
    ("where", "selected"),
    [(".title", ["a", "d"]), (".n", ["a", "d"]), (".flag", []), (".title != null", ["a", "d"])],
)
def test_where_follows_jq_truthiness(tmp_path: Path, where: str, selected: list[str]) -> None:
    config = config_file(tmp_path, {**STEP, "user": "Say {image_path}", "where": where})
    data = write_json(tmp_path / "data.json", WHERE_DATA)
    result = build(tmp_path, data, config)
    assert result.returncode == 0, result.stderr
    assert [r["custom_id"] for r in read_json(tmp_path / "requests.jsonl")] == selected
    if not selected:  # 0 of N: a warning, from make_requests and from plan
        assert "warning" in result.stderr and "0 of 4 records" in result.stderr
        assert "0 of 4 records" in plan(data, config).stderr


def test_a_where_error_stops_the_build_with_its_count_and_first_record(tmp_path: Path) -> None:
    config = config_file(
        tmp_path, {**STEP, "user": "Say {image_path}", "where": '.title | test("x")'}
    )
    data = write_json(tmp_path / "data.json", WHERE_DATA)
    words = ["where:", '.title | test("x")', "2 of 4 records", "record 1"]
    line = one_line_error(build(tmp_path, data, config), *words)
    assert not (tmp_path / "requests.jsonl").exists()
    assert one_line_error(plan(data, config), *words) == line


# ------------------------------------------ bad text, a full disk, a read-only directory: one line


JSON_TEXT = '[{"image_path": "café.png", "title": "Müller"}]'


@pytest.mark.parametrize(
    ("suffix", "raw", "words"),
    [
        (".json", JSON_TEXT.encode("latin-1"), ["not UTF-8", "line 1"]),
        (".json", JSON_TEXT.encode("utf-16"), ["UTF-16", "UTF-8"]),
        (".json", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", ["not"]),
        (
            ".jsonl",
            b'{"image_path": "a", "title": "x"}\n' + JSON_TEXT[1:-1].encode("latin-1"),
            ["line 2", "not UTF-8"],
        ),
        (".jsonl", JSON_TEXT[1:-1].encode("utf-16-le"), ["UTF-16"]),
        (".jsonl", b"\x00\x01\x02\xff\xfe binary\n", ["not"]),
    ],
)
def test_a_non_utf8_input_is_one_line(
    tmp_path: Path, suffix: str, raw: bytes, words: list[str]
) -> None:
    data = tmp_path / f"data{suffix}"
    data.write_bytes(raw)
    config = config_file(tmp_path)
    one_line_error(build(tmp_path, data, config), str(data), *words)
    one_line_error(plan(data, config), str(data), *words)
    assert not (tmp_path / "requests.jsonl").exists()


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_utf8_bom_is_accepted_silently(tmp_path: Path, suffix: str) -> None:
    text = JSON_TEXT if suffix == ".json" else JSON_TEXT[1:-1] + "\n"
    data = tmp_path / f"data{suffix}"
    data.write_bytes(b"\xef\xbb\xbf" + text.encode())
    config = tmp_path / "config.yaml"
    config.write_bytes(b"\xef\xbb\xbf" + config_file(tmp_path).read_bytes())
    result = build(tmp_path, data, config)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    assert read_json(tmp_path / "requests.jsonl")[0]["custom_id"] == "café.png"


@pytest.mark.parametrize(
    ("encoding", "words"), [("latin-1", ["not UTF-8", "line 3"]), ("utf-16", ["UTF-16"])]
)
def test_a_non_utf8_config_is_one_line(tmp_path: Path, encoding: str, words: list[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes("model: gpt-4o-mini\ncaption:\n  user: Décris {title}\n".encode(encoding))
    data = write_json(tmp_path / "data.json", records(2))
    line = one_line_error(build(tmp_path, data, config), str(config), *words)
    assert one_line_error(plan(data, config), *words) == line


@contextlib.contextmanager
def mounted(target: Path, *args: str) -> Iterator[None]:
    target.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a real tmpfs or read-only bind mount")
    done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def test_a_full_disk_is_one_line_and_the_old_file_survives(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    small = write_json(tmp_path / "small.json", records(3))
    big = write_json(tmp_path / "big.json", [{**r, "title": "x" * 1000} for r in records(200)])
    full = tmp_path / "full"
    with mounted(full, "-t", "tmpfs", "-o", "size=64k", "tmpfs"):
        out = full / "requests.jsonl"
        assert build(tmp_path, small, config, out=out).returncode == 0
        before = out.read_bytes()
        result = build(tmp_path, big, config, out=out)
        one_line_error(result, str(full), "No space left on device")
        assert out.read_bytes() == before
        assert sorted(p.name for p in full.iterdir()) == [
            "requests.hashes",
            "requests.jsonl",
            "skipped.jsonl",
        ]


def test_a_read_only_build_directory_is_one_line(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    data = write_json(tmp_path / "data.json", records(3))
    source, ro = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    out = source / "requests.jsonl"
    assert build(tmp_path, data, config, out=out).returncode == 0
    before = out.read_bytes()
    write_json(data, records(5))
    with mounted(ro, "--bind", "-o", "ro", str(source)):
        result = build(tmp_path, data, config, out=ro / "requests.jsonl")
        one_line_error(result, str(ro), "Read-only file system")
    assert out.read_bytes() == before


def test_a_bad_number_argument_is_one_line(tmp_path: Path) -> None:
    data = write_json(tmp_path / "data.json", records(2))
    one_line_error(
        plan(data, config_file(tmp_path), "--max-requests", "abc"), "--max-requests", "abc"
    )


# ------------------------------------------------------------------------------ oversized requests


def test_a_request_over_the_context_window_warns(tmp_path: Path) -> None:
    data = write_json(
        tmp_path / "data.json", [*records(3), {"image_path": "huge", "title": "x" * 600_000}]
    )
    config = config_file(tmp_path)
    result = build(tmp_path, data, config)
    assert result.returncode == 0, result.stderr
    for text in (result.stderr, plan(data, config).stderr):
        assert re.search(
            r"warning: 1 request\(s\) .*context window.* gpt-4o-mini.*128,000", text
        ), text
        assert "'huge'" in text
    assert len(read_json(tmp_path / "requests.jsonl")) == 4
    # The config's context_windows: override the table; an unknown model gets no warning.
    small = config_file(tmp_path, context_windows={"gpt-4o-mini": 5})
    assert "4 request(s)" in build(tmp_path, data, small).stderr
    unknown = config_file(tmp_path, model="my-local-model")
    assert "context window" not in build(tmp_path, data, unknown).stderr


def test_a_request_over_the_batch_file_limit_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    with open(data, "w") as f:
        f.write(json.dumps(records(1)[0]) + "\n")
        f.write(json.dumps({"image_path": "giant", "title": "y" * 210_000_000}) + "\n")
    config = config_file(tmp_path)
    words = ["'giant'", "200 MB"]
    one_line_error(build(tmp_path, data, config), *words)
    assert not (tmp_path / "requests.jsonl").exists()
    one_line_error(plan(data, config), *words)


# ---------------------------------------------------------------------------- the gallery's images


def png(path: Path, colour: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"\x89PNG\r\n\x1a\n" + colour * 64
    path.write_bytes(data)
    return data


def gallery_rows(tmp_path: Path, data: Path, *extra: Any) -> tuple[list[dict[str, Any]], str]:
    config = config_file(tmp_path)
    out = tmp_path / "build" / "gallery.html"
    args = ["--dir", tmp_path / "build", "--merged", data, "--config", config, "--step", "caption"]
    result = script("gallery.py", *args, "--input", data, *extra, "-o", out)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1))["records"], page


def test_the_gallery_embeds_only_the_datasets_own_images(tmp_path: Path) -> None:
    own = png(tmp_path / "set" / "images" / "own.png", b"A")
    secret = png(tmp_path / "private.png", b"S")
    (tmp_path / "set" / "images" / "link.png").symlink_to(tmp_path / "private.png")
    paths = [
        "images/own.png",
        str(tmp_path / "set" / "images" / "own.png"),  # absolute, but inside: fine
        "../private.png",
        str(tmp_path / "private.png"),
        "images/link.png",  # a symlink out of the folder
        "images/../../private.png",
    ]
    data = write_json(
        tmp_path / "set" / "data.json", [{"image_path": p, "title": p} for p in paths]
    )
    rows, page = gallery_rows(tmp_path, data)
    uri = "data:image/png;base64," + base64.b64encode(own).decode()
    assert [r["img"] for r in rows[:2]] == [uri, uri]
    for row in rows[2:]:
        assert row["img"] is None, row
        assert row["img_note"].startswith("not embedded: ") and "outside" in row["img_note"]
    assert base64.b64encode(secret).decode() not in page
    assert "private.png" not in json.dumps([r["img"] for r in rows])
    # IMAGE_ROOT widens the folder on purpose.
    rows, page = gallery_rows(tmp_path, data, "--image-root", tmp_path)
    assert all(r["img"] and r["img"].startswith("data:image/png") for r in rows)


# -------------------------------------------------------------------- messages that name the cause


def test_an_unclosed_placeholder_warns_and_several_data_keys_name_the_record(
    tmp_path: Path,
) -> None:
    data = write_json(tmp_path / "data.json", records(2))
    config = config_file(tmp_path, {**STEP, "user": "Describe {title and {image_path}"})
    result = build(tmp_path, data, config)
    assert result.returncode == 0
    assert re.search(r"warning: .*'\{' .*no closing '\}'", result.stderr), result.stderr
    assert "warning" in plan(data, config).stderr

    tags = write_json(
        tmp_path / "tags.json", [{"tags": ["a"], "title": "t"}, {"tags": ["b", "c"], "title": "u"}]
    )
    line = one_line_error(build(tmp_path, tags, config_file(tmp_path), "--data-key", ".tags[]"))
    assert "DATA_KEY '.tags[]'" in line and "record 1" in line and "2 values" in line


def test_an_extract_error_names_the_expression(tmp_path: Path) -> None:
    # (A bare schema is sent strict: every property required, no other key.)
    schema = {"type": "object", "properties": {"keep": {"type": "string"}}, "required": ["keep"]}
    step = {**STEP, "response_format": schema, "extract": ".keep | tonumber"}
    config = config_file(tmp_path, step)
    data = write_json(tmp_path / "data.json", records(2))
    assert build(tmp_path, data, config).returncode == 0
    requests = read_json(tmp_path / "requests.jsonl")
    from br.prompts.images.identity import request_hash

    answers = tmp_path / "answers"
    rows = [
        {
            "custom_id": r["custom_id"],
            "hash": request_hash(r),
            "outcome": "succeeded",
            "response": json.dumps({"keep": "yes" if i == 0 else "7"}),
            "error": None,
        }
        for i, r in enumerate(requests)
    ]
    write_json(answers / "x.jsonl", rows)
    args = ["--input", data, "--config", config, "--step", "caption", "--requests"]
    args += [tmp_path / "requests.jsonl", "--answers", answers, "--errors", tmp_path / "e.jsonl"]
    result = script("merge_results.py", *args, "-o", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    (error,) = read_json(tmp_path / "e.jsonl")
    assert error["index"] == 0 and error["code"] == "extract_failed"
    assert "extract '.keep | tonumber'" in error["message"]
    assert [r.get("out") for r in read_json(tmp_path / "m.json")] == [None, 7]


def test_the_401_advice_names_where_the_key_came_from(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--api-key", TEST_KEY).start()
    try:
        env = clean_env(OPENAI_BASE_URL=emu.url, OPENAI_API_KEY="wrong-key-from-env")
        config = config_file(tmp_path)
        result = script("batches.py", "status", "--config", config, env=env)
        one_line_error(result, "401", "OPENAI_API_KEY", "environment")
        config = config_file(tmp_path, api_key="wrong-key-in-config")
        result = script(
            "batches.py", "status", "--config", config, env=clean_env(OPENAI_BASE_URL=emu.url)
        )
        line = one_line_error(result, "401", "api_key", str(config), warnings=True)
        assert "wrong-key" not in result.stderr and "export OPENAI_API_KEY" not in line
    finally:
        emu.stop()


# ---------------------------------------------------------------- the original tool's command line


def test_send_batch_requests_without_o_says_it_overwrites_the_input(
    emulator: Emulator, tmp_path: Path
) -> None:
    data = write_json(tmp_path / "data.json", records(3))
    config = config_file(tmp_path)
    env = emulator.env(BUILD=str(tmp_path / "build"))
    result = script("send_batch_requests.py", "-i", data, "-s", "caption", "-c", config, env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"no -o given: .*overwrit.*" + re.escape(str(data)), result.stderr)
    assert all(r["out"].startswith("Emulated answer ") for r in read_json(data))


# --------------------------------------------------------------------------- streaming a JSON list


def test_a_json_list_is_streamed(tmp_path: Path) -> None:
    """The first record arrives before the rest of the list is even written."""
    fifo = tmp_path / "data.json"
    os.mkfifo(fifo)
    got_first = threading.Event()
    state = {"finished": False}

    def writer() -> None:
        with open(fifo, "w") as f:
            f.write('[{"image_path": "a", "n": 1.5},\n')
            f.flush()
            got_first.wait(60)
            f.write('{"image_path": "b"}]\n')
            state["finished"] = True

    thread = threading.Thread(target=writer)
    thread.start()
    it = iter_records(fifo)
    first = next(it)
    written_when_first_arrived = state["finished"]
    got_first.set()
    rest = list(it)
    thread.join()
    assert first == {"image_path": "a", "n": 1.5} and isinstance(first["n"], float)
    assert rest == [{"image_path": "b"}]
    assert not written_when_first_arrived


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[{"a": 1},\n {"b": 2}\n', ["not valid JSON", "line 3"]),
        ('[{"a": 1}]\n[{"b": 2}]\n', ["not valid JSON", "line 2"]),
        ('[{"a": 1},, {"b": 2}]', ["not valid JSON", "line 1"]),
        ('{"a": 1}', ["must hold a JSON list"]),
        ('[{"a": 1}, 7]', ["record 1 is a int"]),
        ("", ["not valid JSON"]),
    ],
)
def test_bad_json_lists_are_one_line_with_the_position(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    data = tmp_path / "data.json"
    data.write_text(text)
    one_line_error(build(tmp_path, data, config_file(tmp_path)), str(data), *words)


@pytest.mark.parametrize("memory", [0, 150, 1000])  # on disk, moved there midway, in memory
def test_digest_set_finds_duplicates_within_and_across_batches(tmp_path: Path, memory: int) -> None:
    from br.digests import DigestSet

    with DigestSet(directory=tmp_path, batch=100, memory=memory) as seen:
        found = []
        for i in [*range(250), 5, 249, 300, 300]:
            found += seen.add(f"key {i}")
        found += seen.flush()
        assert found == ["key 5", "key 249", "key 300"]
        assert "key 17" in seen and "key 301" not in seen and b"key 17" in seen
        assert len(seen) == 251
        assert seen.contains(["key 0", "nope", "key 300"]) == [True, False, True]
        assert list(tmp_path.iterdir()) == []  # the SQLite file is already unlinked


def test_duplicate_keys_across_digest_batches_are_reported(tmp_path: Path) -> None:
    rows = records(25_000)
    rows[24_500]["image_path"] = rows[3]["image_path"]
    rows[24_600]["image_path"] = rows[24_599]["image_path"]
    data = write_json(tmp_path / "data.jsonl", rows)
    line = one_line_error(build(tmp_path, data, config_file(tmp_path)), "not unique")
    assert "'img/3.png' x2" in line and "'img/24599.png' x2" in line
