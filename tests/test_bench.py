"""`scripts/bench.py --quick` end to end: real make, real scripts, real emulators, the SDK.

No timing assertions: the figures have to exist and agree with what ran (the emulator's call
counts, the files on disk, the answers of the hand-written floor and of make).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import PYTHON, ROOT, input_dir


def per_chunk(calls: list[dict[str, Any]], account: int, run: str) -> dict[str, float]:
    (row,) = [c for c in calls if c["account"] == account and c["run"] == run]
    return row["per_chunk"]


def test_bench_quick_measures_every_part(tmp_path: Path) -> None:
    out, work = tmp_path / "bench.json", tmp_path / "work"
    result = subprocess.run(
        [PYTHON, "scripts/bench.py", "--quick", "--workdir", str(work), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["load"] and figures["date"].endswith("UTC")

    # 1. The hand-written floor did the same job as make: the same answer for every record.
    floor = figures["floor"]
    assert floor["same_answers"] and floor["answered"] == floor["n"] == 200
    for calls in (floor["handwritten"]["calls"], floor["make"]["calls"]):
        assert calls["POST /v1/files"] == calls["POST /v1/batches"] == floor["chunks"] == 2
    merged = input_dir(work / "build-floor", work / "floor200.json") / "caption" / "merged.json"
    assert len(json.loads(merged.read_text())) == 200
    assert floor["make"]["cpu"] > 0 and floor["handwritten"]["cpu"] > 0

    # The small job beside its hand-written twin; the live path against CONCURRENCY / latency.
    small = figures["small"]
    assert small["same_answers"] and small["n"] == small["answered"] == 50 and small["chunks"] == 1
    assert small["cpu_ratio"] > 0 and small["make"]["cpu"] > 0
    live = figures["live"]
    assert live["batches"] == 0 and live["live_calls"] == live["n"] == 16
    assert live["ratio"] > 0 and live["ideal_per_second"] == 8 / 0.2
    assert "**Small**" in result.stdout and "**Live** (MODE=live)" in result.stdout

    # 2. Growth: both formats, every stage recorded once by the recorder.
    growth = {g["format"]: g for g in figures["growth"]}
    assert set(growth) == {"JSONL", "JSON list"}
    for g in growth.values():
        assert g["n"] == 300 and g["chunks"] == 3
        assert g["calls"]["POST /v1/batches"] == 3
        for name, s in g["stages"].items():
            assert s["runs"] >= 1 and 5 < s["rss_mb"] < 300, name
        assert g["stages"]["make_requests"]["runs"] == 1

    # 3. API calls per chunk: constant whatever the account holds; reruns create nothing.
    calls = figures["calls"]
    assert {c["account"] for c in calls} == {0, 1000}
    for account in (0, 1000):
        first = per_chunk(calls, account, "first run")
        assert first["upload"] == first["create"] == 1 and first["download"] >= 1
        idle = per_chunk(calls, account, "rerun, nothing to do")
        assert sum(idle.values()) == 0
        for run in ("rerun, only ledger.jsonl left", "rerun, build/ deleted"):
            again = per_chunk(calls, account, run)
            assert again["upload"] == again["create"] == 0 and again["download"] >= 1, run
        ledger = per_chunk(calls, account, "rerun, only ledger.jsonl left")
        assert ledger["list batches"] <= 1 and ledger["list files"] * 3 <= 2
    assert calls[-1]["batches_on_account"] == 3  # one batch per chunk, for all four runs
    seeded, empty = per_chunk(calls, 1000, "first run"), per_chunk(calls, 0, "first run")
    assert seeded["list files"] == empty["list files"] == 0

    # 4. The queue: every chunk sent once within the token budget, none failed on the limit.
    q = figures["queue"]
    assert q["chunks"] == q["batches"] == 4 and q["failed"] == 0
    assert q["tokens"] == 2 * q["limit"] and q["ideal"] > 0

    # 5. Polling a 24-hour batch: within the promise, never back to back.
    p = figures["polling"]
    assert p["calls"] < 150 and p["worst_ratio"] <= 1.0 + 1e-9 and p["back_to_back"] >= 1

    table = result.stdout
    for heading in ("**Floor**", "**Growth, JSONL**", "**API calls per chunk**", "**Queue**"):
        assert heading in table
    assert "| hand-written, one process |" in table and "| make_requests |" in table
