"""requests.hashes (br/prompts/made.py): make_requests hashes each request once, and the split
and the merge read the hashes instead of building or hashing every request again, only while
the file describes what is there. Library-level: the real commands' mains, no server."""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import shutil
from pathlib import Path

import pytest
import split_requests
import yaml
from br.batches.chunk import chunk_info
from br.cli import run
from br.prompts.images.identity import request_hash
from br.prompts.tokens import estimate_tokens
from br.records import iter_jsonl
from conftest import read_json, write_json
from test_input_changes import CONFIG, Step, rows


def hashes_lines(step: Step) -> list[str]:
    return (step.dir / "requests.hashes").read_text().splitlines()


def mixed(tmp_path: Path) -> Step:
    """Answered, failed, unanswered, left out by where:, skipped for a missing field."""
    records = [*rows(3), {"id": "x1", "title": "t", "skip": True}, {"id": "x2"}, *rows(6)[3:]]
    step = Step(tmp_path, records)
    answers = step.dir / "answers" / "results_001.jsonl"
    found = read_json(answers)
    found[1].update(outcome="failed", response=None, error={"code": "server_error"})
    write_json(answers, [r for i, r in enumerate(found) if i != 2])  # r2: no answer came back
    return step


def calls(profile: cProfile.Profile, name: str) -> int:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return sum(v[1] for (_, _, function), v in stats.items() if function == name)


def profiled_merge(step: Step, capsys: pytest.CaptureFixture[str]) -> tuple[int, int]:
    """(exit code, how many times the merge built requests)."""
    profile = cProfile.Profile()
    code, err = profile.runcall(step.merge, capsys)
    assert code == 0, err
    return code, calls(profile, "build_requests")


def test_a_line_per_record_the_hash_of_its_request_or_a_dash(tmp_path: Path) -> None:
    step = mixed(tmp_path)
    lines = hashes_lines(step)
    sent = [f"{request_hash(r)} {estimate_tokens(r['body'])}" for r in iter_jsonl(step.requests)]
    assert lines[:-1] == [sent[0], sent[1], sent[2], "-", "-", *sent[3:]]
    made = json.loads(lines[-1])["made"]
    st = os.stat(step.requests)
    assert made["requests"] == [st.st_ino, st.st_size, st.st_mtime_ns]
    assert made["args"][:2] == ["caption", "id"]
    assert (made["model"], made["endpoint"]) == ("gpt-4o-mini", "/v1/chat/completions")


def test_the_merge_on_the_hashes_writes_what_building_every_request_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = mixed(tmp_path)
    code, built = profiled_merge(step, capsys)
    assert built == 0  # no request built again: the hashes were read
    fast = step.merged.read_bytes(), step.errors.read_bytes()
    merged = read_json(step.merged)
    assert [r.get("out") for r in merged] == [
        "answer to: Describe story 0.", None, None, None, None,
        "answer to: Describe story 3.", "answer to: Describe story 4.",
        "answer to: Describe story 5.",
    ]  # fmt: skip
    codes = [json.loads(line)["code"] for line in step.errors.read_text().splitlines()]
    assert codes == ["server_error", "no_result"]

    (step.dir / "requests.hashes").unlink()
    step.merged.unlink()
    step.errors.unlink()
    code, built = profiled_merge(step, capsys)
    assert built > 0  # every request built again, as before requests.hashes
    assert (step.merged.read_bytes(), step.errors.read_bytes()) == fast


@pytest.mark.parametrize("change", ["a field no prompt uses", "CONFIG's bytes", "requests.jsonl"])
def test_out_of_step_the_merge_builds_every_request_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    """Anything the hashes were not made from: the merge builds the requests (and merges, as
    nothing a request is made of changed)."""
    records = rows(3)
    step = Step(tmp_path, records)
    if change == "a field no prompt uses":
        records[1]["note"] = "added"
        write_json(step.input, records)
    elif change == "CONFIG's bytes":
        step.config.write_text("# a comment\n" + yaml.safe_dump(CONFIG))
    else:
        step.requests.write_bytes(step.requests.read_bytes())  # the same bytes, rewritten
    code, built = profiled_merge(step, capsys)
    assert built > 0
    merged = read_json(step.merged)
    assert [r["out"] for r in merged] == [f"answer to: Describe story {i}." for i in range(3)]
    assert merged[1].get("note") == records[1].get("note")


def split(step: Step, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    args = [str(step.requests), "--answers", str(step.dir / "answers"), "--max-requests", "2"]
    code = run(split_requests.main, [*args, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def test_the_split_reads_the_hashes_only_while_they_describe_requests_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = Step(tmp_path, rows(3))
    assert "0 request(s) in 0 chunk(s) to send; 3 answered before" in split(
        step, step.dir / "chunks.mk", capsys
    )
    # Hashes that are not the requests' (as if the file lied): trusted while it describes
    # requests.jsonl, so nothing counts as answered...
    hashes = step.dir / "requests.hashes"
    lines = hashes.read_text().splitlines(keepends=True)
    hashes.write_text("".join(["0" * 64 + " 1\n"] * 3 + lines[-1:]))
    assert "3 request(s) in 2 chunk(s) to send" in split(step, step.dir / "chunks.mk", capsys)
    # ...and not once requests.jsonl is another file (rewritten: the hashes are computed).
    step.requests.write_bytes(step.requests.read_bytes())
    assert "0 request(s) in 0 chunk(s) to send; 3 answered before" in split(
        step, step.dir / "chunks.mk", capsys
    )


def test_a_request_hashes_the_same_with_or_without_its_line() -> None:
    """request_hash skips the image walk only for a line with no marker, data URL or \\u escape:
    the hash is the one of the walk either way."""
    image = "data:image/png;base64,iVBORw0KGgo="
    marker = "br-image:" + "a" * 64 + ":image/png:8:1x1:/x.png"
    for url in ["https://example.com/a.png", image, marker]:
        body = {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "é"},
            {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
        ]}]}  # fmt: skip
        request = {"custom_id": "a", "url": "/v1/chat/completions", "body": body}
        for line in [json.dumps(request), json.dumps(request, ensure_ascii=False)]:
            assert request_hash(request, line) == request_hash(request)
    assert request_hash({"url": "u", "body": {"messages": [{"content": [
        {"type": "image_url", "image_url": {"url": image}}]}]}}) != request_hash(
        {"url": "u", "body": {"messages": [{"content": [
            {"type": "image_url", "image_url": {"url": "x" + image}}]}]}})  # fmt: skip


def test_the_split_writes_each_chunks_identities_for_its_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """chunk_NNN.info holds what chunk_info would read and hash each line for: read instead,
    and only for the bytes it was written for."""
    records = [*rows(5), {"id": "x1", "title": "t", "skip": True}, {"id": "x2"}]
    step = Step(tmp_path, records)
    shutil.rmtree(step.dir / "answers")  # nothing answered: every request is in a chunk
    split(step, step.dir / "chunks.mk", capsys)
    chunks = sorted(step.dir.glob("chunk_*.jsonl"))
    assert [p.name for p in sorted(step.dir.glob("chunk_*.info"))] == [
        "chunk_001.info", "chunk_002.info", "chunk_003.info",
    ]  # fmt: skip
    from_info = [chunk_info(p) for p in chunks]
    for p in step.dir.glob("chunk_*.info"):
        p.rename(p.with_suffix(".kept"))
    read = [chunk_info(p) for p in chunks]
    assert from_info == read  # the same identities, hashes and tokens
    assert [cid for info in read for cid in info.ids] == [f"r{i}" for i in range(5)]
    # An info file is trusted for its chunk's bytes: a lie in it is believed...
    kept = step.dir / "chunk_001.kept"
    info = json.loads(kept.read_text())
    (step.dir / "chunk_001.info").write_text(json.dumps({**info, "ids": ["a", "b"]}))
    assert chunk_info(chunks[0]).ids == ("a", "b")
    # ...and an edited chunk is read from its bytes.
    lines = chunks[0].read_text().splitlines(keepends=True)
    chunks[0].write_text(lines[0])
    assert chunk_info(chunks[0]).ids == ("r0",)


def test_a_damaged_hashes_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = Step(tmp_path, rows(2))
    hashes = step.dir / "requests.hashes"
    st = os.stat(step.requests)
    lines = hashes.read_text().splitlines(keepends=True)
    hashes.write_text("".join(["zz 1\n", *lines[1:]]))
    os.utime(step.requests, ns=(st.st_atime_ns, st.st_mtime_ns))
    capsys.readouterr()
    args = [str(step.requests), "--answers", str(step.dir / "answers")]
    assert run(split_requests.main, [*args, "-o", str(step.dir / "chunks.mk")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "requests.hashes:1 is damaged" in err[0], err
