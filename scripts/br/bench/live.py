"""Parts of `make bench` beside the floor: the 300-record job against the hand-written one
(`small`), and the synchronous path (`live`): `make caption MODE=live` on an emulator whose
every call takes --live-seconds, its requests/s against the ideal CONCURRENCY / latency."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from br.bench.data import write_dataset
from br.bench.floor import floor
from br.bench.runs import Emulator, Job, count_lines, stage
from br.cli import UserError


def small(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The floor's comparison on a small job (--small-n records, one chunk): what a run costs
    beside the job's own work, against one process of the SDK doing the same."""
    return floor(args, work, args.small_n, max(args.small_n, 1), name="small")


def live(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, concurrency, latency = args.live_n, args.live_concurrency, args.live_seconds
    data = write_dataset(work / f"live{n}.jsonl", n, seed=5)
    with Emulator(work / "emulator-live", "--live-seconds", str(latency)) as emu:
        job = Job(work, "live", data, emu)
        made = job.make("caption", "MODE=live", f"CONCURRENCY={concurrency}")
        calls = emu.admin("stats")
    merged = count_lines(job.merged)
    if merged != n:
        raise UserError(f"{job.merged} has {merged} records, not {n}")
    sent = stage(made["rows"], "run_live.py")
    ideal = concurrency / latency
    return {
        "n": n,
        "concurrency": concurrency,
        "latency": latency,
        "wall": made["wall"],
        "cpu": made["cpu"],
        "live_wall": sent["wall"],
        "live_cpu": sent["cpu"],
        "per_second": n / sent["wall"],
        "ideal_per_second": ideal,
        "ratio": n / sent["wall"] / ideal,
        "live_calls": calls.get("live_calls"),
        "batches": calls.get("batches_created", 0),
        "peak_mb": made["peak_mb"],
    }
