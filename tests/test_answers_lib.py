"""The answers room without a server: answers/ rows (store), the merge's matching of answers to
records, and the report's totals from the files on disk.

requests.jsonl is built by the real request builder; answers/ is written through store and
StepDir as the engine files them; nothing is mocked.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import report
import yaml
from br.answers import store
from br.answers.merge import Answers, Merged, merge
from br.answers.report import build, chunk_ids, spend
from br.answers.values import Merger
from br.cli import UserError
from br.config import load_config
from br.files import write_jsonl
from br.layout import StepDir
from br.prices import usd
from br.prompts.build import step_images, step_requests
from br.prompts.images.identity import request_hash
from br.records import iter_jsonl
from conftest import read_json, write_json

PRICE = {"input": 0.15, "cached_input": 0.075, "output": 0.6}
CONFIG = {
    "model": "gpt-4o-mini",
    "prices": {"gpt-4o-mini": PRICE},
    "caption": {"is_multimodal": False, "user": "Describe {title}.", "response_key": "out"},
    "facts": {
        "is_multimodal": False,
        "user": "The facts of {title}, as JSON.",
        "response_format": {"type": "json_object"},
        "response_key": "facts",
    },
    "question": {
        "system": "You ask about photographs.",
        "context": "Caption: {title}",
        "dialog_history": "So far:\n{dialog_history}",
        "image_url": "{image_url}",
        "user": "Ask one new question and answer it.",
        "response_key": "qa",
    },
}
CHUNK = "c" * 64  # the sha256 of a chunk file: answers/ names each attempt's file by it


class Step:
    """A dataset and config in tmp_path, with requests.jsonl built for one of its steps."""

    def __init__(self, tmp_path: Path, name: str, records: list[dict[str, Any]]) -> None:
        self.files = StepDir(tmp_path / "build" / name)
        self.files.root.mkdir(parents=True)
        self.name = name
        self.input = write_json(tmp_path / "data.json", records)
        self.config = tmp_path / "config.yaml"
        self.config.write_text(yaml.safe_dump(CONFIG))
        self.step = load_config(self.config).step(name)
        sent = [b.line for b, _ in self.built(self.input) if b.request is not None]
        self.files.requests.write_text("".join(sent))
        write_jsonl(self.files.skipped, [])

    def built(self, path: Path) -> list[Any]:
        args = argparse.Namespace(image_root=None, input=path, preflight_cache=None)
        local, _ = step_images(args, self.step, None)
        with local:
            records = iter(read_json(path))
            return list(step_requests(records, self.step, "id", local, None, warn=lambda _: None))

    def requests(self) -> dict[str, dict[str, Any]]:
        return {r["custom_id"]: r for r in iter_jsonl(self.files.requests)}

    def answer(self, attempt: int, rows: list[dict[str, Any]]) -> None:
        """One attempt's rows in answers/, as the engine files them."""
        store.write(self.files.answers_file(CHUNK, attempt), rows)

    def merge(self) -> tuple[Merged, list[dict[str, Any]], list[dict[str, Any]]]:
        """Merge; the counts, the merged records and errors.jsonl's rows."""
        merger = Merger(self.step, "id", self.step.response_key or "")
        answers = Answers(self.files.root, self.files.requests, self.files, self.files.skipped)
        args = argparse.Namespace(image_root=None, input=self.input, preflight_cache=None)
        local, _ = step_images(args, self.step, None, True)
        try:
            with local:
                done = merge(
                    self.input, merger, answers, local, self.files.merged(), self.files.errors
                )
        finally:
            answers.close()
        return done, read_json(self.files.merged()), list(iter_jsonl(self.files.errors))


def result(response: Any = None, code: str | None = None, attempt: int = 0) -> dict[str, Any]:
    """A result row as outcomes.collect makes it: a success with `response`, else `code`."""
    error = None if code is None else {"code": code, "message": f"{code}!", "status": 500}
    return {
        "outcome": "succeeded" if code is None else "failed",
        "response": response,
        "error": error,
        "retryable": code is not None,
        "usage": None,
        "batch_id": f"batch_{attempt}",
        "attempts": attempt + 1,
    }


def stories(n: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "title": f"story {i}"} for i in range(n)]


# --------------------------------------------------------------------------- store


def test_the_standing_row_is_a_success_whenever_it_came_else_the_latest_failure() -> None:
    index = store.Index(sqlite3.connect(":memory:"))
    ok_then_failed, failed_twice = "aa" * 32, "bb" * 32
    index.add(
        [
            store.stored("r0", ok_then_failed, result("yes", attempt=0)),
            store.stored("r1", failed_twice, result(code="server_error", attempt=0)),
        ]
    )
    index.add(
        [
            store.stored("r0", ok_then_failed, result(code="batch_expired", attempt=1)),
            store.stored("r1", failed_twice, result(code="rate_limit_exceeded", attempt=1)),
        ]
    )
    found = index.get([bytes.fromhex(ok_then_failed), bytes.fromhex(failed_twice), b"\0" * 32])
    assert set(found) == {bytes.fromhex(ok_then_failed), bytes.fromhex(failed_twice)}
    assert found[bytes.fromhex(ok_then_failed)]["response"] == "yes"
    latest = found[bytes.fromhex(failed_twice)]
    assert store.failure(latest) == ("rate_limit_exceeded", "rate_limit_exceeded!", 500)
    assert store.attempts(latest) == 2 and not store.final(latest)
    assert store.final(found[bytes.fromhex(ok_then_failed)])


def test_the_index_in_memory_keeps_the_rows_the_sqlite_index_keeps(tmp_path: Path) -> None:
    """store.Memory (a small step's merge) and store.Index (SQLite) read the same answers/
    files and stand by the same row per hash: a success whenever it came, else the latest
    failure, ties to the file read last; a text answer, a cut one, and a non-text one."""
    files = StepDir(tmp_path)
    h = [f"{i:064x}" for i in range(6)]
    store.write(
        files.answers_file("a" * 64, 0),
        [
            store.stored("r0", h[0], result("one")),
            store.stored("r1", h[1], result(code="server_error")),
            store.stored("r2", h[2], result(code="a")),
            store.stored("r3", h[3], result([0.5, {"k": "v"}])),
            store.stored("r4", h[4], {**result("cut"), "cut_short": True}),
            store.stored("r5", h[5], result("first of a tie")),
        ],
    )
    store.write(
        files.answers_file("a" * 64, 1),
        [
            store.stored("r0", h[0], result(code="batch_expired", attempt=1)),
            store.stored("r1", h[1], result("two", attempt=1)),
            store.stored("r2", h[2], result(code="b", attempt=1)),
        ],
    )
    store.write(files.answers_file("b" * 64, 0), [store.stored("r5", h[5], result("tie"))])
    memory, index = store.Memory(), store.Index(sqlite3.connect(":memory:"))
    for kept in (memory, index):
        kept.add_files(files.answer_files())
    keys = [bytes.fromhex(x) for x in h] + [b"\xff" * 32]
    read = memory.answers(keys)
    assert read == index.answers(keys)
    assert [read[k].get("response") for k in keys[:6]] == [
        "one", "two", None, [0.5, {"k": "v"}], "cut", "tie"
    ]  # fmt: skip
    assert store.failure(read[keys[2]]).code == "b" and store.attempts(read[keys[2]]) == 2
    assert read[keys[4]].get("cut_short") is True and keys[6] not in read


def test_rows_are_read_from_the_step_answers_files_named_by_stepdir(tmp_path: Path) -> None:
    files = StepDir(tmp_path)
    assert list(store.rows(files)) == []  # no answers/ yet
    store.write(files.answers_file(CHUNK, 1), [store.stored("b", "01", result("B", attempt=1))])
    store.write(files.answers_file(CHUNK, 0), [store.stored("a", "02", result("A"))])
    assert [p.name for p in files.answer_files()] == [f"{'c' * 32}-0.jsonl", f"{'c' * 32}-1.jsonl"]
    assert [r["custom_id"] for r in store.rows(files)] == ["a", "b"]
    assert store.answers_dir(files.answers) == files
    with pytest.raises(UserError, match="not a step's answers directory"):
        store.answers_dir(tmp_path / "elsewhere")


# --------------------------------------------------------------------------- the merge


def test_an_answer_is_attached_only_to_the_request_it_answers(tmp_path: Path) -> None:
    step = Step(tmp_path, "caption", stories(3))
    sent = step.requests()
    # r1's row carries its custom_id but answers another body (an earlier prompt): not r1's.
    other = {**sent["r1"], "body": {**sent["r1"]["body"], "messages": [{"role": "user"}]}}
    step.answer(
        0,
        [
            store.stored("r0", request_hash(sent["r0"]), result("zero")),
            store.stored("r1", request_hash(other), result("not for r1")),
            # r2's answer is filed under r0's custom_id: the hash finds it for r2 all the same.
            store.stored("r0", request_hash(sent["r2"]), result("two")),
        ],
    )
    done, merged, errors = step.merge()
    assert [r.get("out") for r in merged] == ["zero", None, "two"]
    assert (done.answered, dict(done.failed)) == (2, {"no_result": 1})
    (error,) = errors
    assert (error["custom_id"], error["index"], error["code"]) == ("r1", 1, "no_result")


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_latest_failure_does_not_hide_an_earlier_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    if not in_memory:  # answers over the bound: the on-disk index
        monkeypatch.setattr(store, "IN_MEMORY_BYTES", 0)
    step = Step(tmp_path, "caption", stories(2))
    h0, h1 = (request_hash(r) for r in step.requests().values())
    step.answer(
        0, [store.stored("r0", h0, result("kept")), store.stored("r1", h1, result(code="a"))]
    )
    step.answer(1, [store.stored("r0", h0, result(code="x", attempt=1))])
    step.answer(2, [store.stored("r1", h1, result(code="server_error", attempt=2))])
    done, merged, errors = step.merge()
    assert [r.get("out") for r in merged] == ["kept", None]
    (error,) = errors
    assert error["code"] == "server_error" and error["attempts"] == 3
    assert error["stage"] == "api" and error["status"] == 500 and error["retryable"]
    assert dict(done.failed) == {"server_error": 1}


def test_question_rounds_are_appended_to_the_list_and_the_dialog_history(tmp_path: Path) -> None:
    earlier = [{"question": "Who?", "answer": "A mayor."}]
    records = [
        {"id": "r0", "title": "a", "image_url": "https://example.org/0.jpg"},
        {
            "id": "r1",
            "title": "b",
            "image_url": "https://example.org/1.jpg",
            "qa": earlier,
            "dialog_history": "Question: Who?\nAnswer: A mayor.\n",
        },
        {"id": "r2", "title": "c", "image_url": "https://example.org/2.jpg"},
    ]
    step = Step(tmp_path, "question", records)
    h = [request_hash(r) for r in step.requests().values()]
    step.answer(
        0,
        [
            store.stored("r0", h[0], result("Question: Where? Answer: A harbour.")),
            store.stored("r1", h[1], result(json.dumps({"question": "When?", "answer": "Dawn."}))),
            store.stored("r2", h[2], result("no round in this")),
        ],
    )
    done, merged, errors = step.merge()
    assert merged[0]["qa"] == [{"question": "Where?", "answer": "A harbour."}]
    assert merged[0]["dialog_history"] == "Question: Where?\nAnswer: A harbour.\n"
    assert merged[1]["qa"] == [*earlier, {"question": "When?", "answer": "Dawn."}]
    assert merged[1]["dialog_history"].endswith("Question: When?\nAnswer: Dawn.\n")
    assert "qa" not in merged[2] and [e["code"] for e in errors] == ["invalid_question"]
    assert errors[0]["stage"] == "response" and done.answered == 2


def test_a_json_answer_that_is_not_json_fails_and_merged_json_stays_json(tmp_path: Path) -> None:
    """NaN and Infinity are not JSON: such an answer is invalid_json, never merged as a value
    merged.json could not carry; a number beyond a double is kept as the model wrote it."""
    step = Step(tmp_path, "facts", stories(3))
    h = [request_hash(r) for r in step.requests().values()]
    texts = ['{"score": NaN}', '{"score": 1e400, "tiny": 1e-05}', '{"score": 0.5}']
    step.answer(0, [store.stored(f"r{i}", h[i], result(t)) for i, t in enumerate(texts)])
    done, _, errors = step.merge()
    text = step.files.merged().read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"merged.json holds {name}"))
    assert '"facts":{"score":1e400,"tiny":1e-05}' in text and '"facts":{"score":0.5}' in text
    assert [(e["custom_id"], e["code"]) for e in errors] == [("r0", "invalid_json")]
    assert done.answered == 2


def test_answers_orjson_refuses_are_read_as_before(tmp_path: Path) -> None:
    """The merge reads answers/ through orjson; a row it refuses (a number past a double's
    range, a lone surrogate) is read as before: 1e400 kept as written."""
    step = Step(tmp_path, "caption", stories(2))
    h = [request_hash(r) for r in step.requests().values()]
    path = step.files.answers_file(CHUNK, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [store.stored(f"r{i}", h[i], result(f"text {i}")) for i in range(2)]
    lines = [json.dumps(r) for r in rows]
    lines[1] = lines[1].replace('"text 1"', "[1e400, 0.5]")
    path.write_text("\n".join(lines) + "\n")
    done, merged, _ = step.merge()
    assert merged[0]["out"] == "text 0" and done.answered == 2
    assert '"out":[1e400,0.5]' in step.files.merged().read_text()


def test_a_stored_row_holding_nan_reads_back() -> None:
    """A row holding NaN (a live embedding that held one) is stored as json writes it and
    read back as it was, not refused with a traceback after the call was paid."""
    import math

    index = store.Index(sqlite3.connect(":memory:"))
    row = {"hash": "ab" * 32, "outcome": "succeeded", "response": [float("nan")], "attempts": 1}
    index.add([row])
    h = bytes.fromhex("ab" * 32)
    assert math.isnan(index.get([h])[h]["response"][0])
    assert math.isnan(index.answers([h])[h]["response"][0])


def test_a_record_changed_since_the_requests_were_built_merges_nothing(tmp_path: Path) -> None:
    step = Step(tmp_path, "caption", stories(2))
    step.answer(
        0, [store.stored(c, request_hash(r), result("x")) for c, r in step.requests().items()]
    )
    write_json(step.input, [stories(2)[0], {"id": "r1", "title": "story one, edited"}])
    with pytest.raises(UserError, match=r"1 record\(s\) .* changed .*first: record 1 'r1'"):
        step.merge()
    assert not step.files.merged().exists() and not step.files.errors.exists()


# --------------------------------------------------------------------------- the report


def usage(prompt: int, cached: int, completion: int) -> dict[str, Any]:
    details = {"cached_tokens": cached}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_details": details,
    }


def finished_step(tmp_path: Path) -> StepDir:
    """A step's build files as a finished run leaves them: two chunks, one retried once."""
    files = StepDir(tmp_path / "step")
    files.root.mkdir()
    files.manifest.write_text(files.manifest_text(["001", "002"]))
    body = {"model": "gpt-4o-mini", "messages": []}
    for nnn in ("001", "002"):
        write_jsonl(files.chunk(nnn), [{"custom_id": f"{nnn}-a", "body": body}])
    ok = {**result("yes"), "usage": usage(100, 40, 20)}
    retried = {**result("yes", attempt=1), "usage": usage(50, 0, 10)}
    write_jsonl(files.results("001"), [ok, retried])
    write_jsonl(files.results("002"), [result(code="server_error", attempt=1)])
    files.batch_id("001").write_text("batch_a\n")
    files.retry_id("001", 1).write_text("batch_b\n")
    files.batch_id("002").write_text("batch_c\n")
    files.retry_id("002", 1).write_text("batch_d\n")
    files.retry_id("002", 2).write_text("batch_e\n")  # an attempt the results never recorded
    write_jsonl(files.requests, [{"custom_id": str(i)} for i in range(5)])  # 2 answered before
    write_jsonl(files.skipped, [{"index": 9, "missing": ["title"]}])
    write_jsonl(files.errors, [{"stage": "response", "code": "invalid_json"}, {"stage": "api"}])
    return files


def test_report_totals_come_from_the_files_on_disk(tmp_path: Path) -> None:
    files = finished_step(tmp_path)
    config = load_config(write_yaml(tmp_path / "config.yaml", CONFIG))
    ids = chunk_ids(files)
    assert ids == ["001", "002"]
    r = build(files, ids, config, None, "1")
    first, second = r["chunks"]
    assert [b["id"] for b in first["batches"]] == ["batch_a", "batch_b"]
    assert [b["id"] for b in second["batches"]] == ["batch_c", "batch_d"]
    assert (first["succeeded"], first["retried"], second["failed"]) == (2, 1, 1)
    t = r["total"]
    counts = [t[k] for k in ("requests", "succeeded", "failed", "retried", "batches")]
    assert counts == [3, 2, 1, 2, 4]
    assert t["failed_by_reason"] == {"server_error": 1}
    assert t["invalid_responses_by_reason"] == {"invalid_json": 1}
    assert (t["requests_in_step"], t["reused_answers"], t["skipped_records"]) == (5, 2, 1)
    assert t["tokens_from_responses"] == {"input": 150, "cached": 40, "output": 30}
    assert t["tokens_from_batches"] is None and first["cost_basis"] == "responses"
    expected = (110 * PRICE["input"] + 40 * PRICE["cached_input"] + 30 * PRICE["output"]) / 1e6
    assert t["cost_usd"] == pytest.approx(expected)
    assert t["max_cost_usd"] == 1.0 and r["step"] is None  # offline: the ledger is not priced
    assert spend(r) == [f"spent {usd(t['cost_usd'])} against MAX_COST $1.00 (0% of it)"]


def test_report_offline_writes_report_json_from_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = finished_step(tmp_path)
    config = write_yaml(tmp_path / "config.yaml", CONFIG)
    out = files.report
    argv = ["--dir", str(files.root), "--config", str(config), "--offline", "-o", str(out)]
    assert report.main(argv) == 0
    written = read_json(out)
    assert written == build(files, ["001", "002"], load_config(config), None, "")
    table = capsys.readouterr().out.splitlines()
    assert table[0] == f"report for {files.root}"
    (total,) = [line.split() for line in table if line.startswith("total")]
    assert total[:6] == ["total", "3", "2", "1", "2", "4"]


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_merges_reading_of_a_row_gives_the_values_of_the_row() -> None:
    """Index.answers keeps a text answer apart (no decode of its row at the merge): whatever
    the row, what the merge reads of it is the row's own."""

    rows = [
        {"outcome": "succeeded", "response": "é\u2028x", "attempts": 1, "usage": {"a": 1}},
        {"outcome": "succeeded", "response": "cut", "attempts": 2, "cut_short": True},
        {"outcome": "succeeded", "response": [0.5, 1e-05], "attempts": 1},
        {"outcome": "succeeded", "response": "no attempts"},
        {"outcome": "failed", "response": None, "error": {"code": "x"}, "retryable": True,
         "attempts": 3},
    ]  # fmt: skip
    for i, row in enumerate(rows):
        row.update(custom_id=f"c{i}", hash=f"{i:064x}")
    index = store.Index(sqlite3.connect(":memory:"))
    index.add(rows)
    hashes = [bytes.fromhex(r["hash"]) for r in rows]
    full, read = index.get(hashes), index.answers(hashes)
    assert read[hashes[0]] == {"outcome": "succeeded", "response": "é\u2028x", "attempts": 1}
    for h in hashes:
        for key in ("outcome", "response", "attempts", "cut_short", "retryable", "error"):
            assert read[h].get(key) == full[h].get(key) or key in ("retryable", "error"), key
        assert store.failure(read[h]) == store.failure(full[h])
