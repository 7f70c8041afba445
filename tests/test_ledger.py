"""The submission ledger (br/batches/ledger.py), read back from its file: no server."""

from __future__ import annotations

import json
from pathlib import Path

from br.batches.ledger import Ledger


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_an_intent_without_its_answer_is_the_one_thing_a_rerun_asks_about(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.record("upload", phase="intent", sha="s1", chunk="c1", filename="f", bytes=9)
    ledger.record("upload", phase="done", sha="s1", file_id="file-1")
    ledger.record("create", phase="intent", sha="s1", attempt=0, file_id="file-1", metadata={})
    ledger.record("create", phase="done", sha="s1", attempt=0, batch_id="b1", chunk="c1")
    ledger.record("upload", phase="intent", sha="s2", chunk="c2", filename="g", bytes=9)
    ledger.record("upload", phase="done", sha="s2", file_id="file-2")
    ledger.record("create", phase="intent", sha="s2", attempt=0, file_id="file-2", metadata={})

    again = Ledger(path)
    assert [(e["op"], e.get("phase")) for e in lines(path)][:2] == [
        ("upload", "intent"),
        ("upload", "done"),
    ]
    assert again.uploads == {"s1": "file-1", "s2": "file-2"} and not again.upload_intents
    assert again.live("s1", 0) == "b1" and again.live("s2", 0) is None
    assert again.chunk_of == {"b1": ("s1", 0, "c1")}
    unknown = again.unknown()
    assert [(sha, attempt) for sha, attempt, _ in unknown] == [("s2", 0)]
    assert unknown[0][2] == lines(path)[-1]["at"]  # asked about back to its moment only
    assert again.unfetched() == ["b1"]


def test_a_refused_create_is_known_and_a_failed_batch_is_not_live(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.record("create", phase="intent", sha="s", attempt=0, file_id="f", metadata={})
    ledger.record("create", phase="refused", sha="s", attempt=0, error="400 bad model")
    assert Ledger(path).unknown() == [] and Ledger(path).live("s", 0) is None

    ledger.record("create", phase="done", sha="s", attempt=0, batch_id="b1")
    ledger.record("ended", batch_id="b1", status="failed")
    ledger.record("create", phase="done", sha="s", attempt=0, batch_id="b2")
    ledger.record("ended", batch_id="b2", status="completed")
    ledger.record("fetched", batch_id="b2")
    again = Ledger(path)
    assert again.create("s", 0).batches == ["b1", "b2"]
    assert again.live("s", 0) == "b2" and not again.usable("b1")
    assert again.unfetched() == []  # b1 failed: nothing to fetch; b2 fetched

    ledger.record("lost", batch_id="b2")  # RESEND=1: its results were gone
    assert Ledger(path).live("s", 0) is None


def test_a_torn_last_line_is_skipped_and_the_next_entry_still_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    Ledger(path).record("upload", phase="done", sha="s1", file_id="file-1")
    with open(path, "ab") as f:  # a kill in the middle of a write
        f.write(b'{"at": 1, "op": "create", "phase": "done", "sha": "s1", "attem')
    torn = Ledger(path)
    assert torn.uploads == {"s1": "file-1"} and torn.chunk_of == {}

    torn.record("create", phase="done", sha="s1", attempt=0, batch_id="b1")
    again = Ledger(path)
    assert again.live("s1", 0) == "b1"
    assert again.uploads == {"s1": "file-1"}
    assert path.read_bytes().endswith(b"\n")


def test_tidied_files_are_no_longer_uploads(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.record("upload", phase="done", sha="s1", file_id="file-1")
    ledger.record("create", phase="done", sha="s1", attempt=0, batch_id="b1")
    ledger.record("tidied", batch_id="b1", files=["file-1", "file-out"])
    again = Ledger(path)
    assert again.uploads == {} and again.tidied == {"b1"}
    # A resend after tidy uploads again (its old file is gone) rather than naming a lost one.
    assert again.live("s1", 0) == "b1"
