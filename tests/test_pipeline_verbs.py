"""`make report` and `make gallery` after `make pipeline`: they find the pipeline's step
(BUILD/<name>/pipeline/NN-<step>) when BUILD/<name>/<step> does not exist, or name the B= to use;
and the gallery calls records `where:` left out "not selected" (skipped is for skipped.jsonl).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gallery
import pytest
import report
import yaml
from br.cli import run
from conftest import Emulator, input_dir, make, read_json, write_json

CONFIG = {
    "model": "gpt-4o-mini",
    "caption": {
        "is_multimodal": False,
        "user": "Describe {title}.",
        "response_key": "out",
        "where": ".keep",
    },
}
RECORDS = [
    {"id": "a", "title": "kept", "keep": True, "out": "an answer"},
    {"id": "b", "title": "left out", "keep": False},
    {"id": "c", "keep": True},  # no title: skipped.jsonl
]


def embedded(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1))


def pipeline_step(tmp_path: Path, folder: str) -> tuple[Path, Path]:
    """A finished step as make pipeline leaves it: BUILD/<name>/pipeline/<folder>."""
    name = tmp_path / "build" / "data-0123abcd"
    step = name / "pipeline" / folder
    write_json(step / "merged.json", RECORDS)
    write_json(step / "requests.jsonl", [{"custom_id": "a"}])
    write_json(step / "skipped.jsonl", [{"index": 2, "custom_id": "c", "missing": ["title"]}])
    (step / "chunks.mk").write_text("CHUNK_IDS :=\n")
    return name, step


def gallery_args(tmp_path: Path, b: Path) -> list[str]:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    data = write_json(tmp_path / "data.json", RECORDS)
    args = ["--dir", str(b), "--merged", str(b / "merged.json"), "--config", str(config)]
    args += ["--step", "caption", "--input", str(data), "--data-key", "id"]
    return [*args, "-o", str(b / "gallery.html")]


def test_gallery_calls_records_where_left_out_not_selected(tmp_path: Path) -> None:
    _, step = pipeline_step(tmp_path, "01-caption")
    assert gallery.main(gallery_args(tmp_path, step)) == 0
    data = embedded((step / "gallery.html").read_text())
    assert [r["status"] for r in data["records"]] == ["answered", "not_selected", "skipped"]
    assert data["records"][1]["why"] == "not selected by where: .keep"
    assert data["counts"] == {"answered": 1, "failed": 0, "skipped": 1, "not_selected": 1}
    page = (step / "gallery.html").read_text()
    assert '"not_selected": "not selected"' in page  # the filter button's and badge's label


def test_gallery_and_report_use_the_pipelines_step_when_the_step_dir_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, step = pipeline_step(tmp_path, "02-caption")
    b = name / "caption"  # where make's default B points
    assert gallery.main(gallery_args(tmp_path, b)) == 0
    assert (step / "gallery.html").exists() and not b.exists()
    assert f"using {step}" in capsys.readouterr().err
    config = tmp_path / "config.yaml"
    argv = ["--dir", str(b), "--config", str(config), "--offline", "-o", str(b / "report.json")]
    assert report.main(argv) == 0
    assert read_json(step / "report.json")["dir"] == str(step)
    assert not b.exists()


def test_a_step_the_pipeline_ran_twice_names_the_b_to_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, first = pipeline_step(tmp_path, "01-caption")
    _, second = pipeline_step(tmp_path, "03-caption")
    b = name / "caption"
    for main, argv in [
        (gallery.main, gallery_args(tmp_path, b)),
        (report.main, ["--dir", str(b), "--config", str(tmp_path / "config.yaml"), "-o", "x"]),
    ]:
        capsys.readouterr()
        assert run(main, argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"B={first}" in line and f"B={second}" in line, line
    assert not list(name.glob("**/gallery.html")) and not list(name.glob("**/report.json"))


def test_no_step_dir_and_no_pipeline_says_which_make_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = tmp_path / "build" / "data-0123abcd" / "caption"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    argv = ["--dir", str(b), "--config", str(tmp_path / "config.yaml"), "-o", str(b / "r.json")]
    assert run(report.main, argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{b} does not exist" in line and "make caption STEP=caption" in line
    assert "make pipeline" in line


def test_report_and_gallery_after_make_pipeline(emulator: Emulator, tmp_path: Path) -> None:
    env, build = emulator.env(), tmp_path / "build"
    make("pipeline", env=env, BUILD=build)
    name = input_dir(build)
    step = name / "pipeline" / "02-caption"
    out = make("report", env=env, BUILD=build, STEP="caption")
    assert (step / "report.json").exists() and not (name / "caption").exists()
    assert "error" not in out.stderr and f"using {step}" in out.stderr
    make("gallery", env=env, BUILD=build, STEP="caption")
    data = embedded((step / "gallery.html").read_text())
    merged = read_json(step / "merged.json")
    assert len(data["records"]) == len(merged)
    answered = [r for r in data["records"] if r["status"] == "answered"]
    assert len(answered) == sum("generated_caption" in r for r in merged) > 0
    not_selected = [r for r in data["records"] if r["status"] == "not_selected"]
    assert len(not_selected) == sum(
        (r.get("article_filter") or {}).get("keep") is False for r in merged
    )
    # The example's local images (relative to INPUT's folder, as make pipeline sent them).
    assert all(r["local"] for r in data["records"] if r["img"])
