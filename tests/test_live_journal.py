"""A live run's answers in one append-only journal (br/journal.py): read by the store and by
split's answered_hashes like a batch's answers file, a torn last line (a kill -9 mid-write)
ignored and cut off on the next open, and the count of requests a kill may have paid twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from br import journal
from br.answers import store
from br.batches.split import answered_hashes
from br.layout import StepDir
from conftest import ROOT


def row(h: str, outcome: str = "succeeded") -> dict[str, object]:
    return {"custom_id": h[:4], "hash": h, "outcome": outcome, "response": "yes", "error": None,
            "retryable": False, "usage": None, "batch_id": None, "attempts": 1}  # fmt: skip


H = [f"{i:02x}" * 32 for i in range(6)]


def test_a_torn_last_line_is_ignored_by_readers_and_cut_off_on_the_next_open(
    tmp_path: Path,
) -> None:
    step = StepDir(tmp_path / "step")
    first = step.answers / "live-run-1.jsonl"
    with journal.Journal(first) as log:
        log.sent(H[0])
        log.add([row(H[0])])
        log.sent(H[1])
    with open(first, "ab") as f:  # a kill -9 in the middle of writing H[1]'s answer
        f.write(json.dumps(row(H[1]))[:40].encode())
    # An answer of an earlier version (one file per answer) and a batch attempt's file.
    (step.answers / f"live-{H[2][:32]}.jsonl").write_text(json.dumps(row(H[2])) + "\n")
    (step.answers / f"{'a' * 32}-0.jsonl").write_text(json.dumps(row(H[3])) + "\n")
    assert sorted(r["hash"] for r in store.rows(step)) == sorted([H[0], H[2], H[3]])
    done = answered_hashes(step.answers)
    keys = [bytes.fromhex(h)[:16] for h in H[:4]]
    assert done.contains(keys) == [True, False, True, True]
    size = first.stat().st_size
    with journal.Journal(step.answers / "live-run-2.jsonl", step.live_journals()):
        pass
    text = first.read_bytes()
    assert len(text) < size and text.endswith(b"\n") and text.count(b"\n") == 3


def test_a_journal_being_written_is_not_cut(tmp_path: Path) -> None:
    """Another process still writing its journal (it holds the flock): its tail is left."""
    path = tmp_path / "answers" / "live-run-1.jsonl"
    writer = (
        "import sys, time; sys.path.insert(0, 'scripts'); from pathlib import Path; "
        "from br.journal import Journal; j = Journal(Path(sys.argv[1])); "
        "j.file.write(b'{\"sent\": \"ab'); j.file.flush(); print('ready', flush=True); "
        "time.sleep(30)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        journal.mend([path])
        assert path.read_bytes() == b'{"sent": "ab'
        assert list(journal.lines(path)) == []
    finally:
        proc.kill()
        proc.wait()
    journal.mend([path])  # its writer is gone now
    assert path.read_bytes() == b""


def test_requests_sent_again_after_a_kill_are_counted(tmp_path: Path) -> None:
    answers = tmp_path / "answers"
    killed, later = answers / "live-run-1.jsonl", answers / "live-run-2.jsonl"
    with journal.Journal(killed) as log:
        for h in H[:4]:
            log.sent(h)
        log.add([row(H[0])])  # H[1], H[2], H[3] in flight when it was killed
    assert journal.resent([killed], [killed]) == 0  # nothing was sent again (yet)
    with journal.Journal(later) as log:
        log.sent(H[1])
        log.add([row(H[1])])
        log.sent(H[2])  # sent again, and killed again before its answer
    batch = answers / f"{'b' * 32}-0.jsonl"  # H[3] sent again in a batch
    batch.write_text(json.dumps(row(H[3], "failed")) + "\n")
    assert journal.resent([killed, later], [batch, killed, later]) == 3
