"""The build directory's names (br/layout.py): the one owner of every file name. No server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from br.layout import StepDir, chunk_id, name_of


def test_a_steps_files_have_the_names_users_and_make_know(tmp_path: Path) -> None:
    step = StepDir(tmp_path)
    names = [
        step.requests, step.manifest, step.results_list, step.ledger, step.answers,
        step.chunk("007"), step.batch_id("007"), step.cancelled("007"), step.results("007"),
        step.retry("007", 2), step.retry_id("007", 2), step.merged(),
    ]  # fmt: skip
    assert [p.name for p in names] == [
        "requests.jsonl", "chunks.mk", "results.list", "ledger.jsonl", "answers",
        "chunk_007.jsonl", "batch_007.id", "batch_007.cancelled", "results_007.jsonl",
        "retry_007_2.jsonl", "retry_007_2.id", "merged.json",
    ]  # fmt: skip
    assert all(p.parent == tmp_path for p in names)
    assert step.attempt_input("007", 0) == step.chunk("007")
    assert step.attempt_input("007", 3) == step.retry("007", 3)
    assert step.attempt_id("007", 0) == step.batch_id("007")
    assert step.attempt_id("007", 1) == step.retry_id("007", 1)
    assert step.answers_file("ab" * 32, 1) == tmp_path / "answers" / f"{'ab' * 16}-1.jsonl"
    assert chunk_id(step.chunk("042")) == "042" and chunk_id(step.retry("042", 3)) == "042"


def test_the_manifest_is_written_and_read_by_one_owner(tmp_path: Path) -> None:
    step = StepDir(tmp_path)
    assert step.chunk_ids() is None  # not split yet
    step.manifest.write_text(step.manifest_text(["001", "002", "003"]))
    assert step.chunk_ids() == ["001", "002", "003"]
    step.manifest.write_text(step.manifest_text([]))
    assert step.chunk_ids() == []


def test_id_files_come_by_chunk_then_attempt(tmp_path: Path) -> None:
    step = StepDir(tmp_path)
    for path in [
        step.retry_id("002", 1), step.retry_id("001", 10), step.retry_id("001", 2),
        step.batch_id("002"), step.batch_id("001"), step.retry("001", 2),
    ]:  # fmt: skip
        path.write_text("x\n")
    assert [p.name for p in step.id_files()] == [
        "batch_001.id", "batch_002.id", "retry_001_2.id", "retry_001_10.id", "retry_002_1.id",
    ]  # fmt: skip
    assert [p.name for p in step.id_files("001")] == [
        "batch_001.id", "retry_001_2.id", "retry_001_10.id",
    ]  # fmt: skip
    assert [p.name for p in step.retry_files("001")] == ["retry_001_2.jsonl"]


def test_results_list_names_each_results_file_with_its_size_and_mtime(tmp_path: Path) -> None:
    step = StepDir(tmp_path)
    step.results("001").write_text("{}\n")
    step.results("002").write_text("{}\n{}\n")
    os.utime(step.results("002"), ns=(1, 2_000_000_000))
    listed = step.results_list_text(["001", "002"]).splitlines()
    assert listed[1] == "results_002.jsonl 6 2000000000"
    assert [p.name for p in step.result_files()] == ["results_001.jsonl", "results_002.jsonl"]


def test_downloads_are_fresh_files_found_again_for_removal(tmp_path: Path) -> None:
    step = StepDir(tmp_path)
    one, two = step.new_download(), step.new_download()
    assert one != two and one.exists() and two.exists()
    assert step.downloads() == sorted([one, two])
    assert not step.chunk_files()  # never taken for a chunk


def test_the_build_name_of_an_input_is_readable_and_unique_per_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name, fmt = name_of("data/news.json")
    assert name.startswith("news-") and len(name) == len("news-") + 8 and fmt == "json"
    assert name_of("data/news.json") == (name, "json")  # stable
    assert name_of("other/news.json")[0] != name  # another path, another directory
    assert name_of("data/news.JSONL")[1] == "jsonl" and name_of("x.ndjson")[1] == "jsonl"
    assert name_of("data/my file$.json")[0].startswith("my_file_-")  # what make cannot take
