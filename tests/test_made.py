"""requests.hashes (br/prompts/made.py): make_requests hashes each request once, and the split
and the merge read the hashes instead of building or hashing every request again, only while
the file describes what is there. Library-level: the real commands' mains, no server."""

from __future__ import annotations

import cProfile
import hashlib
import json
import pstats
import shutil
from pathlib import Path

import make_requests
import merge_results
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
    assert made["requests"] == hashlib.sha256(step.requests.read_bytes()).hexdigest()
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
    else:  # the same requests, other bytes (a line moved)
        lines = step.requests.read_text().splitlines(keepends=True)
        step.requests.write_text("".join([lines[1], lines[0], *lines[2:]]))
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
    # Hashes that are not the requests' (as if the file lied): trusted while it was written for
    # requests.jsonl's bytes, so nothing counts as answered...
    hashes = step.dir / "requests.hashes"
    lines = hashes.read_text().splitlines(keepends=True)
    hashes.write_text("".join(["0" * 64 + " 1\n"] * 3 + lines[-1:]))
    assert "3 request(s) in 2 chunk(s) to send" in split(step, step.dir / "chunks.mk", capsys)
    # ...and not once requests.jsonl holds other bytes (the hashes are computed).
    step.requests.write_bytes(step.requests.read_bytes().replace(b"story 1", b"story 9"))
    assert "1 request(s) in 1 chunk(s) to send; 2 answered before" in split(
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


def test_a_damaged_hashes_file_is_computed_around(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged line: the split and the merge compute what it was to spare, as without it."""
    step = Step(tmp_path, rows(3))
    hashes = step.dir / "requests.hashes"
    lines = hashes.read_text().splitlines(keepends=True)
    hashes.write_text("".join([lines[0], "zz 1\n", *lines[2:]]))
    assert "0 request(s) in 0 chunk(s) to send; 3 answered before" in split(
        step, step.dir / "chunks.mk", capsys
    )
    code, built = profiled_merge(step, capsys)
    assert built > 0
    assert [r["out"] for r in read_json(step.merged)] == [
        f"answer to: Describe story {i}." for i in range(3)
    ]


def test_two_builds_at_once_never_pair_one_files_hashes_with_the_others_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two makes on one step with two configs: B's make_requests runs whole while A's is between
    committing requests.jsonl and requests.hashes, so A's hashes land beside B's requests. The
    split trusts hashes only for the bytes they were written for: each chunk's identities are
    its own lines'."""
    step = Step(tmp_path, rows(4))
    shutil.rmtree(step.dir / "answers")
    other = tmp_path / "other.yaml"
    config = json.loads(json.dumps(CONFIG))
    config["caption"]["user"] = "Summarise {title}."
    other.write_text(yaml.safe_dump(config))
    args = [*step.common, "-o", str(step.requests), "--skipped", str(step.skipped)]
    b_args = [a if a != str(step.config) else str(other) for a in args]
    write = make_requests.write_jsonl

    def b_runs_now(path: Path, rows: list[dict[str, object]]) -> int:
        monkeypatch.setattr(make_requests, "write_jsonl", write)
        assert make_requests.main(b_args) == 0
        return write(path, rows)

    monkeypatch.setattr(make_requests, "write_jsonl", b_runs_now)
    assert make_requests.main(args) == 0  # A, finishing last
    assert "Summarise" in step.requests.read_text()  # B's requests, A's hashes
    split(step, step.dir / "chunks.mk", capsys)
    for chunk in sorted(step.dir.glob("chunk_*.jsonl")):
        info = chunk_info(chunk)
        assert [cid for cid, _ in info.hashes()] == [r["custom_id"] for r in iter_jsonl(chunk)]
        assert [h for _, h in info.hashes()] == [request_hash(r) for r in iter_jsonl(chunk)]


def test_a_local_image_changed_while_the_requests_were_built_is_never_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests.hashes records the images as they were when read: one replaced before
    make_requests ended (its stat then differs from the one recorded) sends the merge back to
    building the requests, which finds the record changed."""
    from PIL import Image

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    Image.new("RGB", (20, 10), (200, 0, 0)).save(data / "img" / "a.png")
    write_json(data / "data.json", [{"id": "r0", "title": "t", "image_url": "img/a.png"}])
    config = tmp_path / "c.yaml"
    step_config = {"user": "Describe {title}.", "response_key": "out", "is_multimodal": True}
    config.write_text(yaml.safe_dump({"model": "gpt-4o-mini", "caption": step_config}))
    out = tmp_path / "step"
    common = ["--input", str(data / "data.json"), "--config", str(config), "--step", "caption"]
    common += ["--data-key", "id", "--images", str(out / "images")]
    write = make_requests.write_jsonl

    def replaced_now(path: Path, rows: list[dict[str, object]]) -> int:
        Image.new("RGB", (20, 10), (0, 0, 200)).save(data / "img" / "a.png")
        return write(path, rows)

    monkeypatch.setattr(make_requests, "write_jsonl", replaced_now)
    requests = out / "requests.jsonl"
    args = [*common, "-o", str(requests), "--skipped", str(out / "skipped.jsonl")]
    assert make_requests.main(args) == 0
    request = next(iter_jsonl(requests))
    write_json(out / "answers" / "results_001.jsonl", [{
        "custom_id": "r0", "hash": request_hash(request), "outcome": "succeeded",
        "response": "a red picture", "error": None,
    }])  # fmt: skip
    capsys.readouterr()
    merge = [*common, "--requests", str(requests), "--answers", str(out / "answers")]
    merge += ["--errors", str(out / "errors.jsonl"), "-o", str(out / "merged.json")]
    assert run(merge_results.main, merge) == 2
    assert "changed since requests.jsonl was built" in capsys.readouterr().err
    assert not (out / "merged.json").exists()
