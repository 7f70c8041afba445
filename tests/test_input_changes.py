"""INPUT (or CONFIG) changed while a step's batches ran: the merge never pairs a record with the
answer to a request that was not the record's, and the run never says "up to date" over it.

Library-level tests build requests.jsonl with make_requests, answer every request in answers/
the way run_batches files them, change the dataset, and merge; the end-to-end test edits INPUT
while the emulator holds the batches.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import make_requests
import merge_results
import pytest
import write_if_changed
import yaml
from br.cli import run
from br.prompts.images.identity import request_hash
from br.records import iter_jsonl
from conftest import ROOT, Emulator, input_dir, read_json, write_json

CONFIG = {
    "model": "gpt-4o-mini",
    "caption": {
        "is_multimodal": False,
        "user": "Describe {title}.",
        "response_key": "out",
        "where": ".skip != true",
    },
}


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "title": f"story {i}"} for i in range(n)]


class Step:
    """A dataset and config in tmp_path, its requests built and every one answered."""

    def __init__(self, tmp_path: Path, records: list[dict[str, Any]]) -> None:
        self.dir = tmp_path / "step"
        self.input = write_json(tmp_path / "data.json", records)
        self.config = tmp_path / "config.yaml"
        self.config.write_text(yaml.safe_dump(CONFIG))
        self.requests = self.dir / "requests.jsonl"
        self.merged = self.dir / "merged.json"
        self.errors = self.dir / "errors.jsonl"
        common = ["--input", str(self.input), "--config", str(self.config), "--step", "caption"]
        self.common = [*common, "--data-key", "id"]
        args = [*self.common, "-o", str(self.requests), "--skipped", str(self.skipped)]
        assert make_requests.main(args) == 0
        self.answer_all()

    @property
    def skipped(self) -> Path:
        return self.dir / "skipped.jsonl"

    def answer_all(self) -> None:
        """An answer per request, naming the prompt it answers (as run_batches files them)."""
        answers = []
        for request in iter_jsonl(self.requests):
            prompt = request["body"]["messages"][-1]["content"]
            answers.append(
                {
                    "custom_id": request["custom_id"],
                    "hash": request_hash(request),
                    "outcome": "succeeded",
                    "response": f"answer to: {prompt}",
                    "error": None,
                }
            )
        write_json(self.dir / "answers" / "results_001.jsonl", answers)

    def merge(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
        capsys.readouterr()
        args = [*self.common, "--requests", str(self.requests)]
        args += ["--answers", str(self.dir / "answers"), "--errors", str(self.errors)]
        code = run(merge_results.main, [*args, "-o", str(self.merged)])
        return code, capsys.readouterr().err.strip().splitlines()


def test_an_unchanged_input_merges_every_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = Step(tmp_path, rows(3))
    code, err = step.merge(capsys)
    assert code == 0, err
    merged = read_json(step.merged)
    assert [r["out"] for r in merged] == [f"answer to: Describe story {i}." for i in range(3)]


@pytest.mark.parametrize(
    "change",
    ["edit a prompt field", "append a record", "select a record where: left out", "edit CONFIG"],
)
def test_a_change_since_the_requests_were_built_merges_nothing_and_says_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    records = rows(4)
    records[3]["skip"] = True
    step = Step(tmp_path, records)
    code, _ = step.merge(capsys)
    assert code == 0
    before = step.merged.read_bytes(), step.errors.read_bytes()
    if change == "edit a prompt field":
        records[1]["title"] = "story one, rewritten"
    elif change == "append a record":
        records.append({"id": "r9", "title": "story 9"})
    elif change == "select a record where: left out":
        records[3]["skip"] = False
    if change == "edit CONFIG":
        config = json.loads(json.dumps(CONFIG))
        config["caption"]["user"] = "Caption {title}."
        step.config.write_text(yaml.safe_dump(config))
    else:
        write_json(step.input, records)
    code, err = step.merge(capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "changed since" in err[0] and "rerun the same make command" in err[0]
    # Nothing overwritten: the earlier merge's files are as they were.
    assert (step.merged.read_bytes(), step.errors.read_bytes()) == before
    assert not list(step.dir.glob(".*.tmp"))


def test_the_first_merge_after_a_change_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = rows(3)
    step = Step(tmp_path, records)
    records[2]["title"] = "story two, rewritten"
    write_json(step.input, records)
    code, err = step.merge(capsys)
    assert code == 2 and len(err) == 1
    assert "1 record(s)" in err[0] and "'r2'" in err[0]
    assert not step.merged.exists() and not step.errors.exists()


def test_records_skipped_for_a_missing_field_and_not_selected_still_pass_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [*rows(2), {"id": "r2"}, {"id": "r3", "title": "x", "skip": True}]
    step = Step(tmp_path, records)
    code, err = step.merge(capsys)
    assert code == 0, err
    merged = read_json(step.merged)
    assert [("out" in r) for r in merged] == [True, True, False, False]
    assert merged[2:] == records[2:]


def stamp(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return [str(tmp_path / "requests.params"), "--hash", f"INPUT={data}", "STEP=caption", *extra]


def test_the_stamp_check_names_what_changed_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_json(tmp_path / "data.json", rows(2))
    assert write_if_changed.main(stamp(tmp_path, data)) == 0
    before = (tmp_path / "requests.params").read_bytes()
    assert run(write_if_changed.main, [*stamp(tmp_path, data), "--check"]) == 0
    write_json(data, rows(3))
    capsys.readouterr()
    assert run(write_if_changed.main, [*stamp(tmp_path, data), "--check"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "INPUT changed" in line and "rerun" in line
    assert (tmp_path / "requests.params").read_bytes() == before


# ----------------------------------------------------------------------------- end to end


def wait_for(path: Path, run: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_input_edited_while_the_batches_run_is_caught_and_a_rerun_sends_only_the_change(
    tmp_path: Path,
) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "3").start()
    try:
        records = rows(30)
        data = write_json(tmp_path / "data.json", records)
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(CONFIG))
        build = tmp_path / "build"
        b = input_dir(build, data) / "caption"
        variables = {"BUILD": build, "INPUT": data, "CONFIG": config, "STEP": "caption"}
        variables.update(DATA_KEY="id", MAX_REQUESTS=10)
        args = ["make", "--no-print-directory", "caption"]
        args += [f"{k}={v}" for k, v in variables.items()]
        env = emu.env()
        running = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_for(b / "batch_003.id", running)
        records[1]["title"] = "story one, rewritten"
        records.append({"id": "r30", "title": "story 30"})
        write_json(data, records)
        out, err = running.communicate(timeout=300)
        assert running.returncode != 0, out + err
        assert "up to date" not in out
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "changed since" in errors[0] and "rerun" in errors[0], err
        assert not (b / "merged.json").exists()
        assert len(emu.batches()) == 3

        emu.faults(processing_seconds=0.3)
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "up to date; 0 request(s) failed" in done.stdout
        merged = read_json(b / "merged.json")
        assert len(merged) == 31
        for record in merged:
            assert record["out"].endswith(f"Describe {record['title']}."), record
        # Only the edited and the new record were sent again: one batch of two requests.
        batches = emu.batches()
        assert len(batches) == 4
        assert sorted(x.request_counts.total for x in batches) == [2, 10, 10, 10]
    finally:
        emu.stop()
