"""`make bench`: the pipeline's speed, memory and API calls, measured against the emulator.

Five parts, each in a scratch directory (removed afterwards unless --keep or --workdir), each
with its own emulator and its own machine state ($BR_STATE_DIR), all through the real make:

1. floor: `make caption` on --floor-n records (a JSON list) at the default MAX_REQUESTS=1000
   against an instant emulator, beside the same job written by hand the cookbook way in one
   Python process with the openai SDK (build the lines, upload, create, poll every second,
   download, merge by custom_id), timed in the same run: wall and CPU (user+sys of every
   process, the recorder's own left out) against the hand-written job's. small: the same on
   --small-n records (one chunk). live: `make caption MODE=live CONCURRENCY=c` on --live-n
   records against an emulator whose every call takes --live-seconds: requests/s against the
   ideal c / latency.
2. growth: records/s and peak RSS per stage (make_requests, split_requests, run_batches,
   merge_results) for --n records of about 620 bytes, as JSONL and as a JSON list. make runs
   every script through a small recorder (`PY=<recorder>`, the Makefile unchanged) that logs
   each script's wall time, CPU and peak RSS (wait4).
3. calls: API calls per chunk of a 10-chunk job, on an empty account and on one with 5,000
   batches and 5,000 files (POST /_emulator/seed): a first run, a rerun with only the ledger
   left (every other file of the step removed), a rerun after deleting build/ (the machine
   index kept), and a rerun with nothing to do.
4. queue: 20 chunks of 10 x the emulator's enqueued-token limit L, 4 s batches, the plain
   `make caption TOKEN_BUDGET=L` (no -j), against the ideal time tokens / L x 4 s.
5. polling: status calls for a 24-hour batch under polling.interval (simulated), and the worst
   lateness against max(60 s, 5% of the batch's age).

Prints markdown tables, each part followed by what its figures mean beside the reference run's
(br/bench/report.py); --json PATH writes the figures. Nothing in the project's build/ is
touched.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, note, run

# isort: split

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from br.bench.data import CONFIG
from br.bench.parts import measure
from br.bench.report import report
from br.bench.runs import ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="records for the growth part")
    parser.add_argument("--max-requests", type=int, default=1000, help="growth: per chunk")
    parser.add_argument("--floor-n", type=int, default=20_000, help="records for the floor part")
    parser.add_argument("--floor-max-requests", type=int, default=1000, help="floor: per chunk")
    parser.add_argument("--small-n", type=int, default=300, help="records for the small part")
    parser.add_argument("--live-n", type=int, default=200, help="records for the live part")
    parser.add_argument("--live-concurrency", type=int, default=8, help="live: CONCURRENCY")
    parser.add_argument("--live-seconds", type=float, default=0.25, help="live: latency")
    parser.add_argument("--history", type=int, default=5000, help="batches and files seeded")
    parser.add_argument("--calls-chunks", type=int, default=10, help="chunks in the calls job")
    parser.add_argument("--calls-requests", type=int, default=20, help="requests per chunk")
    parser.add_argument("--queue-chunks", type=int, default=20)
    parser.add_argument("--queue-requests", type=int, default=25, help="requests per chunk")
    parser.add_argument("--queue-wave", type=int, default=2, help="chunks that fit in L")
    parser.add_argument("--processing-seconds", type=float, default=4.0, help="queue batches")
    parser.add_argument("--queue-poll-max", type=float, default=0.5, help="BR_POLL_MAX")
    parser.add_argument(
        "--parts",
        default="floor,small,live,growth,calls,queue",
        help="of floor, small, live, growth, calls, queue",
    )
    parser.add_argument(
        "--peer-python",
        type=Path,
        help="floor and small: also time the job through autobatcher with this interpreter "
        "(one that has `pip install autobatcher pyyaml`; no dependency of ours)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for the test")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a tmp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the tmp dir")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.history = min(args.n, 300), 1000
        args.max_requests = min(args.max_requests, 100)
        args.floor_n, args.floor_max_requests = min(args.floor_n, 200), 100
        args.small_n, args.live_n, args.live_seconds = min(args.small_n, 50), 16, 0.2
        args.calls_chunks, args.calls_requests = 3, 2
        args.queue_chunks, args.queue_requests = 4, 3
        args.processing_seconds = min(args.processing_seconds, 0.5)
    parts = set(args.parts.split(","))
    if parts - {"floor", "small", "live", "growth", "calls", "queue"}:
        raise UserError(
            f"--parts takes floor, small, live, growth, calls and queue, not {args.parts!r}"
        )
    if min(args.n, args.floor_n, args.max_requests, args.queue_chunks, args.queue_wave) < 1:
        raise UserError(
            "--n, --floor-n, --max-requests, --queue-chunks and --queue-wave must be positive"
        )

    work = args.workdir or Path(tempfile.mkdtemp(prefix="br-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "bench.yaml").write_text(CONFIG)
    started = time.perf_counter()
    shown = sys.argv[1:] if argv is None else argv
    figures: dict[str, Any] = {
        "command": " ".join(["scripts/bench.py", *shown]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "history": args.history,
    }
    # The scripts' bytecode as every run after the first has it (the Makefile's BYTECODE): no
    # timed run compiles a module, whatever PYTHONDONTWRITEBYTECODE says.
    subprocess.run(["make", "--no-print-directory", "-s", ".venv/bytecode.stamp"], cwd=ROOT)
    load = os.getloadavg()[0]
    try:
        figures.update(measure(args, work, parts))
    except BaseException:
        note(f"bench: the logs are kept in {work}")
        raise
    figures["seconds"] = time.perf_counter() - started
    figures["load"] = [load, os.getloadavg()[0]]
    figures["self_cpu"] = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    if not (args.workdir or args.keep):
        shutil.rmtree(work, ignore_errors=True)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
