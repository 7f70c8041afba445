"""`make bench`: the pipeline's speed, memory and API calls, measured against the emulator.

Five parts, each in a scratch directory (removed afterwards unless --keep or --workdir), each
with its own emulator and its own machine state ($BR_STATE_DIR), all through the real make:

1. floor: `make caption` on --floor-n records (a JSON list) at the default MAX_REQUESTS=1000
   against an instant emulator, beside the same job written by hand the cookbook way in one
   Python process with the openai SDK (build the lines, upload, create, poll every second,
   download, merge by custom_id), timed in the same run. CPU is user+sys of every process.
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

Prints markdown tables; --json PATH writes the figures. Nothing in the project's build/ is
touched.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, note, run

# isort: split

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from br.batches.chunk import chunk_info
from br.batches.polling import interval
from br.layout import name_of

ROOT = Path(__file__).resolve().parent.parent
STEP = "caption"
KEY = "bench-key-not-secret"
RSS_TARGET_MB = 150
CONFIG = """\
model: gpt-4o-mini
caption:
  system: You write factual, detailed captions for news photographs.
  user: |
    Headline: {title}
    Published caption: {caption}
    Article: {article}
    Describe the photograph in two or three sentences, using the headline and caption.
  image_detail: low
  response_key: generated_caption
  max_tokens: 300
"""
# Runs a script like `.venv/bin/python`, then appends its wall time, CPU and peak RSS to a log.
RECORDER = """\
#!{python} -S
import json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
start = time.time()
pid = os.posix_spawn({python!r}, [{python!r}, *sys.argv[1:]], os.environ,
                     setsigdef=(signal.SIGINT,))
_, status, usage = os.wait4(pid, 0)
row = {{"script": os.path.basename(sys.argv[1]) if len(sys.argv) > 1 else "-",
       "collect": "--collect" in sys.argv, "start": start, "end": time.time(),
       "rss_kb": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime,
       "rc": os.waitstatus_to_exitcode(status)}}
with open({log!r}, "a") as f:
    f.write(json.dumps(row) + "\\n")
sys.exit(row["rc"] if row["rc"] >= 0 else 128 - row["rc"])
"""
# The job written by hand, the cookbook way: one process, the openai SDK, nothing of ours.
HANDWRITTEN = """\
import json, sys, time
import openai, yaml

data, config, out, per_batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
step = yaml.safe_load(open(config))["caption"]
with open(data) as f:
    records = json.load(f)
lines = []
for r in records:
    content = [{"type": "text", "text": step["user"].format_map(r)},
               {"type": "image_url", "image_url": {"url": r["image_url"], "detail": "low"}}]
    body = {"model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": step["system"]},
                         {"role": "user", "content": content}],
            "max_tokens": step["max_tokens"]}
    lines.append(json.dumps({"custom_id": r["image_path"], "method": "POST",
                             "url": "/v1/chat/completions", "body": body}))
client = openai.OpenAI()
pending = []
for i in range(0, len(lines), per_batch):
    text = "\\n".join(lines[i:i + per_batch]) + "\\n"
    f = client.files.create(file=(f"batch_{i}.jsonl", text.encode()), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    pending.append(b.id)
done = []
while pending:
    for batch_id in list(pending):
        b = client.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            done.append(b)
            pending.remove(batch_id)
    if pending:
        time.sleep(1)
answers = {}
for b in done:
    for line in client.files.content(b.output_file_id).text.splitlines():
        row = json.loads(line)
        answers[row["custom_id"]] = row["response"]["body"]["choices"][0]["message"]["content"]
for r in records:
    r["generated_caption"] = answers.get(r["image_path"])
with open(out, "w") as f:
    json.dump(records, f, ensure_ascii=False)
"""
# fmt: off
WORDS = [
    "harbour", "council", "minister", "river", "festival", "storm", "election", "museum",
    "railway", "school", "court", "market", "bridge", "hospital", "village", "coast", "stadium",
    "airport", "factory", "farmers", "police", "union", "protest", "parliament", "mayor",
    "rescue", "flood", "wildfire", "summit", "treaty", "exhibition", "concert", "orchestra",
    "striker", "coach", "season", "record", "drought", "harvest", "volcano", "glacier", "São",
    "Paulo", "Zoë", "Müller", "Kraków", "Reykjavík", "Nairobi", "Jakarta", "Montréal", "Oaxaca",
    "Tromsø",
]
# fmt: on


# --------------------------------------------------------------------------- synthetic data


def records(n: int, seed: int, fixed: bool = False) -> Iterator[dict[str, Any]]:
    """n news records of about 620 bytes. fixed: every text field the same length."""
    rng = random.Random(seed)

    def pool(k: int, words: tuple[int, int]) -> list[str]:
        return [
            " ".join(rng.choices(WORDS, k=rng.randint(*words))).capitalize() + "." for _ in range(k)
        ]

    titles, sentences = pool(4000, (5, 10)), pool(8000, (7, 15))
    for i in range(n):
        title, caption = rng.choice(titles), rng.choice(sentences)
        article = " ".join(rng.choices(sentences, k=rng.randint(2, 4)))
        if fixed:
            title, caption, article = (
                f"{title:<60.60}",
                f"{caption:<100.100}",
                f"{article:<300.300}",
            )
        yield {
            "image_path": f"images/{i:07d}.jpg",
            "image_url": f"https://images.example-news.org/2026/{i % 12 + 1:02d}/{i:07d}.jpg",
            "title": title,
            "date": f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
            "caption": caption,
            "article": article,
            "source": f"https://www.example-news.org/story/{i:07d}",
        }


def write_dataset(path: Path, n: int, seed: int = 7, fixed: bool = False) -> Path:
    """JSONL, or a JSON list (one record a line) when the name ends in .json."""
    jsonl = path.suffix == ".jsonl"
    with open(path, "w", encoding="utf-8") as f:
        if not jsonl:
            f.write("[\n")
        for i, record in enumerate(records(n, seed, fixed)):
            line = json.dumps(record, ensure_ascii=False)
            f.write(line + "\n" if jsonl else ("" if i == 0 else ",\n") + line)
        if not jsonl:
            f.write("\n]\n")
    return path


# --------------------------------------------------------------------------- processes


def timed(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run a command (output to `log`); its wall, and user+sys CPU of it and every process it
    waited for (wait4). A failure is one line with the log's tail."""
    start = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise UserError(f"{' '.join(cmd)} exited {proc.returncode}; its last lines:\n{tail}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


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

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET an admin endpoint, or POST `body` to it."""
        request = urllib.request.Request(
            f"{self.url.removesuffix('/v1')}/_emulator/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def calls(self) -> dict[str, int]:
        return dict(self.admin("stats").get("calls", {}))

    def batches(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest batches (ours, on a fresh emulator)."""
        request = urllib.request.Request(
            f"{self.url}/batches?limit={limit}", headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return list(json.loads(response.read())["data"])


@dataclass
class Job:
    """One dataset pushed through make: its build root, machine state and recorder log."""

    work: Path
    name: str
    input: Path
    emulator: Emulator
    max_requests: int = 1000
    env: dict[str, str] = field(default_factory=dict)

    @property
    def build(self) -> Path:
        return self.work / f"build-{self.name}"

    @property
    def b(self) -> Path:
        return self.build / name_of(str(self.input))[0] / STEP

    @property
    def merged(self) -> Path:
        return self.b / f"merged.{name_of(str(self.input))[1]}"

    @property
    def log(self) -> Path:
        return self.work / f"scripts-{self.name}.log"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MAKE", "BR_"))}
        env.update(OPENAI_BASE_URL=self.emulator.url, OPENAI_API_KEY=KEY)
        env.update(BR_STATE_DIR=str(self.work / f"state-{self.name}"), **self.env)
        return env

    def make(self, *args: str) -> dict[str, Any]:
        """The real make in the project root: its wall and CPU, and the recorder's rows."""
        recorder = self.work / f"py-{self.name}"
        recorder.write_text(RECORDER.format(python=sys.executable, log=str(self.log)))
        recorder.chmod(0o755)
        cmd = ["make", "--no-print-directory", *args, f"INPUT={self.input}"]
        cmd += [f"CONFIG={self.work / 'bench.yaml'}", f"STEP={STEP}", f"BUILD={self.build}"]
        cmd += [f"MAX_REQUESTS={self.max_requests}", f"PY={recorder}"]
        cmd += ["PREFLIGHT=0"]  # the synthetic image URLs have no server to check
        seen = len(self.log.read_text().splitlines()) if self.log.exists() else 0
        fig = timed(cmd, self.environment(), self.work / f"make-{self.name}.log")
        rows = [json.loads(line) for line in self.log.read_text().splitlines()[seen:]]
        return {**fig, "rows": rows, "peak_mb": max((r["rss_kb"] for r in rows), default=0) / 1024}


def stage(rows: list[dict[str, Any]], script: str) -> dict[str, Any]:
    """Wall (the sum of its runs), CPU and peak RSS of one script's runs."""
    mine = [r for r in rows if r["script"] == script]
    return {
        "runs": len(mine),
        "wall": sum(r["end"] - r["start"] for r in mine),
        "cpu": sum(r["cpu"] for r in mine),
        "rss_mb": max((r["rss_kb"] for r in mine), default=0) / 1024,
    }


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f) - (0 if path.suffix == ".jsonl" else 2)


# --------------------------------------------------------------------------- 1. the floor


def floor(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, per_batch = args.floor_n, args.floor_max_requests
    data = write_dataset(work / f"floor{n}.json", n)
    script = work / "handwritten.py"
    script.write_text(HANDWRITTEN)
    out = work / "handwritten.json"
    with Emulator(work / "emulator-floor", "--processing-seconds", "0") as emulator:
        job = Job(work, "floor", data, emulator, per_batch)
        env = job.environment()
        hand = timed(
            [
                sys.executable,
                str(script),
                str(data),
                str(work / "bench.yaml"),
                str(out),
                str(per_batch),
            ],
            env,
            work / "handwritten.log",
        )
        hand_calls = emulator.calls()
        emulator.admin("reset_stats", {})
        made = job.make("caption")
        make_calls = emulator.calls()
    answers = {r["image_path"]: r["generated_caption"] for r in json.loads(out.read_text())}
    merged = {
        r["image_path"]: r.get("generated_caption") for r in json.loads(job.merged.read_text())
    }
    per_m = 1e6 / n
    return {
        "n": n,
        "chunks": -(-n // per_batch),
        "max_requests": per_batch,
        "handwritten": {**hand, "calls": hand_calls, "cpu_per_million": hand["cpu"] * per_m},
        "make": {
            "wall": made["wall"],
            "cpu": made["cpu"],
            "cpu_per_million": made["cpu"] * per_m,
            "peak_mb": made["peak_mb"],
            "scripts": {
                s: stage(made["rows"], s) for s in sorted({r["script"] for r in made["rows"]})
            },
            "calls": make_calls,
        },
        "ratio": made["wall"] / hand["wall"],
        "cpu_ratio": made["cpu"] / hand["cpu"],
        "same_answers": answers == merged,
        "answered": sum(1 for v in merged.values() if v),
    }


# --------------------------------------------------------------------------- 2. growth

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
    "rerun, only ledger.jsonl left",
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
                    keep_only(job.b, "ledger.jsonl")
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
        job.make(f"{job.b}/chunks.mk")
        tokens = [chunk_info(p).tokens for p in sorted(job.b.glob("chunk_*.jsonl"))]
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
    gaps = refill_gaps(job.b / "ledger.jsonl")
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


# --------------------------------------------------------------------------- 5. polling


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


# --------------------------------------------------------------------------- report


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["--:"] * (len(head) - 1)
    return [f"| {' | '.join(head)} |", f"|{'|'.join(align)}|"] + [
        f"| {' | '.join(r)} |" for r in rows
    ]


def report(f: dict[str, Any]) -> str:
    load = f["load"]
    lines = [
        f"`{f['command']}`, {f['date']}, {os.cpu_count()} CPUs, load average {load[0]:.1f} "
        f"at the start, {load[1]:.1f} at the end; {f['seconds']:.0f} s in all.",
    ]
    if fl := f.get("floor"):
        h, m = fl["handwritten"], fl["make"]
        lines += [
            "",
            f"**Floor**: {fl['n']:,} records (a JSON list), {fl['chunks']} chunks of "
            f"{fl['max_requests']}, instant emulator. Hand-written: one Python process with the "
            "openai SDK (build, upload, create, poll every 1 s, download, merge). CPU: user+sys "
            "of every process.",
            "",
        ]
        lines += table(
            ["run", "wall s", "CPU s", "CPU s per 1M records", "peak RSS MB", "vs hand-written"],
            [
                ["hand-written, one process", f"{h['wall']:.1f}", f"{h['cpu']:.1f}",
                 f"{h['cpu_per_million']:.0f}", f"{h['rss_mb']:.0f}", "1x"],
                ["`make caption`", f"{m['wall']:.1f}", f"{m['cpu']:.1f}",
                 f"{m['cpu_per_million']:.0f}", f"{m['peak_mb']:.0f}",
                 f"{fl['ratio']:.1f}x wall, {fl['cpu_ratio']:.1f}x CPU"],
            ],
        )  # fmt: skip
        scripts = ", ".join(
            f"{s.removesuffix('.py')} {v['wall']:.1f}" for s, v in m["scripts"].items()
        )
        lines += [
            "",
            f"Same answers in both: {'yes' if fl['same_answers'] else 'NO'}. make's scripts, "
            f"wall s: {scripts}.",
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
    p = f["polling"]
    lines += [
        "",
        f"**Polling** (simulated, polling.interval at its defaults): a 24-hour batch costs "
        f"{p['calls']} status calls; the widest gap is {p['worst_gap']:.0f} s at age "
        f"{p['worst_gap_age']:.0f} s, {p['worst_ratio']:.2f} x the promise max(60 s, 5% of "
        f"age); the shortest {p['back_to_back']:.1f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="records for the growth part")
    parser.add_argument("--max-requests", type=int, default=1000, help="growth: per chunk")
    parser.add_argument("--floor-n", type=int, default=20_000, help="records for the floor part")
    parser.add_argument("--floor-max-requests", type=int, default=1000, help="floor: per chunk")
    parser.add_argument("--history", type=int, default=5000, help="batches and files seeded")
    parser.add_argument("--calls-chunks", type=int, default=10, help="chunks in the calls job")
    parser.add_argument("--calls-requests", type=int, default=20, help="requests per chunk")
    parser.add_argument("--queue-chunks", type=int, default=20)
    parser.add_argument("--queue-requests", type=int, default=25, help="requests per chunk")
    parser.add_argument("--queue-wave", type=int, default=2, help="chunks that fit in L")
    parser.add_argument("--processing-seconds", type=float, default=4.0, help="queue batches")
    parser.add_argument("--queue-poll-max", type=float, default=0.5, help="BR_POLL_MAX")
    parser.add_argument(
        "--parts", default="floor,growth,calls,queue", help="of floor, growth, calls, queue"
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
        args.calls_chunks, args.calls_requests = 3, 2
        args.queue_chunks, args.queue_requests = 4, 3
        args.processing_seconds = min(args.processing_seconds, 0.5)
    parts = set(args.parts.split(","))
    if parts - {"floor", "growth", "calls", "queue"}:
        raise UserError(f"--parts takes floor, growth, calls and queue, not {args.parts!r}")
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
    load = os.getloadavg()[0]
    try:
        for part, measure in (
            ("floor", floor),
            ("growth", growth),
            ("calls", api_calls),
            ("queue", queue),
        ):
            if part in parts:
                note(f"bench: {part}")
                figures[part] = measure(args, work)
        figures["polling"] = polling()
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
