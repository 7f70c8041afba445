"""Part 1 of `make bench`, the floor: `make caption` beside the same job written by hand the
cookbook way (one Python process, the openai SDK), timed in the same run on the same data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from br.bench.data import write_dataset
from br.bench.runs import Emulator, Job, stage, timed

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
# The leanest peer (autobatcher, "drop-in AsyncOpenAI replacement for flex and batch
# inference", pip install autobatcher): the same job through its BatchOpenAI, one batch
# window. Run only with --peer-python, an interpreter that has it (it is no dependency of ours).
PEER = """\
import asyncio, json, os, sys
import yaml
from autobatcher import BatchOpenAI

data, config, out, per_batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
step = yaml.safe_load(open(config))["caption"]
with open(data) as f:
    records = json.load(f)

async def main():
    client = BatchOpenAI(base_url=os.environ["OPENAI_BASE_URL"],
                         api_key=os.environ["OPENAI_API_KEY"], completion_window="24h",
                         batch_size=per_batch, batch_window_seconds=0.5, poll_interval_seconds=1.0)
    async def one(r):
        content = [{"type": "text", "text": step["user"].format_map(r)},
                   {"type": "image_url", "image_url": {"url": r["image_url"], "detail": "low"}}]
        response = await client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=step["max_tokens"],
            messages=[{"role": "system", "content": step["system"]},
                      {"role": "user", "content": content}])
        return response.choices[0].message.content
    answers = await asyncio.gather(*(one(r) for r in records))
    await client.close()
    for r, a in zip(records, answers):
        r["generated_caption"] = a
    with open(out, "w") as f:
        json.dump(records, f, ensure_ascii=False)

asyncio.run(main())
"""


def floor(
    args: argparse.Namespace,
    work: Path,
    n: int | None = None,
    per_batch: int | None = None,
    name: str = "floor",
) -> dict[str, Any]:
    n = args.floor_n if n is None else n
    per_batch = args.floor_max_requests if per_batch is None else per_batch
    data = write_dataset(work / f"{name}{n}.json", n)
    script = work / "handwritten.py"
    script.write_text(HANDWRITTEN)
    out = work / f"handwritten-{name}.json"
    with Emulator(work / f"emulator-{name}", "--processing-seconds", "0") as emulator:
        job = Job(work, name, data, emulator, per_batch)
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
            work / f"handwritten-{name}.log",
        )
        hand_calls = emulator.calls()
        peer = None
        if args.peer_python:
            emulator.admin("reset_stats", {})
            (work / "peer.py").write_text(PEER)
            run = [str(args.peer_python), str(work / "peer.py"), str(data)]
            run += [str(work / "bench.yaml"), str(work / f"peer-{name}.json"), str(per_batch)]
            peer = {**timed(run, env, work / f"peer-{name}.log"), "calls": emulator.calls()}
        emulator.admin("reset_stats", {})
        made = job.make("caption")
        make_calls = emulator.calls()
    answers = {r["image_path"]: r["generated_caption"] for r in json.loads(out.read_text())}
    merged = {
        r["image_path"]: r.get("generated_caption") for r in json.loads(job.merged.read_text())
    }
    peer_out = work / f"peer-{name}.json"
    peer_answers = {
        r["image_path"]: r["generated_caption"]
        for r in (json.loads(peer_out.read_text()) if peer else [])
    }
    per_m = 1e6 / n
    return {
        "n": n,
        "chunks": -(-n // per_batch),
        "max_requests": per_batch,
        "handwritten": {**hand, "calls": hand_calls, "cpu_per_million": hand["cpu"] * per_m},
        "peer": peer and {**peer, "cpu_per_million": peer["cpu"] * per_m},
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
        # Its requests' bodies are its own (the emulator's answers echo a body's hash): whether
        # it answered every record.
        "peer_answered": sum(1 for v in peer_answers.values() if v) if peer else None,
        "answered": sum(1 for v in merged.values() if v),
    }
