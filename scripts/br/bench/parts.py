"""Parts 2 to 5 of `make bench`: growth per stage, API calls per chunk, the token-budget queue
and the polling schedule; and `measure`, which runs the parts asked for."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from br.batches.chunk import chunk_info
from br.batches.polling import interval
from br.bench.data import write_dataset
from br.bench.floor import floor
from br.bench.live import live, small
from br.bench.runs import Emulator, Job, count_lines, stage
from br.cli import UserError, note
from br.layout import StepDir

STAGES = ("make_requests.py", "split_requests.py", "run_batches.py", "merge_results.py")


def growth(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    out = []
    for suffix in (".jsonl", ".json"):
        t = time.perf_counter()
        data = write_dataset(work / f"growth{args.n}{suffix}", args.n)
        size = data.stat().st_size
        note(
            f"bench: growth, {args.n:,} records as {suffix} ({size / 1e6:.0f} MB, written in "
            f"{time.perf_counter() - t:.0f}s)"
        )
        with Emulator(work / f"emulator-growth{suffix}", "--processing-seconds", "0") as emu:
            job = Job(work, f"growth{suffix}", data, emu, args.max_requests)
            made = job.make("caption")
            calls = emu.calls()
        merged = count_lines(job.merged)
        if merged != args.n:
            raise UserError(f"{job.merged} has {merged} records, not {args.n}")
        chunks = -(-args.n // args.max_requests)
        stages = {s.removesuffix(".py"): stage(made["rows"], s) for s in STAGES}
        other = [r for r in made["rows"] if r["script"] not in STAGES]
        out.append(
            {
                "format": "JSONL" if suffix == ".jsonl" else "JSON list",
                "n": args.n,
                "bytes_per_record": size / args.n,
                "max_requests": args.max_requests,
                "chunks": chunks,
                "stages": stages,
                "other": {"runs": len(other), "cpu": sum(r["cpu"] for r in other)},
                "wall": made["wall"],
                "cpu": made["cpu"],
                "peak_mb": made["peak_mb"],
                "calls": calls,
            }
        )
        shutil.rmtree(job.build, ignore_errors=True)
        data.unlink()
    return out


# --------------------------------------------------------------------------- 3. API calls

ROUTES = {
    "list batches": "GET /v1/batches",
    "list files": "GET /v1/files",
    "retrieve": "GET /v1/batches/{id}",
    "upload": "POST /v1/files",
    "create": "POST /v1/batches",
    "download": "GET /v1/files/{id}/content",
}


RERUNS = (
    "first run",
    "rerun, nothing to do",
    f"rerun, only {StepDir(Path()).ledger.name} left",
    "rerun, build/ deleted",
)


def api_calls(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    per_chunk, chunks = args.calls_requests, args.calls_chunks
    data = write_dataset(work / "calls.jsonl", chunks * per_chunk, seed=3)
    out = []
    for history in (0, args.history):
        with Emulator(work / f"emulator-calls{history}", "--processing-seconds", "0") as emu:
            if history:
                seeded = emu.admin(
                    "seed", {"batches": history, "files": history, "age_seconds": 3600}
                )
                note(f"bench: seeded {seeded['batches']} batches, {seeded['files']} files")
            job = Job(work, f"calls{history}", data, emu, per_chunk)
            for run_name in RERUNS:
                if run_name == RERUNS[2]:
                    keep_only(job.b, job.files.ledger.name)
                elif run_name == RERUNS[3]:
                    shutil.rmtree(job.build)
                emu.admin("reset_stats", {})
                made = job.make("caption")
                calls = emu.calls()
                if count_lines(job.merged) != chunks * per_chunk:
                    raise UserError(f"{job.merged}: not every record merged after {run_name}")
                out.append(
                    {
                        "account": history,
                        "run": run_name,
                        "chunks": chunks,
                        "wall": made["wall"],
                        "calls": calls,
                        "per_chunk": {k: calls.get(r, 0) / chunks for k, r in ROUTES.items()},
                        "other": sum(v for r, v in calls.items() if r not in ROUTES.values()),
                    }
                )
            out[-1]["batches_on_account"] = emu.admin("stats").get("batches_created")
    return out


def keep_only(directory: Path, name: str) -> None:
    for path in directory.iterdir():
        if path.name != name:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


# --------------------------------------------------------------------------- 4. the queue


def queue(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    per_chunk, seconds = args.queue_requests, args.processing_seconds
    data = write_dataset(work / "queue.jsonl", args.queue_chunks * per_chunk, seed=11, fixed=True)
    with Emulator(work / "emulator-queue", "--processing-seconds", str(seconds)) as emu:
        job = Job(work, "queue", data, emu, per_chunk, {"BR_POLL_MAX": str(args.queue_poll_max)})
        job.make(str(job.files.manifest))
        tokens = [chunk_info(p).tokens for p in job.files.chunk_files()]
        limit = args.queue_wave * max(tokens)
        emu.admin("faults", {"token_limit": limit})
        emu.admin("reset_stats", {})
        made = job.make("caption", f"TOKEN_BUDGET={limit}")
        calls = emu.calls()
        batches = emu.batches(limit=100)
    ideal = sum(tokens) / limit * seconds
    ends = [b.get("completed_at") or b.get("failed_at") or 0 for b in batches]
    span = max(ends) - min(b["created_at"] for b in batches)
    run_batches = stage(made["rows"], "run_batches.py")
    gaps = refill_gaps(job.files.ledger)
    return {
        "refill_gaps": gaps,
        "chunks": len(tokens),
        "tokens": sum(tokens),
        "limit": limit,
        "processing_seconds": seconds,
        "poll_max": args.queue_poll_max,
        "ideal": ideal,
        "wall": made["wall"],
        "ratio": made["wall"] / ideal,
        "run_batches_wall": run_batches["wall"],
        "run_batches_ratio": run_batches["wall"] / ideal,
        "batch_span": span,
        "batches": len(batches),
        "failed": sum(b["status"] != "completed" for b in batches),
        "status_calls_per_batch": (
            calls.get("GET /v1/batches/{id}", 0) + calls.get("GET /v1/batches", 0)
        )
        / len(batches),
        "calls": calls,
    }


def refill_gaps(ledger: Path) -> list[float]:
    """Seconds from the run seeing a batch end (freeing budget) to its next upload, from the
    ledger's own clock: how long freed room stays unused."""
    rows = [json.loads(line) for line in ledger.read_text().splitlines()]
    gaps, last_end = [], None
    for row in rows:
        if row["op"] == "ended":
            last_end = row["at"]
        elif row["op"] == "upload" and row.get("phase") == "intent" and last_end is not None:
            gaps.append(row["at"] - last_end)
            last_end = None
    return gaps


def polling(duration: float = 86400.0) -> dict[str, Any]:
    """A batch ending at `duration`, polled on polling.interval (BR_POLL_* at their defaults):
    status calls until it is seen ended, and the worst lateness over every possible end time
    against the promise max(60 s, 5% of its age)."""
    saved = {k: os.environ.pop(k) for k in ("BR_POLL_MIN", "BR_POLL_MAX") if k in os.environ}
    try:
        ages = [interval(0.0)]  # just created: the first poll waits one interval
        while ages[-1] < duration:
            ages.append(ages[-1] + interval(ages[-1]))
    finally:
        os.environ.update(saved)
    gaps = [(b - a, a) for a, b in zip([0.0, *ages[:-1]], ages, strict=True)]
    worst = max(gaps, key=lambda g: g[0] / max(60.0, 0.05 * g[1]))
    return {
        "duration": duration,
        "calls": len(ages),
        "late_at_end": ages[-1] - duration,
        "worst_gap": worst[0],
        "worst_gap_age": worst[1],
        "worst_ratio": worst[0] / max(60.0, 0.05 * worst[1]),
        "back_to_back": min(g[0] for g in gaps),
    }


PARTS = {
    "floor": floor,
    "small": small,
    "live": live,
    "growth": growth,
    "calls": api_calls,
    "queue": queue,
}


def measure(args: argparse.Namespace, work: Path, parts: set[str]) -> dict[str, Any]:
    """The figures of the parts asked for (in their order), and the polling schedule's."""
    figures: dict[str, Any] = {}
    for part, run_part in PARTS.items():
        if part in parts:
            note(f"bench: {part}")
            figures[part] = run_part(args, work)
    figures["polling"] = polling()
    return figures
