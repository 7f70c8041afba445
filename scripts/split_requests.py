"""Split requests.jsonl into chunk_NNN.jsonl files the Batch API accepts, and write chunks.mk.

Requests whose body was already answered (a result in answers/, kept from earlier runs and keyed
by a hash of the request body) are left out, so changing a prompt or adding rows sends only the
requests that changed, wherever the chunk boundaries fall. Each chunk holds at most
--max-requests requests and --max-bytes bytes, neither above the provider's own limits (OpenAI:
50,000 requests, 200 MB; Anthropic: 100,000, 256 MB; Gemini: 2 GB a file, with no request limit
published, 50,000 kept; br/batches/*.py `limits`). A provider whose lines are not the pipeline's
(provider: anthropic, gemini) gets its own in the chunks, sized as they are sent
(br/batches/providers.py), so a chunk file holds exactly what is sent. chunks.mk lists the chunk
ids for the Makefile. Unchanged chunks keep their bytes and mtime; chunk files beyond the new
count are removed with their batch id and results.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, note, run

# isort: split

import shutil
import sys
from pathlib import Path

from br.batches.providers import provider_for, reshapes
from br.batches.split import (
    Known,
    answered_hashes,
    chunks,
    pending_lines,
    remove_stale,
    set_aside,
    shaped,
    write_chunk,
)
from br.config import load_config
from br.files import commit, same_bytes, write_text
from br.layout import StepDir
from br.limits import DEFAULT_MAX_BYTES
from br.prompts import made


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("requests", type=Path, help="requests.jsonl")
    parser.add_argument("--answers", required=True, type=Path, help="answers/ directory")
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--config", type=Path, help="the config: whose Batch API (provider:)")
    parser.add_argument("--step", default=None, help="the config's step")
    parser.add_argument(
        "-o", "--manifest", required=True, type=Path, help="the manifest of chunks to write"
    )
    args = parser.parse_args(argv)
    provider = provider_for(load_config(args.config) if args.config else None, args.step)
    limits = provider.limits
    limits.check(args.max_requests, args.max_bytes)

    step = StepDir(args.manifest.parent)
    done = answered_hashes(args.answers)  # closed with the process
    total = [0, 0]
    # Chunks are staged on disk first, streaming, so the id width is known before they are
    # named: a million requests make 1000 chunks.
    stage = step.new_stage()
    shape = provider.shape if reshapes(provider) else None

    def staged_chunks(trust: bool) -> list[tuple[Path, Path | None]]:
        """Each chunk staged, and its info file."""
        staged: list[tuple[Path, Path | None]] = []
        known = Known()
        total[:] = [0, 0]
        pending = shaped(pending_lines(args.requests, done, total, known, trust), shape)
        for lines in chunks(
            pending, args.max_requests, args.max_bytes, api_bytes=limits.max_file_bytes
        ):
            path = stage / f"{len(staged)}.jsonl"
            staged.append((path, write_chunk(path, lines, known, shape is None)))
        return staged

    try:
        try:
            staged = staged_chunks(trust=True)
        except made.Untrusted:  # a damaged requests.hashes: every hash computed instead
            staged = staged_chunks(trust=False)
        width = max(3, len(str(len(staged))))
        ids = [f"{i:0{width}d}" for i in range(1, len(staged) + 1)]
        for cid, (path, info) in zip(ids, staged, strict=True):
            target = step.chunk(cid)
            if target.exists() and not same_bytes(path, target):
                set_aside(step, cid)  # its batch was for other requests
            commit(path, target)
            if info is None:
                step.chunk_info(cid).unlink(missing_ok=True)
            else:
                commit(info, step.chunk_info(cid))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    remove_stale(step, set(ids))
    write_text(args.manifest, step.manifest_text(ids))
    if not total[0]:
        note(f"warning: {args.requests} holds no requests: nothing to send")
    reused = total[0] - total[1]
    note(
        f"{args.manifest.parent}: {total[1]} request(s) in {len(ids)} chunk(s) to send"
        + (f"; {reused} answered before, reused" if reused else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
