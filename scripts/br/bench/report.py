"""What `make bench` prints: its figures as markdown tables, each part followed by what its
figures mean."""

from __future__ import annotations

import os
from typing import Any

from br.bench.parts import ROUTES

RSS_TARGET_MB = 150
# What each part's figures mean, with the reference run's to compare against: `make bench`
# (and N=1000000 for growth) on this project's 2-core machine, 2026-12-02.
MEANING = {
    "floor": (
        "What it means: against instant batches `make caption` costs about twice the "
        "hand-written job (reference, 20,000 records: 9.4 s against 4.3 s wall, 269 against "
        "76 CPU s per million records), mostly Python start-up and re-reading chunk files; "
        "beside a real batch's minutes to hours that is noise. Both must give the same answer "
        "for every record."
    ),
    "small": (
        "What it means: on a small job the fixed cost of a run shows: each of make's processes "
        "pays its own start-up (issue 25's target: no more CPU than the leanest batch tool, "
        "whose CPU is about the hand-written job's)."
    ),
    "live": (
        "What it means: the synchronous path keeps CONCURRENCY calls in flight; the ratio is "
        "its requests/s against CONCURRENCY / latency (1.00x: never a slot idle), the rest is "
        "start-up, the split and the merge around it. No batch is created."
    ),
    "growth": (
        "What it means: every stage streams, for a JSON list as for JSONL, so memory is flat "
        f"in the dataset's size (target: every process under {RSS_TARGET_MB} MB; reference, "
        "1,000,000 records of 623 bytes: at most 72 MB) and records/s stays the same as it "
        "grows (reference, JSONL / JSON list: make_requests 18,621 / 16,342, split_requests "
        "39,409 / 49,091, run_batches 4,479 / 4,950, merge_results 12,603 / 14,312; the whole "
        "`make caption` 2,611 / 2,825 records/s, 245 / 229 CPU s per million records)."
    ),
    "calls": (
        "What it means: API calls per chunk are constant whatever the account holds. A first "
        "run uploads, creates and downloads once per chunk (about 0.1 batch-list pages); a "
        "rerun with nothing to do calls nothing; with only the ledger left, or build/ "
        "deleted (the machine index kept: one retrieve per chunk), nothing is uploaded or "
        "created again, only downloaded. No run lists files."
    ),
    "queue": (
        "What it means: the ideal sends one wave of L tokens after another with no gap. The "
        "reference run took 1.10x the ideal (the server's first create to last end 1.02x), no "
        "batch failed on the limit, and freed budget was refilled 0.01 s after a batch was "
        "seen ended on average; what remains is the polls' lateness and make's own start, "
        "split and merge. At the default polling (--queue-poll-max 1e9) the 1 s floor between "
        "polls is a quarter of these 4 s batches: 1.17x."
    ),
    "polling": (
        "What it means: each end is seen within max(60 s, 5% of the batch's age), never two "
        "calls closer than 1 s (a ratio at most 1.00, the shortest gap at least 1 s). That "
        "latency bound alone needs about 108 calls for 24 hours (20 a minute apart to the "
        "twentieth minute, then 88 growing by 5%); the reference schedule makes 118."
    ),
}


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["--:"] * (len(head) - 1)
    return [f"| {' | '.join(head)} |", f"|{'|'.join(align)}|"] + [
        f"| {' | '.join(r)} |" for r in rows
    ]


def floor_lines(part: str, fl: dict[str, Any]) -> list[str]:
    """The floor's table (or the small job's): `make caption` against the hand-written job."""
    h, m = fl["handwritten"], fl["make"]
    lines = [
        "",
        f"**{part.capitalize()}**: {fl['n']:,} records (a JSON list), {fl['chunks']} chunk(s) of "
        f"{fl['max_requests']}, instant emulator. Hand-written: one Python process with the "
        "openai SDK (build, upload, create, poll every 1 s, download, merge). CPU: user+sys "
        "of every process.",
        "",
    ]
    lines += table(
        ["run", "wall s", "CPU s", "CPU s per 1M records", "peak RSS MB", "vs hand-written"],
        [
            ["hand-written, one process", f"{h['wall']:.1f}", f"{h['cpu']:.2f}",
             f"{h['cpu_per_million']:.0f}", f"{h['rss_mb']:.0f}", "1x"],
            ["`make caption`", f"{m['wall']:.1f}", f"{m['cpu']:.2f}",
             f"{m['cpu_per_million']:.0f}", f"{m['peak_mb']:.0f}",
             f"{fl['ratio']:.2f}x wall, {fl['cpu_ratio']:.2f}x CPU"],
        ],
    )  # fmt: skip
    peer = fl.get("peer")
    if peer:
        lines.append(
            f"| autobatcher (the leanest peer), one process | {peer['wall']:.1f} | "
            f"{peer['cpu']:.2f} | {peer['cpu_per_million']:.0f} | {peer['rss_mb']:.0f} | "
            f"{peer['wall'] / h['wall']:.2f}x wall, {peer['cpu'] / h['cpu']:.2f}x CPU |"
        )
    scripts = ", ".join(
        f"{s.removesuffix('.py')} {v['wall']:.2f} / {v['cpu']:.2f}" for s, v in m["scripts"].items()
    )
    return lines + [
        "",
        f"Same answers in both: {'yes' if fl['same_answers'] else 'NO'}"
        + (f" (autobatcher answered {fl['peer_answered']:,} of {fl['n']:,})" if peer else "")
        + ". make's scripts, "
        f"wall / CPU s: {scripts}.",
        "",
        MEANING[part],
    ]


def report(f: dict[str, Any]) -> str:
    load = f["load"]
    lines = [
        f"`{f['command']}`, {f['date']}, {os.cpu_count()} CPUs, load average {load[0]:.1f} "
        f"at the start, {load[1]:.1f} at the end; {f['seconds']:.0f} s in all.",
    ]
    for part in ("floor", "small"):
        if fl := f.get(part):
            lines += floor_lines(part, fl)
    if lv := f.get("live"):
        lines += [
            "",
            f"**Live** (MODE=live): {lv['n']:,} records, CONCURRENCY={lv['concurrency']}, each "
            f"call {lv['latency']:g} s on the emulator; run_live {lv['live_wall']:.1f} s wall, "
            f"{lv['live_cpu']:.1f} s CPU: {lv['per_second']:.1f} requests/s against the ideal "
            f"{lv['ideal_per_second']:.1f} (CONCURRENCY / latency), {lv['ratio']:.2f}x; "
            f"{lv['live_calls']} live calls, {lv['batches']} batches; the whole `make caption` "
            f"{lv['wall']:.1f} s wall, {lv['cpu']:.1f} s CPU, peak {lv['peak_mb']:.0f} MB.",
            "",
            MEANING["live"],
        ]
    for g in f.get("growth") or []:
        n = g["n"]
        lines += [
            "",
            f"**Growth, {g['format']}**: {n:,} records of {g['bytes_per_record']:.0f} bytes, "
            f"{g['chunks']} chunks of {g['max_requests']}, instant emulator; "
            f"`make caption` {g['wall']:.0f} s wall, {g['cpu']:.0f} s CPU "
            f"({g['cpu'] / n * 1e6:.0f} s per 1M records).",
            "",
        ]
        rows = [
            [name, f"{s['wall']:.1f}", f"{s['cpu']:.1f}", f"{n / max(s['wall'], 1e-9):,.0f}",
             f"{s['rss_mb']:.0f}" + ("" if s["rss_mb"] < RSS_TARGET_MB else " (over 150)")]
            for name, s in g["stages"].items()
        ]  # fmt: skip
        lines += table(["stage", "wall s", "CPU s", "records/s", "peak RSS MB"], rows)
        c = g["calls"]
        lines.append(
            "\nAPI calls: "
            + ", ".join(f"{c.get(route, 0)} {name}" for name, route in ROUTES.items())
            + "."
        )
    if f.get("growth"):
        lines += ["", MEANING["growth"]]
    if calls := f.get("calls"):
        lines += [
            "",
            f"**API calls per chunk**, a {calls[0]['chunks']}-chunk job, instant emulator, on an "
            f"empty account and on one with {f['history']:,} batches (with their input files) and "
            f"{f['history']:,} more files, all of the last hour; the last column is every call of "
            "the run:",
            "",
        ]
        rows = [
            [f"{c['account']:,}", c["run"], *(f"{c['per_chunk'][k]:g}" for k in ROUTES),
             str(sum(c["calls"].values()))]
            for c in calls
        ]  # fmt: skip
        lines += table(["batches on the account", "run", *ROUTES, "all calls"], rows)
    if calls:
        lines += ["", MEANING["calls"]]
    if q := f.get("queue"):
        lines += [
            "",
            f"**Queue**: {q['chunks']} chunks, {q['tokens']:,} estimated tokens = "
            f"{q['tokens'] / q['limit']:.1f} x the enqueued-token limit L={q['limit']:,}, "
            f"{q['processing_seconds']:g} s batches, BR_POLL_MAX={q['poll_max']:g}; ideal "
            f"{q['ideal']:.1f} s (tokens / L x {q['processing_seconds']:g} s).",
            "",
        ]
        lines += table(
            ["`make caption TOKEN_BUDGET=L` (no -j)", "wall s", "ratio to ideal"],
            [
                ["whole make", f"{q['wall']:.1f}", f"{q['ratio']:.2f}x"],
                ["run_batches.py", f"{q['run_batches_wall']:.1f}",
                 f"{q['run_batches_ratio']:.2f}x"],
                ["first create to last end (server)", f"{q['batch_span']:.1f}",
                 f"{q['batch_span'] / q['ideal']:.2f}x"],
            ],
        )  # fmt: skip
        gaps = q["refill_gaps"]
        lines.append(
            f"\n{q['batches']} batches, {q['failed']} not completed; status calls (retrieves and "
            f"list pages) per batch: {q['status_calls_per_batch']:.1f}. From a batch seen ended "
            f"to the next upload: {sum(gaps) / max(len(gaps), 1):.2f} s on average "
            f"({len(gaps)} refills, {sum(gaps):.1f} s in all)."
        )
        lines += ["", MEANING["queue"]]
    p = f["polling"]
    lines += [
        "",
        f"**Polling** (simulated, polling.interval at its defaults): a 24-hour batch costs "
        f"{p['calls']} status calls; the widest gap is {p['worst_gap']:.0f} s at age "
        f"{p['worst_gap_age']:.0f} s, {p['worst_ratio']:.2f} x the promise max(60 s, 5% of "
        f"age); the shortest {p['back_to_back']:.1f} s.",
        "",
        MEANING["polling"],
    ]
    return "\n".join(lines)
