"""Build directories and file names: one directory per input, identity by content, and no user
value ever run by the shell (hostile names, spaces)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import ROOT, Emulator, input_dir, make, read_json, write_json

CONFIG = """\
model: gpt-4o-mini
describe:
  is_multimodal: false
  user: 'Summarise: {text}'
  response_key: summary
"""


def dataset(path: Path, words: str, n: int = 5) -> Path:
    return write_json(path, [{"id": f"r{i}", "text": f"{words} {i}"} for i in range(n)])


def caption(emu: Emulator, build: Path, data: Path, config: Path, **extra: object) -> object:
    return make(
        "caption", env=emu.env(), BUILD=build, INPUT=data, CONFIG=config, STEP="describe",
        DATA_KEY="id", **extra,
    )  # fmt: skip


def test_two_inputs_with_one_name_never_share_a_directory(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    build = tmp_path / "build"
    a = dataset(tmp_path / "a" / "news.json", "alpha")
    b = dataset(tmp_path / "b" / "news.json", "beta")
    os.utime(b, (1, 1))  # older than anything built from a
    caption(emulator, build, a, config)
    out = tmp_path / "out.json"
    caption(emulator, build, b, config, OUTPUT=out)
    assert input_dir(build, a) != input_dir(build, b)
    assert all("beta" in r["summary"] for r in read_json(out))
    assert all(
        "alpha" in r["summary"] for r in read_json(input_dir(build, a) / "describe" / "merged.json")
    )
    # .json and .jsonl of one stem: two directories.
    c = dataset(tmp_path / "a" / "news.jsonl", "gamma")
    caption(emulator, build, c, config)
    assert input_dir(build, c) != input_dir(build, a)
    assert (input_dir(build, a) / "describe" / "batch_001.id").exists()


def test_a_changed_input_with_an_old_mtime_is_rebuilt(emulator: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    build, data = tmp_path / "build", tmp_path / "news.json"
    dataset(data, "first")
    caption(emulator, build, data, config)
    other = dataset(tmp_path / "elsewhere.json", "second")
    os.utime(other, (1, 1))
    shutil.copy2(other, data)  # cp -p: new bytes, an old mtime
    caption(emulator, build, data, config)
    merged = read_json(input_dir(build, data) / "describe" / "merged.json")
    assert all("second" in r["summary"] for r in merged)
    # The same for the config: another prompt, older than requests.jsonl.
    config2 = tmp_path / "c2.yaml"
    config2.write_text(CONFIG.replace("Summarise:", "Shorten:"))
    os.utime(config2, (1, 1))
    caption(emulator, build, data, config2)
    merged = read_json(input_dir(build, data) / "describe" / "merged.json")
    assert all("Shorten" in r["summary"] for r in merged)


def test_hostile_and_spaced_names_are_never_run(emulator: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "my data"
    folder.mkdir()
    # (Make never expands a value: a `$` in a name is kept as typed, tests/test_security.py.)
    data = dataset(folder / "x`touch PWNED1`;touch PWNED2|'q'\"dq\"(p)>PWNED3 & echo.json", "bad")
    config = folder / "my config; touch PWNED4.yaml"
    config.write_text(CONFIG)
    out = folder / "out `touch PWNED5`.json"
    build = tmp_path / "build"
    caption(emulator, build, data, config, OUTPUT=out)
    plan = make(
        "plan", env=emulator.env(), BUILD=build, INPUT=data, CONFIG=config, STEP="describe",
        DATA_KEY="id",
    )  # fmt: skip
    assert "requests" in plan.stdout + plan.stderr
    for where in (ROOT, tmp_path, folder, build):
        assert not [p for p in where.glob("PWNED*")], where  # nothing ran
    assert len(read_json(out)) == 5 and all("bad" in r["summary"] for r in read_json(out))
    b = input_dir(build, data) / "describe"
    assert b.parent.name.startswith("x_touch_PWNED1_")  # readable, and safe for make
    assert (b / "merged.json").exists()
