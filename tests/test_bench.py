"""`scripts/bench.py` end to end at tiny sizes: real make, real scripts, real emulators.

No timing assertions: the figures only have to exist and be consistent with what ran.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import PYTHON, ROOT


def test_bench_quick_runs_the_pipeline_and_the_queue(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    work = tmp_path / "work"
    result = subprocess.run(
        [PYTHON, "scripts/bench.py", "--quick", "--n", "40", "--max-requests", "20"]
        + ["--queue-chunks", "2", "--queue-wave", "1"]
        + ["--workdir", str(work), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())

    main = figures["pipeline"]
    assert main["n"] == 40 and main["chunks"] == 2 and main["batches"] == 2
    merged = work / "build-main" / "bench40" / "caption" / "merged.jsonl"
    records = [json.loads(line) for line in merged.read_text().splitlines()]
    assert len(records) == 40
    assert all(r["generated_caption"].startswith("Emulated answer ") for r in records)
    stages = {s["stage"].split(" ")[0]: s for s in main["stages"]}
    assert set(stages) == {"make_requests", "split_requests", "submit", "merge_results"}
    assert stages["submit"]["runs"] == 4  # a submit and a fetch per chunk
    for s in stages.values():
        assert s["wall"] > 0 and s["floor"] > 0 and 10 < s["rss_mb"] < 300
    # Every batch was polled; the status calls are counted by the emulator.
    assert main["polls_per_batch"] >= 1
    assert figures["hour"]["calls"] < 100

    q = figures["queue"]
    assert q["chunks"] == 2 and q["tokens"] == 2 * q["limit"]
    assert [r["jobs"] for r in q["runs"]] == [8, 1]
    assert all(r["batches"] == 2 and r["wall"] > 0 for r in q["runs"])

    table = result.stdout
    assert "| make_requests | 1 |" in table and "TOKEN_BUDGET=L" in table
    assert "make -j1" in table
