"""Split requests.jsonl into chunk_NNN.jsonl files the Batch API accepts, and write chunks.mk.

Requests whose body was already answered (a result in answers/, kept from earlier runs and keyed
by a hash of the request body) are left out, so changing a prompt or adding rows sends only the
requests that changed, wherever the chunk boundaries fall. Each chunk holds at most
--max-requests requests (never above 50,000) and --max-bytes bytes (default safely under the
200 MB limit). chunks.mk lists the chunk ids for the Makefile. Unchanged chunks keep their bytes
and mtime; chunk files beyond the new count are removed with their batch id and results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cli import UserError, note, run
from files import commit, write_text
from records import iter_jsonl, request_hash

API_MAX_REQUESTS = 50_000
DEFAULT_MAX_BYTES = 180_000_000  # the API's limit is 209,715,200 bytes (200 MiB)


def answered_hashes(answers_dir: Path) -> set[bytes]:
    """Request hashes with a final answer: a success, or a failure that retrying cannot fix."""
    done: set[bytes] = set()
    for path in sorted(answers_dir.glob("*.jsonl")) if answers_dir.is_dir() else []:
        for row in iter_jsonl(path):
            if row.get("outcome") == "succeeded" or not row.get("retryable", True):
                done.add(bytes.fromhex(row["hash"])[:16])
    return done


def pending_lines(requests: Path, done: set[bytes]) -> Iterator[str]:
    with open(requests, encoding="utf-8") as f:
        for line in f:
            if line.strip() and bytes.fromhex(request_hash(json.loads(line)))[:16] not in done:
                yield line if line.endswith("\n") else line + "\n"


def chunks(lines: Iterator[str], max_requests: int, max_bytes: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for line in lines:
        n = len(line.encode())
        if n > max_bytes:
            raise UserError(
                f"one request is {n} bytes, over MAX_BYTES={max_bytes}; shrink it (use image URLs, "
                "not base64 data) or raise MAX_BYTES (the API's limit is 209715200)"
            )
        if chunk and (len(chunk) >= max_requests or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(line)
        size += n
    if chunk:
        yield chunk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("requests", type=Path, help="requests.jsonl")
    parser.add_argument("--answers", required=True, type=Path, help="answers/ directory")
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("-o", "--manifest", required=True, type=Path, help="chunks.mk")
    args = parser.parse_args(argv)
    if not 1 <= args.max_requests <= API_MAX_REQUESTS:
        raise UserError(f"MAX_REQUESTS must be 1 to {API_MAX_REQUESTS}, not {args.max_requests}")
    if args.max_bytes < 1:
        raise UserError(f"MAX_BYTES must be positive, not {args.max_bytes}")

    out = args.manifest.parent
    done = answered_hashes(args.answers)
    # Chunks are staged on disk first, streaming, so the id width is known before they are
    # named: a million requests make 1000 chunks.
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".split-"))
    try:
        staged = []
        for lines in chunks(pending_lines(args.requests, done), args.max_requests, args.max_bytes):
            staged.append(stage / str(len(staged)))
            with open(staged[-1], "w", encoding="utf-8") as f:
                f.writelines(lines)
                f.flush()
                os.fsync(f.fileno())
        width = max(3, len(str(len(staged))))
        ids = [f"{i:0{width}d}" for i in range(1, len(staged) + 1)]
        for cid, path in zip(ids, staged, strict=True):
            commit(path, out / f"chunk_{cid}.jsonl")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    remove_stale(out, set(ids))
    write_text(
        args.manifest,
        "# Written by split_requests.py from requests.jsonl: this step's chunks. Do not edit.\n"
        f"CHUNK_IDS := {' '.join(ids)}\n",
    )
    reused = f", {len(done)} answers reused" if done else ""
    note(f"{args.manifest.parent}: {len(ids)} chunk(s) to send{reused}")
    return 0


def remove_stale(out: Path, keep: set[str]) -> None:
    """Drop chunks (and what was built from them) that the new split no longer has.

    Their finished results stay in answers/, so nothing paid for is lost.
    """
    for chunk in out.glob("chunk_*.jsonl"):
        cid = chunk.stem.split("_", 1)[1]
        if cid not in keep:
            for name in ("chunk_{}.jsonl", "batch_{}.id", "batch_{}.cancelled", "results_{}.jsonl"):
                (out / name.format(cid)).unlink(missing_ok=True)
            for retry in out.glob(f"retry_{cid}_*"):
                retry.unlink()


if __name__ == "__main__":
    sys.exit(run(main))
