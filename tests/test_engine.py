"""The submission engine at scale: a full queue from a plain `make caption`, a ledger instead of
account scans, concurrent runs that pay once, no paid batch abandoned, servers that vary.

Evidence is the emulator's own counts: batches created, requests processed, calls per route.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import ROOT, Emulator, input_dir, make, read_json, write_json

CONFIG = """\
model: gpt-4o-mini
describe:
  is_multimodal: false
  user: 'Summarise: {text}'
  response_key: summary
"""


class Job:
    """A text-only dataset of n records, a config and a BUILD dir: `make caption` on them."""

    def __init__(
        self, root: Path, n: int, per_chunk: int = 10, marker: dict[int, str] | None = None
    ):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.input = root / "stories.json"
        self.config = root / "config.yaml"
        self.config.write_text(CONFIG)
        self.build = root / "build"
        self.per_chunk = per_chunk
        self.write(
            [f"story {i}" + (f" {(marker or {}).get(i, '')}" if marker else "") for i in range(n)]
        )

    def write(self, texts: list[str]) -> None:
        write_json(self.input, [{"id": f"r{i:03d}", "text": t} for i, t in enumerate(texts)])

    @property
    def b(self) -> Path:
        return input_dir(self.build, self.input) / "describe"

    def variables(self, **extra: Any) -> dict[str, Any]:
        return {
            "BUILD": self.build,
            "INPUT": self.input,
            "CONFIG": self.config,
            "STEP": "describe",
            "DATA_KEY": "id",
            "MAX_REQUESTS": self.per_chunk,
            **extra,
        }

    def make(
        self, emu: Emulator, check: bool = True, **extra: Any
    ) -> subprocess.CompletedProcess[str]:
        return make("caption", env=emu.env(), check=check, **self.variables(**extra))

    def start(
        self, emu: Emulator, env: dict[str, str] | None = None, **extra: Any
    ) -> subprocess.Popen[str]:
        """`make caption` in the background, in a session of its own (see `kill_all`)."""
        args = ["make", "--no-print-directory", "caption"]
        args += [f"{k}={v}" for k, v in self.variables(**extra).items()]
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=env or emu.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def merged(self) -> list[dict[str, Any]]:
        return read_json(self.b / "merged.json")


def calls(emu: Emulator) -> Counter[str]:
    return Counter(emu.stats()["calls"])


def live_per_chunk(emu: Emulator) -> Counter[tuple[str, str]]:
    return Counter(
        (b.metadata["br_chunk_sha256"], b.metadata["br_attempt"])
        for b in emu.batches()
        if b.status not in ("failed", "cancelled")
    )


def ledger_batches(emu: Emulator, b: Path) -> list[Any]:
    """The batches a step's ledger names, retrieved one by one (for servers that cannot list)."""
    ids = set()
    for line in (b / "ledger.jsonl").read_text().splitlines():
        ids.add(json.loads(line).get("batch_id"))
    client = emu.client()
    return [client.batches.retrieve(i) for i in sorted(x for x in ids if x)]


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def kill_all(run: subprocess.Popen[str]) -> None:
    """kill -9 of make and every script it runs (a crash, a machine going down)."""
    import os
    import signal

    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def finish(run: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = run.communicate(timeout=300)
    return run.returncode, err


# ----------------------------------------------------------------------------- the queue


def test_a_plain_make_caption_has_every_batch_in_flight_before_any_ends(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "3").start()
    try:
        job = Job(tmp_path, 30)
        job.make(emu)
        batches = emu.batches()
        assert len(batches) == 3
        # Every batch was created before the first one completed: the queue was full.
        assert max(b.created_at for b in batches) <= min(b.completed_at for b in batches)
        assert sum("summary" in r for r in job.merged()) == 30
    finally:
        emu.stop()


def test_calls_per_chunk_are_constant_and_a_rerun_asks_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    job = Job(tmp_path, 40)
    job.make(emulator)
    first = calls(emulator)
    # Per chunk: one upload, one create, its polls, its downloads; no listing of the files.
    assert first["POST /v1/files"] == 4 and first["POST /v1/batches"] == 4
    assert first.get("GET /v1/files", 0) == 0
    downloads = first["GET /v1/files/{id}/content"]
    assert 4 <= downloads <= 8  # an output file, and an error file where there is one
    ledger = [json.loads(line) for line in (job.b / "ledger.jsonl").read_text().splitlines()]
    ops = Counter((e["op"], e.get("phase")) for e in ledger)
    assert ops[("upload", "intent")] == ops[("upload", "done")] == 4
    assert ops[("create", "intent")] == ops[("create", "done")] == 4
    assert ops[("fetched", None)] == 4
    # A rerun of a finished step: no call at all, not even a listing.
    emulator.admin("reset_stats", {})
    job.make(emulator)
    assert sum(calls(emulator).values()) == 0
    # Results deleted: rebuilt from answers/ without a call either.
    for path in job.b.glob("results_*.jsonl"):
        path.unlink()
    job.make(emulator)
    assert sum(calls(emulator).values()) == 0


def test_the_schedule_of_polls_for_a_day_long_batch() -> None:
    from br.batches.polling import interval

    age, polls, late = 1.0, 0, 0.0
    while age < 86400:
        step = interval(age)
        late = max(late, step / max(60.0, 0.05 * age))
        age += step
        polls += 1
    assert polls <= 125  # the bound max(60 s, 5% of the age) itself needs about 110
    assert late <= 1.0 + 1e-9
    assert interval(0) >= 1.0  # never two calls back to back


def test_a_batch_whose_counts_say_it_ends_soon_is_polled_sooner() -> None:
    from types import SimpleNamespace

    from br.batches.polling import interval, next_poll

    def batch(done: int, status: str = "in_progress") -> SimpleNamespace:
        counts = SimpleNamespace(completed=done, failed=0, total=100)
        return SimpleNamespace(
            status=status, created_at=0.0, in_progress_at=0.0, request_counts=counts
        )

    assert next_poll(batch(50), 100.0) == interval(100.0) == 50.0  # ends in 100 s: no sooner
    assert next_poll(batch(99), 3600.0) == interval(3600.0) / 4  # ends in 36 s: at most 4x
    assert next_poll(batch(96), 3600.0) == 3600.0 * 4 / 96  # ends in 150 s, not 180
    assert next_poll(batch(100, "finalizing"), 3600.0) == interval(3600.0)
    assert next_poll(batch(0), 3600.0) == interval(3600.0)  # no rate yet
    # Stalled at 99 since the last poll: the schedule, not a quarter of it, until it ends.
    assert next_poll(batch(99), 3600.0, done_before=99) == interval(3600.0)
    age, polls, done_before = 600.0, 0, -1
    while age < 86400:
        age += next_poll(batch(99), age, done_before)
        done_before, polls = 99, polls + 1
    assert polls <= 100  # the schedule from ten minutes on; at a quarter of it: about 300


# ----------------------------------------------------------------------------- concurrency


def test_two_runs_of_one_job_at_once_pay_once(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults(processing_seconds=1.0)
    job = Job(tmp_path / "one", 30)
    other = Job(tmp_path / "two", 30)  # a second checkout: same records, another build dir
    other.input.write_bytes(job.input.read_bytes())
    runs = [job.start(emulator), job.start(emulator), other.start(emulator)]
    for run in runs:
        code, err = finish(run)
        assert code == 0, err
    per_chunk = live_per_chunk(emulator)
    assert len(per_chunk) == 3 and set(per_chunk.values()) == {1}, per_chunk
    assert emulator.stats()["requests_processed"] == 30
    assert sum("summary" in r for r in job.merged()) == 30
    assert sum("summary" in r for r in other.merged()) == 30


def test_two_machines_the_newer_duplicate_is_cancelled(emulator: Emulator, tmp_path: Path) -> None:
    """Two state dirs stand for two machines: no lock reaches across, so both create; the
    first poll's list page shows two live batches for one chunk, and the newer is cancelled.
    Each run may win some chunks and lose others: both finish, nothing is sent again."""
    emulator.faults(processing_seconds=2.0)
    a, b = Job(tmp_path / "a", 30), Job(tmp_path / "b", 30)
    b.input.write_bytes(a.input.read_bytes())
    runs = [
        a.start(emulator, env=emulator.env(BR_STATE_DIR=str(tmp_path / "machine-a"))),
        b.start(emulator, env=emulator.env(BR_STATE_DIR=str(tmp_path / "machine-b"))),
    ]
    results = [finish(run) for run in runs]
    batches = emulator.batches()
    statuses = Counter(x.status for x in batches)
    assert statuses["completed"] == 3 and statuses["cancelled"] == len(batches) - 3, statuses
    assert any("two batches for one chunk" in err for _, err in results)
    assert [code for code, _ in results] == [0, 0], results
    assert all(sum("summary" in r for r in j.merged()) == 30 for j in (a, b))
    assert live_per_chunk(emulator) == Counter(dict.fromkeys(live_per_chunk(emulator), 1))
    assert not list(a.b.glob("retry_*")) and not list(b.b.glob("retry_*"))


def test_a_duplicate_that_already_ended_is_not_cancelled(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Another machine ran the job to the end; this one, knowing nothing of it, sends the chunk
    and its batch ends before the first poll: both batches are paid for, and a cancel can only
    be refused (409, which the SDK would retry for seconds). None is sent."""
    emulator.faults(validating_seconds=0, processing_seconds=0, finalizing_seconds=0)
    a, b = Job(tmp_path / "a", 10), Job(tmp_path / "b", 10)
    b.input.write_bytes(a.input.read_bytes())
    make("caption", env=emulator.env(BR_STATE_DIR=str(tmp_path / "a-state")), **a.variables())
    done = make(
        "caption", env=emulator.env(BR_STATE_DIR=str(tmp_path / "b-state")), **b.variables()
    )
    assert "error" not in done.stderr, done.stderr
    assert calls(emulator)["POST /v1/batches/{id}/cancel"] == 0
    assert sum("summary" in r for r in b.merged()) == 10


def test_a_duplicate_given_up_frees_its_token_budget(emulator: Emulator, tmp_path: Path) -> None:
    """A second machine sends the chunks again, finds the first machine's batches and cancels
    its own: their reservations go with them, so a budget of two chunks still runs all three."""
    first = Job(tmp_path / "first", 30)
    first.make(emulator)
    tokens = int(emulator.batches()[0].metadata["br_est_tokens"])
    other = Job(tmp_path / "other", 30)
    other.input.write_bytes(first.input.read_bytes())
    env = emulator.env(BR_STATE_DIR=str(tmp_path / "machine-2"))
    run = other.start(emulator, env=env, TOKEN_BUDGET=2 * tokens + tokens // 2)
    _, err = run.communicate(timeout=120)  # a leaked reservation would wait here forever
    assert run.returncode == 0, err
    assert sum("summary" in r for r in other.merged()) == 30
    assert emulator.stats()["requests_processed"] <= 30 + 3 * 10


def test_a_create_killed_unanswered_then_build_deleted_pays_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    """kill -9 while a create is on the wire, then rm -rf build/: the machine index holds the
    create's intent, so the fresh run asks the server about it and adopts the batch."""
    import shutil

    job = Job(tmp_path, 10)
    emulator.faults(response_delay={"POST /v1/batches": 3})
    run = job.start(emulator)
    deadline = time.monotonic() + 60
    ledger = job.b / "ledger.jsonl"
    while not (ledger.exists() and '"op":"create","phase":"intent"' in ledger.read_text()):
        assert time.monotonic() < deadline, "no create was sent"
        time.sleep(0.02)
    kill_all(run)
    emulator.faults(response_delay={})
    shutil.rmtree(job.build)
    time.sleep(3.5)  # the create takes effect on the server; only its answer was lost
    job.make(emulator)
    assert len(emulator.batches()) == 1
    assert sum("summary" in r for r in job.merged()) == 10


# ----------------------------------------------------------------------------- nothing abandoned


def test_editing_a_record_while_its_batch_runs_pays_only_for_that_record(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "4").start()
    try:
        job = Job(tmp_path, 20, per_chunk=20)
        run = job.start(emu)
        wait_for(job.b / "batch_001.id")
        kill_all(run)
        texts = [f"story {i}" for i in range(20)]
        texts[7] = "story 7, edited"
        job.write(texts)
        job.make(emu)
        assert emu.stats()["requests_processed"] == 21  # the old 20, and the edited one
        merged = job.merged()
        assert sum("summary" in r for r in merged) == 20
        assert "edited" in merged[7]["summary"] and "edited" not in merged[6]["summary"]
        assert len(emu.batches()) == 2
        assert (job.b / "superseded").is_dir() or (job.b / "batch_001.id").exists()
    finally:
        emu.stop()


def test_an_empty_input_keeps_the_record_of_paid_batches(
    emulator: Emulator, tmp_path: Path
) -> None:
    job = Job(tmp_path, 10)
    job.make(emulator)
    batch_id = (job.b / "batch_001.id").read_text().strip()
    job.input.write_text("[]")
    result = job.make(emulator)
    assert "holds no requests" in result.stderr
    assert not (job.b / "batch_001.id").exists()
    kept = [p.read_text().strip() for p in (job.b / "superseded").glob("*batch_001.id")]
    assert kept == [batch_id]
    assert batch_id in (job.b / "ledger.jsonl").read_text()


# ----------------------------------------------------------------------------- servers that vary


def test_a_server_without_listings_works_from_the_ledger(tmp_path: Path) -> None:
    emu = Emulator(
        tmp_path / "emu", "--processing-seconds", "0.3", "--no-file-listing", "--no-batch-listing"
    ).start()
    try:
        job = Job(tmp_path, 25)
        job.make(emu)
        assert sum("summary" in r for r in job.merged()) == 25
        assert [b.status for b in ledger_batches(emu, job.b)] == ["completed"] * 3
    finally:
        emu.stop()


def test_an_unanswered_create_on_a_server_without_listing_stops_with_the_ways_forward(
    tmp_path: Path,
) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "0.3", "--no-batch-listing").start()
    try:
        job = Job(tmp_path, 10)
        emu.faults(
            http_error_rate=1.0,
            http_error_kinds=["drop_after"],
            http_error_routes=["POST /v1/batches"],
        )
        result = job.make(emu, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert "cannot list batches" in result.stderr
        emu.faults(http_error_rate=0.0)
        again = job.make(emu, check=False)
        assert again.returncode != 0
        line = [x for x in again.stderr.splitlines() if x.startswith("error:")][0]
        assert "chunk_001.jsonl" in line and "RESEND=1" in line and "batch_001.id" in line
        assert emu.stats()["batches_created"] == 1  # nothing sent behind the user's back
        # The first way forward: the batch id, found by hand, written to the id file.
        emu.faults(no_batch_listing=False)  # the user's look at the dashboard
        found = emu.client().batches.list().data[0].id
        emu.faults(no_batch_listing=True)
        (job.b / "batch_001.id").write_text(found + "\n")
        job.make(emu)
        assert emu.stats()["batches_created"] == 1
        assert sum("summary" in r for r in job.merged()) == 10
    finally:
        emu.stop()


def test_metadata_not_echoed_warns_once(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "0.3", "--drop-metadata").start()
    try:
        job = Job(tmp_path, 30)
        result = job.make(emu)
        assert result.stderr.count("does not echo batch metadata") == 1
        assert sum("summary" in r for r in job.merged()) == 30
    finally:
        emu.stop()


def test_an_error_line_without_status_or_code_uses_the_status_in_its_message(
    tmp_path: Path,
) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "0.3", "--bare-error-lines").start()
    try:
        job = Job(
            tmp_path,
            10,
            marker={3: "EMULATOR_ERROR:context_length_exceeded", 5: "EMULATOR_ERROR:500"},
        )
        job.make(emu, RETRIES=3)
        errors = {e["custom_id"]: e for e in read_json(job.b / "errors.jsonl")}
        assert errors["r003"]["status"] == 400 and errors["r003"]["attempts"] == 1
        assert errors["r005"]["status"] == 500 and errors["r005"]["attempts"] == 4
        assert emu.stats()["requests_processed"] == 10 + 3  # the 400 sent once, the 500 four times
    finally:
        emu.stop()


def test_a_batch_that_never_ends_is_given_up_with_one_line(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--never-end").start()
    try:
        job = Job(tmp_path, 10)
        # The 24-hour window, shrunk for the test: give up 3 s after creation.
        result = make(
            "caption", env=emu.env(BR_GIVE_UP_GRACE=str(3 - 86400)), check=False, **job.variables()
        )
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert "past its 24-hour window" in result.stderr and "make cancel" in result.stderr
        polls = emu.stats()["calls"].get("GET /v1/batches/{id}", 0) + emu.stats()["calls"].get(
            "GET /v1/batches", 0
        )
        assert polls < 30
    finally:
        emu.stop()


def test_a_cancelled_batch_without_output_is_sent_again_and_says_so(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "30", "--no-output-on-cancel").start()
    try:
        job = Job(tmp_path, 10)
        run = job.start(emu)
        wait_for(job.b / "batch_001.id")
        emu.client().batches.cancel((job.b / "batch_001.id").read_text().strip())
        code, err = finish(run)
        assert code != 0 and "left no output file" in err
        emu.faults(processing_seconds=0.3)
        result = job.make(emu)
        assert "will be sent again" in result.stderr
        assert sum("summary" in r for r in job.merged()) == 10
    finally:
        emu.stop()


def test_make_cancel_then_one_rerun_sends_the_rest(tmp_path: Path) -> None:
    """The run is gone (Ctrl+C, a closed terminal), `make cancel` says "rerun to send the
    rest": the next run sends it, not only the one after."""
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "30").start()
    try:
        job = Job(tmp_path, 10)
        run = job.start(emu)
        wait_for(job.b / "batch_001.id")
        kill_all(run)
        out = make("cancel", env=emu.env(), **job.variables())
        assert "cancelled 1 batch(es)" in out.stdout
        emu.faults(processing_seconds=0.3)
        job.make(emu)
        assert len(emu.batches()) == 2
        assert sum("summary" in r for r in job.merged()) == 10
    finally:
        emu.stop()


# ----------------------------------------------------------------------------- what comes back


def test_unicode_line_separators_in_records_and_answers_come_back(
    emulator: Emulator, tmp_path: Path
) -> None:
    job = Job(tmp_path, 6)
    texts = ["a\u2028b", "c\u2029d", "e\u0085f", "plain", "g\rh", "i\x0bj"]
    job.write(texts)
    job.make(emulator)
    merged = job.merged()
    assert all("summary" in r for r in merged), merged
    for record, text in zip(merged, texts, strict=True):
        assert text in record["summary"]  # the emulator echoes the prompt: each got its own
    assert read_json(job.b / "errors.jsonl") == []


def test_a_damaged_output_line_is_an_error_row_not_a_crash() -> None:
    from br.batches.openai import outcome, parse_line, split_lines

    raw = b'{"custom_id": "r1", "response": {"status_code": 200, "body": {}}}\n'
    raw += b'{"custom_id": "r2", "response": {"status_co\n\n{"custom_id": "r3"\xe2\x80\xa8}\n'
    lines = [parse_line(x, n) for n, x in enumerate(split_lines(iter([raw[:30], raw[30:]])), 1)]
    lines = [x for x in lines if x is not None]
    # r2 is cut short; r3 holds a raw U+2028 where JSON allows none: both damaged, both named.
    assert [x["custom_id"] for x in lines] == ["r1", "r2", "r3"]
    for line in lines[1:]:
        row = outcome(line)
        assert row["outcome"] == "failed" and row["error"]["code"] == "unparseable_line"
        assert row["retryable"]


def test_an_output_line_reads_as_json_reads_it() -> None:
    """Output lines go through orjson, and fall back to json for what orjson refuses: NaN, a
    lone surrogate, bytes that are not UTF-8 (replaced, as before). Each reads as json reads
    it (a number past a double's range kept as written), and a line that is not an object is
    damaged."""
    from br.batches.openai import parse_line
    from br.records import dumps

    texts = [
        '{"custom_id": "r1", "response": {"status_code": 200, "body": {"n": 0.1, "m": -0}}}',
        '{"custom_id": "r2", "x": 1, "x": 2, "s": "\\u00e9\\ud83d\\ude00\\n"}',
        '{"custom_id": "r4", "text": "\\ud800 alone"}',
        '{"custom_id": "r5", "n": 18446744073709551615}',
    ]
    for n, text in enumerate(texts, 1):
        assert parse_line(text.encode(), n) == json.loads(text)
    odd = parse_line(b'{"custom_id": "r3", "usage": {"t": NaN, "u": 1e400}}', 3)
    assert dumps(odd) == '{"custom_id":"r3","usage":{"t":NaN,"u":1e400}}'  # 1e400 as written
    raw = b'{"custom_id": "r6", "text": "\xff\xfe"}'
    assert parse_line(raw, 6) == {"custom_id": "r6", "text": "\ufffd\ufffd"}
    assert parse_line(b'["r7"]', 7)["error"]["code"] == "unparseable_line"


def test_two_jobs_at_once_share_one_token_budget(tmp_path: Path) -> None:
    """The budget counts every run on the machine: two different jobs, each allowed the whole
    limit, never push the server over it together."""
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "0.5", "--token-limit", "160").start()
    try:
        a, b = Job(tmp_path / "a", 40), Job(tmp_path / "b", 40)
        b.write([f"other story {i}" for i in range(40)])
        runs = [a.start(emu, TOKEN_BUDGET=160), b.start(emu, TOKEN_BUDGET=160)]
        for run in runs:
            code, err = finish(run)
            assert code == 0, err
        assert [x for x in emu.batches() if x.status == "failed"] == []
        assert sum("summary" in r for r in a.merged() + b.merged()) == 80
    finally:
        emu.stop()


def test_a_busy_account_costs_no_more_calls_per_chunk(emulator: Emulator, tmp_path: Path) -> None:
    """5,000 batches and 5,000 files of the last hour on the account: a 10-chunk job lists no
    file and reads about one batch-list page per chunk at most (polls that serve every chunk);
    after deleting build/, the rerun adopts every batch from the machine's index."""
    emulator.admin("seed", {"batches": 5000, "files": 5000, "age_seconds": 3600})
    emulator.admin("reset_stats", {})
    job = Job(tmp_path, 100)
    job.make(emulator)
    first = calls(emulator)
    assert first["POST /v1/batches"] == 10 and first["POST /v1/files"] == 10
    assert first.get("GET /v1/files", 0) == 0
    assert first.get("GET /v1/batches", 0) <= 10, first
    emulator.admin("reset_stats", {})
    job.make(emulator)  # the ledger present, everything done: nothing asked
    assert sum(calls(emulator).values()) == 0
    before = job.merged()
    import shutil

    shutil.rmtree(job.build)
    job.make(emulator)
    again = calls(emulator)
    assert again.get("POST /v1/batches", 0) == 0 and again.get("POST /v1/files", 0) == 0
    assert again.get("GET /v1/files", 0) == 0 and again.get("GET /v1/batches", 0) <= 10, again
    assert job.merged() == before
    assert emulator.stats()["requests_processed"] == 100
    print(
        f"\n[busy account] first run: {dict(first)}\n[busy account] build/ deleted: {dict(again)}"
    )


def test_more_than_a_page_in_flight_is_polled_by_list_pages_not_one_by_one(
    tmp_path: Path,
) -> None:
    """120 chunks in flight at once: each poll reads the list pages that hold the due ones,
    rather than a status call for each. A poll retrieves on its own at most the one due
    batch off the pages it read (a page would cost the same), and the last batch in flight,
    so the run costs fewer status calls than one per batch however many polls a slow machine
    makes."""
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "4").start()
    try:
        job = Job(tmp_path, 120, per_chunk=1)
        make("caption", env=emu.env(BR_POLL_MIN="1.5"), **job.variables())
        counts = calls(emu)
        assert counts["POST /v1/batches"] == 120
        pages, alone = counts["GET /v1/batches"], counts.get("GET /v1/batches/{id}", 0)
        assert pages >= 2, counts
        assert pages + alone < 120, counts  # one by one: 120 or more; quiet: about 10 and 2
        print(f"\n[120 in flight] {dict(counts)}")
        assert sum("summary" in r for r in job.merged()) == 120
    finally:
        emu.stop()


# ----------------------------------------------------------------------------- housekeeping


def test_tidy_deletes_only_the_files_of_fetched_batches(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "0.3").start()
    try:
        done = Job(tmp_path / "done", 20)
        done.make(emu)
        files_before = {f.id for f in emu.client().files.list()}
        dry = make("tidy", env=emu.env(), DRY_RUN=1, **done.variables())
        assert dry.stdout.count("would delete") == 4  # 2 batches: input and output files
        assert {f.id for f in emu.client().files.list()} == files_before
        out = make("tidy", env=emu.env(), **done.variables())
        deleted = {
            line.split()[1] for line in out.stdout.splitlines() if line.startswith("deleted")
        }
        assert len(deleted) == 4 and deleted <= files_before
        assert {f.id for f in emu.client().files.list()} == files_before - deleted
        emu.admin("reset_stats", {})
        make("tidy", env=emu.env(), **done.variables())  # a second tidy asks nothing
        assert sum(calls(emu).values()) == 0
        done.make(emu)  # the step stays done: nothing is fetched or sent again
        assert sum(calls(emu).values()) == 0
        # A step whose batch is still running keeps its files.
        emu.faults(processing_seconds=60)
        running = Job(tmp_path / "running", 10)
        run = running.start(emu)
        wait_for(running.b / "batch_001.id")
        kill_all(run)
        before = {f.id for f in emu.client().files.list()}
        out = make("tidy", env=emu.env(), **running.variables())
        assert "kept" in out.stdout and "deleted" not in out.stdout.replace("deleted 0", "")
        assert {f.id for f in emu.client().files.list()} == before
    finally:
        emu.stop()


def test_tidy_keeps_a_file_a_running_batch_shares_and_results_gone_with_build_are_resent_on_ask(
    tmp_path: Path,
) -> None:
    """A batch cancelled and sent again reuses its uploaded file: tidying the cancelled one
    must not delete the input of the one running. And after tidy, build/ deleted: the batches
    are adopted but their output is gone; the run says so, and RESEND=1 pays for them again."""
    emu = Emulator(tmp_path / "emu", "--processing-seconds", "60").start()
    try:
        job = Job(tmp_path / "job", 10)
        run = job.start(emu)
        wait_for(job.b / "batch_001.id")
        make("cancel", env=emu.env(), **job.variables())
        finish(run)  # the run sees its batch cancelled outside it
        run = job.start(emu)
        deadline = time.monotonic() + 60
        while len(emu.batches()) < 2:
            assert time.monotonic() < deadline and run.poll() is None, "no second batch"
            time.sleep(0.05)
        running = next(b for b in emu.batches() if b.status not in ("cancelled", "cancelling"))
        out = make("tidy", env=emu.env(), **job.variables())
        assert f"kept    {running.id}" in out.stdout
        emu.client().files.retrieve(running.input_file_id)  # still there
        kill_all(run)
    finally:
        emu.stop()

    emu = Emulator(tmp_path / "emu2", "--processing-seconds", "0.2").start()
    try:
        job = Job(tmp_path / "again", 20)
        job.make(emu)
        before = job.merged()
        make("tidy", env=emu.env(), **job.variables())
        import shutil

        shutil.rmtree(job.build)
        lost = job.make(emu, check=False)
        assert lost.returncode != 0 and "Traceback" not in lost.stderr
        assert "gone from the server" in lost.stderr and "RESEND=1" in lost.stderr
        assert emu.stats()["batches_created"] == 2
        job.make(emu, RESEND=1)
        assert emu.stats()["batches_created"] == 4
        assert job.merged() == before
        # build/ deleted once more: the resent batches are adopted, and the tidied ones,
        # older, are not taken for the batches to keep.
        shutil.rmtree(job.build)
        job.make(emu)
        assert emu.stats()["batches_created"] == 4
        assert Counter(b.status for b in emu.batches()) == {"completed": 4}
        assert job.merged() == before
        emu.admin("reset_stats", {})
        job.make(emu)  # done: nothing asked
        assert sum(calls(emu).values()) == 0
    finally:
        emu.stop()


def test_an_embeddings_split_keeps_each_batch_under_50000_inputs(tmp_path: Path) -> None:
    from split_requests import main as split

    lines = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "text-embedding-3-small", "input": [f"t{i}-{k}" for k in range(20000)]}}
        for i in range(5)
    ]  # fmt: skip
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert (
        split(
            [
                str(requests),
                "--answers",
                str(tmp_path / "answers"),
                "-o",
                str(tmp_path / "chunks.mk"),
            ]
        )
        == 0
    )
    sizes = [len(read_json(p)) for p in sorted(tmp_path.glob("chunk_*.jsonl"))]
    assert sizes == [2, 2, 1]  # 40,000 inputs a batch at most, never 60,000


def test_a_refused_cancel_is_sent_once(emulator: Emulator, tmp_path: Path) -> None:
    """A 409 (the batch ended meanwhile) is final: one call, not the SDK's five retries."""
    from br.batches.openai import OpenAI
    from br.batches.provider import Refused
    from br.config import Config

    emulator.faults(validating_seconds=0, processing_seconds=0, finalizing_seconds=0)
    client = emulator.client()
    file = client.files.create(file=("a.jsonl", b'{"custom_id":"a","method":"POST",'
        b'"url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[]}}\n'),
        purpose="batch")  # fmt: skip
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while client.batches.retrieve(batch.id).status != "completed":
        time.sleep(0.1)
    provider = OpenAI(Config(tmp_path / "c.yaml", {"base_url": emulator.url}), client)
    try:
        provider.cancel(batch.id)
    except Refused as e:
        assert "Cannot cancel" in str(e)
    else:
        raise AssertionError("a completed batch was cancelled")
    assert calls(emulator)["POST /v1/batches/{id}/cancel"] == 1
