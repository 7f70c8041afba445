"""Benchmark the pipeline: per-stage time, records/s and peak memory against the emulator.

Builds a synthetic JSONL dataset of --n news records (text fields, image URLs) and a config in
a scratch directory (removed afterwards unless --keep or --workdir), starts its own emulator
with instant processing, and runs the whole pipeline through the real make: first
`make <B>/chunks.mk` (make_requests, split), then `make -j2 caption` (submit, fetch, merge).
make runs every script through a small recorder (`PY=<recorder>`, the Makefile unchanged) that
logs each script's wall time and peak RSS (wait4). Beside each stage: the floor, a plain
json.loads + json.dumps pass over the bytes that stage reads, timed in this process in the same
run, and the ratio. Also: status polls per batch (the emulator's call counts), the polls an
hour-long batch costs under `batch_api.next_poll`, and the queue test: a job of about 10 x L
estimated tokens over many chunks with the emulator's enqueued-token limit at L, run with
`make -j8 TOKEN_BUDGET=L` and one batch at a time (`make -j1`, the original tool's way), each
against the ideal time (tokens / L x processing seconds). Prints markdown tables; --json PATH
also writes the figures. A rerun starts from scratch; nothing in build/ is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from batch_api import chunk_info, next_poll
from cli import UserError, note, run

ROOT = Path(__file__).resolve().parent.parent
STEP = "caption"
KEY = "bench-key-not-secret"
CONFIG = """\
model: gpt-4o-mini
caption:
  system: You write factual, detailed captions for news photographs.
  user: |
    Headline: {title}
    Published caption: {caption}
    Article: {article}
    Describe the photograph in two or three sentences, using the headline and caption for names
    and places.
  image_detail: low
  response_key: generated_caption
  max_tokens: 300
"""
# Runs a script like `.venv/bin/python`, then appends its wall time and peak RSS to a log.
RECORDER = """\
#!{python} -S
import json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
start = time.time()
pid = os.posix_spawn({python!r}, [{python!r}, *sys.argv[1:]], os.environ,
                     setsigdef=(signal.SIGINT,))
_, status, usage = os.wait4(pid, 0)
row = {{"script": os.path.basename(sys.argv[1]) if len(sys.argv) > 1 else "-",
       "start": start, "end": time.time(), "rss_kb": usage.ru_maxrss,
       "cpu": usage.ru_utime + usage.ru_stime, "rc": os.waitstatus_to_exitcode(status)}}
with open({log!r}, "a") as f:
    f.write(json.dumps(row) + "\\n")
sys.exit(row["rc"] if row["rc"] >= 0 else 128 - row["rc"])
"""
WORDS = [
    "harbour",
    "council",
    "minister",
    "river",
    "festival",
    "storm",
    "election",
    "museum",
    "railway",
    "school",
    "court",
    "market",
    "bridge",
    "hospital",
    "village",
    "coast",
    "stadium",
    "airport",
    "factory",
    "farmers",
    "police",
    "union",
    "protest",
    "parliament",
    "mayor",
    "rescue",
    "flood",
    "wildfire",
    "summit",
    "treaty",
    "exhibition",
    "concert",
    "museum",
    "orchestra",
    "striker",
    "coach",
    "season",
    "record",
    "drought",
    "harvest",
    "volcano",
    "glacier",
    "São",
    "Paulo",
    "Zoë",
    "Müller",
    "Kraków",
    "Reykjavík",
    "Nairobi",
    "Jakarta",
    "Montréal",
    "Oaxaca",
    "Tromsø",
]


# --------------------------------------------------------------------------- synthetic data


def text_pool(rng: random.Random, n: int, words: tuple[int, int]) -> list[str]:
    out = []
    for _ in range(n):
        chosen = rng.choices(WORDS, k=rng.randint(*words))
        out.append(" ".join(chosen).capitalize() + ".")
    return out


def write_dataset(path: Path, n: int, seed: int = 7, fixed: bool = False) -> None:
    """n news records as JSONL. fixed: every text field the same length (equal token counts)."""
    rng = random.Random(seed)
    titles, sentences = text_pool(rng, 4000, (6, 12)), text_pool(rng, 8000, (8, 20))
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            title = rng.choice(titles)
            caption = rng.choice(sentences)
            article = " ".join(rng.choices(sentences, k=rng.randint(3, 8)))
            if fixed:
                title, caption = f"{title:<80.80}", f"{caption:<120.120}"
                article = f"{article * 4:<600.600}"
            record = {
                "image_path": f"images/{i:07d}.jpg",
                "image_url": f"https://images.example-news.org/2026/{i % 12 + 1:02d}/{i:07d}.jpg",
                "title": title,
                "date": f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
                "caption": caption,
                "article": article,
                "source": f"https://www.example-news.org/story/{i:07d}",
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- floor


def floor_seconds(paths: list[Path], scratch: Path) -> tuple[float, float]:
    """A plain read-parse-serialise pass: json.loads and json.dumps of every line, written out.

    Its (wall, CPU) seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    with open(scratch, "w", encoding="utf-8") as out:
        for path in paths:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    out.write(json.dumps(json.loads(line), ensure_ascii=False) + "\n")
    scratch.unlink()
    return time.perf_counter() - start, time.process_time() - cpu


# --------------------------------------------------------------------------- emulator, make


class Emulator:
    def __init__(self, state_dir: Path, *options: str) -> None:
        cmd = [sys.executable, str(ROOT / "scripts" / "emulator.py"), "--port", "0"]
        cmd += ["--state-dir", str(state_dir), "--validating-seconds", "0"]
        cmd += ["--finalizing-seconds", "0", *options]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.proc.kill()
            raise UserError(f"the emulator did not start (it printed {self.url!r})")

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET an admin endpoint, or POST `body` to it."""
        request = urllib.request.Request(
            f"{self.url.removesuffix('/v1')}/_emulator/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def batch_span(self) -> float:
        """Seconds from the first batch created to the last one ended (the server's clock)."""
        request = urllib.request.Request(
            f"{self.url}/batches?limit=100", headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            batches = json.loads(response.read())["data"]
        ends = [b.get("completed_at") or b.get("failed_at") or 0 for b in batches]
        return max(ends) - min(b["created_at"] for b in batches) if batches else 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Run:
    """One pipeline run: its build directory, environment and the recorder's log."""

    work: Path
    name: str
    input: Path
    emulator: Emulator
    max_requests: int
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def build(self) -> Path:
        return self.work / f"build-{self.name}"

    @property
    def b(self) -> Path:
        return self.build / self.input.stem / STEP

    @property
    def log(self) -> Path:
        return self.work / f"scripts-{self.name}.log"

    def recorder(self) -> Path:
        path = self.work / f"py-{self.name}"
        path.write_text(RECORDER.format(python=sys.executable, log=str(self.log)))
        path.chmod(0o755)
        return path

    def make(self, *args: str) -> float:
        """Run the real make in the project root; its wall time."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MAKE"))}
        env.update(OPENAI_BASE_URL=self.emulator.url, OPENAI_API_KEY=KEY, BR_POLL_MIN="0.05")
        env.update(self.extra_env)
        cmd = ["make", "--no-print-directory", *args, f"INPUT={self.input}"]
        cmd += [f"CONFIG={self.work / 'bench.yaml'}", f"STEP={STEP}", f"BUILD={self.build}"]
        cmd += [f"MAX_REQUESTS={self.max_requests}", f"PY={self.recorder()}"]
        out = self.work / f"make-{self.name}.log"
        self.mark = len(self.scripts()) if self.log.exists() else 0
        start = time.perf_counter()
        with open(out, "a") as f:
            code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        took = time.perf_counter() - start
        if code != 0:
            tail = "".join(out.read_text().splitlines(keepends=True)[-15:])
            raise UserError(f"{' '.join(cmd)} exited {code}; its last lines:\n{tail}")
        return took

    def scripts(self, since: int = 0) -> list[dict[str, Any]]:
        """The recorder's rows (from row `since`): one per script run by make."""
        return [json.loads(line) for line in self.log.read_text().splitlines()[since:]]


def stage(rows: list[dict[str, Any]], *names: str) -> dict[str, Any]:
    """Wall (first start to last end), runs, peak RSS and CPU of the given scripts' runs."""
    mine = [r for r in rows if r["script"] in names]
    if not mine:
        return {"runs": 0, "wall": 0.0, "rss_mb": 0.0, "cpu": 0.0, "mean_wall": 0.0}
    return {
        "runs": len(mine),
        "wall": max(r["end"] for r in mine) - min(r["start"] for r in mine),
        "rss_mb": max(r["rss_kb"] for r in mine) / 1024,
        "cpu": sum(r["cpu"] for r in mine),
        "mean_wall": sum(r["end"] - r["start"] for r in mine) / len(mine),
    }


# --------------------------------------------------------------------------- the parts


def throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = work / f"bench{args.n}.jsonl"
    t = time.perf_counter()
    write_dataset(data, args.n)
    note(
        f"bench: {args.n} records, {data.stat().st_size / 1e6:.0f} MB, written in "
        f"{time.perf_counter() - t:.1f}s; running the pipeline"
    )
    emulator = Emulator(work / "emulator", "--processing-seconds", "0")
    try:
        r = Run(work, "main", data, emulator, args.max_requests)
        t_split = r.make(f"{r.b}/chunks.mk")
        split_rows = r.scripts()
        emulator.admin("reset_stats", {})
        t_send = r.make(f"-j{args.jobs}", "caption")
        send_rows = r.scripts(len(split_rows))
        stats = emulator.admin("stats")
    finally:
        emulator.stop()
    merged = r.b / "merged.jsonl"
    with open(merged, "rb") as f:
        n_merged = sum(1 for _ in f)
    if n_merged != args.n:
        raise UserError(f"{merged} has {n_merged} records, not {args.n}")
    results = sorted(r.b.glob("results_*.jsonl"))
    scratch = work / "floor.tmp"
    dataset = floor_seconds([data], scratch)
    requests = floor_seconds([r.b / "requests.jsonl"], scratch)
    answers = floor_seconds(results, scratch)
    chunks = len(results)
    calls = stats.get("calls", {})
    batches = stats.get("batches_created") or chunks

    def add(*floors: tuple[float, float]) -> tuple[float, float]:
        return sum(f[0] for f in floors), sum(f[1] for f in floors)

    stages = [
        ("make_requests", stage(split_rows, "make_requests.py"), dataset),
        ("split_requests", stage(split_rows, "split_requests.py"), requests),
        (
            f"submit + fetch ({chunks} chunks, -j{args.jobs})",
            stage(send_rows, "submit_batch.py", "fetch_results.py"),
            add(requests, answers),
        ),
        ("merge_results", stage(send_rows, "merge_results.py"), add(dataset, requests, answers)),
    ]
    every = split_rows + send_rows
    return {
        "n": args.n,
        "max_requests": args.max_requests,
        "chunks": chunks,
        "dataset_mb": data.stat().st_size / 1e6,
        "stages": [
            {"stage": name, **fig, "floor": fl[0], "floor_cpu": fl[1]} for name, fig, fl in stages
        ],
        "make_wall": t_split + t_send,
        "make_cpu": sum(row["cpu"] for row in every),
        "make_rss_mb": max(row["rss_kb"] for row in every) / 1024,
        "floor_total": sum(fl[0] for _, _, fl in stages),
        "floor_total_cpu": sum(fl[1] for _, _, fl in stages),
        "reruns": [row["script"] for row in send_rows if row["script"] == "make_requests.py"],
        "submit": stage(send_rows, "submit_batch.py"),
        "fetch": stage(send_rows, "fetch_results.py"),
        "polls_per_batch": calls.get("GET /v1/batches/{id}", 0) / batches,
        "lists_per_batch": calls.get("GET /v1/batches", 0) / batches,
        "calls": calls,
        "batches": batches,
    }


def hour_long(duration: float = 3600.0) -> dict[str, float]:
    """Status calls for a batch that completes after `duration` s, by `next_poll` (defaults)."""
    saved = {k: os.environ.pop(k) for k in ("BR_POLL_MIN", "BR_POLL_MAX") if k in os.environ}
    try:
        age, calls = 0.0, 1  # fetch_results reads the batch once before waiting
        while True:
            calls += 1  # batch_api.wait: one retrieve per loop
            if age >= duration:
                break
            age += next_poll(SimpleNamespace(created_at=time.time() - age))
        return {"duration": duration, "calls": calls, "late": age - duration}
    finally:
        os.environ.update(saved)


def queue(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The token-limit queue: -j8 with TOKEN_BUDGET=L against -j1, and the ideal time."""
    per_chunk = args.queue_requests
    data = work / "queue.jsonl"
    write_dataset(data, args.queue_chunks * per_chunk, seed=11, fixed=True)
    seconds = args.processing_seconds
    out: dict[str, Any] = {"requests": args.queue_chunks * per_chunk, "runs": []}
    for jobs in (args.queue_jobs, 1):
        emulator = Emulator(work / f"emulator-q{jobs}", "--processing-seconds", str(seconds))
        try:
            r = Run(work, f"queue-j{jobs}", data, emulator, per_chunk)
            if args.queue_poll_max:
                r.extra_env["BR_POLL_MAX"] = args.queue_poll_max
            r.make(f"{r.b}/chunks.mk")
            if "limit" not in out:
                # L: `--queue-wave` chunks, by the same token estimate the budget uses.
                tokens = [chunk_info(p).tokens for p in sorted(r.b.glob("chunk_*.jsonl"))]
                limit = args.queue_wave * max(tokens)
                out.update(chunks=len(tokens), tokens=sum(tokens), limit=limit)
                out.update(processing_seconds=seconds, ideal=sum(tokens) / limit * seconds)
            emulator.admin("faults", {"token_limit": out["limit"]})
            emulator.admin("reset_stats", {})
            took = r.make(f"-j{jobs}", "caption", f"TOKEN_BUDGET={out['limit']}")
            stats = emulator.admin("stats")
            span = emulator.batch_span()
        finally:
            emulator.stop()
        sent = stage(r.scripts(), "submit_batch.py", "fetch_results.py")
        batches = stats.get("batches_created") or 1
        out["runs"].append(
            {
                "jobs": jobs,
                "wall": took,
                "scripts_span": sent["wall"],
                "batch_span": span,
                "ratio": took / out["ideal"],
                "batches": batches,
                "polls_per_batch": stats["calls"].get("GET /v1/batches/{id}", 0) / batches,
            }
        )
        note(f"bench: queue -j{jobs}: {took:.1f}s (ideal {out['ideal']:.1f}s)")
    return out


# --------------------------------------------------------------------------- report


def report(figures: dict[str, Any]) -> str:
    main, hour, q = figures["pipeline"], figures["hour"], figures["queue"]
    lines = [
        f"`{figures['command']}` on {os.cpu_count()} CPUs, load average "
        f"{figures['load'][0]:.1f} at the start, {figures['load'][1]:.1f} at the end.",
        "",
    ]
    if main:
        n = main["n"]
        lines += [
            f"Pipeline: {n:,} JSONL records ({main['dataset_mb']:.0f} MB), MAX_REQUESTS="
            f"{main['max_requests']}, emulator with instant processing. Floor: json.loads + "
            "json.dumps of every line the stage reads, in the same run.",
            "",
            "| stage | runs | wall s | CPU s | records/s | peak RSS MB | floor s | wall / floor "
            "| CPU / floor CPU |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for s in main["stages"]:
            lines.append(
                f"| {s['stage']} | {s['runs']} | {s['wall']:.1f} | {s['cpu']:.1f} | "
                f"{n / max(s['wall'], 1e-9):,.0f} | {s['rss_mb']:.0f} | {s['floor']:.1f} | "
                f"{s['wall'] / s['floor']:.1f}x | {s['cpu'] / s['floor_cpu']:.1f}x |"
            )
        lines.append(
            f"| **whole run (make)** | | {main['make_wall']:.1f} | {main['make_cpu']:.1f} | "
            f"{n / main['make_wall']:,.0f} | {main['make_rss_mb']:.0f} | "
            f"{main['floor_total']:.1f} | {main['make_wall'] / main['floor_total']:.1f}x | "
            f"{main['make_cpu'] / main['floor_total_cpu']:.1f}x |"
        )
        sub, fet = main["submit"], main["fetch"]
        lines += [
            "",
            f"Per chunk: submit_batch {sub['mean_wall']:.2f}s wall ({sub['cpu'] / sub['runs']:.2f}"
            f"s CPU), fetch_results {fet['mean_wall']:.2f}s wall ({fet['cpu'] / fet['runs']:.2f}s "
            f"CPU). Status polls (GET /v1/batches/{{id}}) per batch: {main['polls_per_batch']:.1f};"
            f" batch list pages per batch: {main['lists_per_batch']:.1f}.",
        ]
        if main["reruns"]:
            lines.append(
                "(make_requests ran again in `make caption`: a script it depends on changed "
                "during the run.)"
            )
    lines.append(
        f"An hour-long batch (BR_POLL_MIN/BR_POLL_MAX defaults): {hour['calls']} status calls, "
        f"results fetched at most {hour['late']:.0f}s after it completes."
    )
    if q:
        lines += [
            "",
            f"Queue: {q['chunks']} chunks, {q['tokens']:,} estimated tokens = "
            f"{q['tokens'] / q['limit']:.1f} x the enqueued-token limit L={q['limit']:,}, "
            f"{q['processing_seconds']:g}s per batch; ideal {q['ideal']:.1f}s "
            f"(tokens / L x {q['processing_seconds']:g}s):",
            "",
            "| run | wall s | ratio to ideal | batches' span s | span ratio "
            "| status polls per batch |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        for r in q["runs"]:
            how = (
                "one batch at a time (`make -j1`)"
                if r["jobs"] == 1
                else f"`make -j{r['jobs']} caption TOKEN_BUDGET=L`"
            )
            lines.append(
                f"| {how} | {r['wall']:.1f} | {r['ratio']:.2f}x | {r['batch_span']:.0f} | "
                f"{r['batch_span'] / q['ideal']:.2f}x | {r['polls_per_batch']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="records in the dataset")
    parser.add_argument("--max-requests", type=int, default=1000, help="requests per chunk")
    parser.add_argument("--jobs", type=int, default=2, help="make -j for the pipeline run")
    parser.add_argument("--queue-chunks", type=int, help="chunks in the queue job (20)")
    parser.add_argument("--queue-requests", type=int, default=25, help="requests per chunk")
    parser.add_argument("--queue-wave", type=int, help="chunks that fit in L (2)")
    parser.add_argument("--queue-jobs", type=int, default=8)
    parser.add_argument("--processing-seconds", type=float, help="queue batches (4)")
    parser.add_argument("--queue-poll-max", help="BR_POLL_MAX for the queue runs")
    parser.add_argument("--no-queue", action="store_true", help="skip the queue part")
    parser.add_argument("--no-pipeline", action="store_true", help="only the queue part")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a tmp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the tmp dir")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    quick = args.quick
    if quick:
        args.n = min(args.n, 300)
        args.max_requests = min(args.max_requests, 100)
        args.queue_requests = min(args.queue_requests, 5)
    args.queue_chunks = args.queue_chunks or (4 if quick else 20)
    args.queue_wave = args.queue_wave or 2
    args.processing_seconds = args.processing_seconds or (0.5 if quick else 4.0)
    if args.n < 1 or args.queue_chunks < 1 or args.queue_wave < 1:
        raise UserError("--n, --queue-chunks and --queue-wave must be positive")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="br-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "bench.yaml").write_text(CONFIG)
    started = time.perf_counter()
    try:
        shown = sys.argv[1:] if argv is None else argv
        figures: dict[str, Any] = {"command": " ".join(["scripts/bench.py", *shown])}
        load = os.getloadavg()[0]
        figures["pipeline"] = None if args.no_pipeline else throughput(args, work)
        figures["hour"] = hour_long()
        figures["queue"] = None if args.no_queue else queue(args, work)
        figures["seconds"] = time.perf_counter() - started
        figures["load"] = [load, os.getloadavg()[0]]
    except BaseException:
        note(f"bench: the logs are kept in {work}")
        raise
    if not (args.workdir or args.keep):
        shutil.rmtree(work, ignore_errors=True)
    print(report(figures))
    print(f"\n(bench took {figures['seconds']:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
