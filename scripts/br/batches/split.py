"""Split requests.jsonl into chunk_NNN.jsonl files the Batch API accepts, and write chunks.mk.

Requests whose body was already answered (a result in answers/, kept from earlier runs and keyed
by a hash of the request body) are left out, so changing a prompt or adding rows sends only the
requests that changed, wherever the chunk boundaries fall. Each chunk holds at most
--max-requests requests (never above 50,000) and --max-bytes bytes (default safely under the
200 MB limit). chunks.mk lists the chunk ids for the Makefile. Unchanged chunks keep their bytes
and mtime; chunk files beyond the new count are removed with their batch id and results.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError

# isort: split

import json
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

from br.digests import DigestSet
from br.files import move_aside
from br.prompts.images.identity import materialise, request_hash
from br.records import iter_jsonl

API_MAX_REQUESTS = 50_000
API_MAX_EMBEDDING_INPUTS = 50_000  # across all requests of one embeddings batch
DEFAULT_MAX_BYTES = 180_000_000  # the API's limit is 209,715,200 bytes (200 MiB)


def answered_hashes(answers_dir: Path) -> DigestSet:
    """Request hashes with a final answer: a success, or a failure that retrying cannot fix.
    On disk (digests.py), so a million answers do not sit in memory."""
    done = DigestSet(answers_dir.parent if answers_dir.parent.is_dir() else None)
    for path in sorted(answers_dir.glob("*.jsonl")) if answers_dir.is_dir() else []:
        for row in iter_jsonl(path):
            if row.get("outcome") == "succeeded" or not row.get("retryable", True):
                done.add(bytes.fromhex(row["hash"])[:16])
    done.flush()
    return done


def pending_lines(requests: Path, done: DigestSet, total: list[int]) -> Iterator[str]:
    """The requests not answered before; `total` counts [all, pending] as they go by."""
    with open(requests, encoding="utf-8") as f:
        while raw := list(islice(f, 1000)):
            batch = [line for line in raw if line.strip()]
            keys = [bytes.fromhex(request_hash(json.loads(line)))[:16] for line in batch]
            flags = done.contains(keys) if len(done) else [False] * len(batch)
            for line, answered in zip(batch, flags, strict=True):
                total[0] += 1
                if not answered:
                    total[1] += 1
                    # A local image's reference becomes its data URL: inline bytes live only
                    # in the chunks that send them (images.py).
                    yield materialise(line if line.endswith("\n") else line + "\n")


def embedding_inputs(line: str) -> int:
    """How many inputs an embeddings request holds (0 for other endpoints)."""
    if '"/v1/embeddings"' not in line:
        return 0
    value = (json.loads(line).get("body") or {}).get("input")
    return len(value) if isinstance(value, list) else 1


def utf8_size(line: str) -> int:
    return len(line.encode())


def chunks(
    lines: Iterator[str],
    max_requests: int,
    max_bytes: int,
    size_of: Callable[[str], int] = utf8_size,
) -> Iterator[list[str]]:
    """Requests in batches the API accepts: at most max_requests and max_bytes each, and at most
    50,000 embedding inputs (docs/api-facts.md)."""
    chunk: list[str] = []
    size = inputs = 0
    for line in lines:
        n = size_of(line)  # plan.py: with its images inline
        k = embedding_inputs(line)
        if n > max_bytes:
            raise UserError(
                f"one request is {n} bytes, over MAX_BYTES={max_bytes}; shrink it (use image URLs, "
                "not base64 data) or raise MAX_BYTES (the API's limit is 209715200)"
            )
        full = len(chunk) >= max_requests or size + n > max_bytes
        if chunk and (full or inputs + k > API_MAX_EMBEDDING_INPUTS):
            yield chunk
            chunk, size, inputs = [], 0, 0
        chunk.append(line)
        size += n
        inputs += k
    if chunk:
        yield chunk


STALE = ("batch_{}.id", "batch_{}.cancelled", "retry_{}_*.id", "chunk_{}.jsonl", "retry_{}_*.jsonl")


def set_aside(out: Path, cid: str) -> None:
    """Move a chunk's files to superseded/, with its batch ids: a paid batch's record is never
    deleted (and the ledger keeps every batch too). Results are dropped: answers/ has them."""
    for pattern in STALE:
        for path in out.glob(pattern.format(cid)):
            if path.name.endswith(".id") or path.name.endswith(".cancelled"):
                move_aside(path)
            elif not path.name.startswith("chunk_"):
                path.unlink()
    (out / f"results_{cid}.jsonl").unlink(missing_ok=True)


def remove_stale(out: Path, keep: set[str]) -> None:
    """Drop chunks (and what was built from them) that the new split no longer has."""
    for chunk in out.glob("chunk_*.jsonl"):
        cid = chunk.stem.split("_", 1)[1]
        if cid not in keep:
            set_aside(out, cid)
            chunk.unlink()
