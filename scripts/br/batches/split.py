"""requests.jsonl -> chunks the Batch API accepts (split_requests.py), leaving out what
answers/ already answers; a chunk whose requests changed sets its old batch ids aside."""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError

# isort: split

import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TypeVar

from br import journal
from br.batches.chunk import info_text
from br.digests import DigestSet
from br.files import move_aside
from br.layout import StepDir, chunk_id, hashes_of
from br.limits import MAX_EMBEDDING_INPUTS, MAX_FILE_BYTES
from br.prompts import made
from br.prompts.images.identity import MARKER, materialise, request_hash
from br.records import _DECODER, dumps


def answered_hashes(answers_dir: Path) -> DigestSet:
    """Request hashes with a final answer: a success, or a failure that retrying cannot fix.
    On disk (digests.py), so a million answers do not sit in memory."""
    done = DigestSet(answers_dir.parent if answers_dir.parent.is_dir() else None)
    for path in sorted(answers_dir.glob("*.jsonl")) if answers_dir.is_dir() else []:
        for row in journal.rows(path):  # a live run's journal too (sent marks left out)
            if row.get("outcome") == "succeeded" or not row.get("retryable", True):
                done.add(bytes.fromhex(row["hash"])[:16])
    done.flush()
    return done


CUSTOM_ID = b'{"custom_id":'  # how a request line of make_requests starts
IMAGE = MARKER.encode()


@dataclass
class Known:
    """What requests.hashes says of the pending lines, in order (None: not known, or a line
    with a local image, whose tokens the chunk's data URL settles), for chunk.py's info files;
    nothing at all (`model` None) while it does not describe requests.jsonl."""

    model: str | None = None
    endpoint: str | None = None
    found: deque[tuple[bytes, int] | None] = field(default_factory=deque)

    def take(self, n: int) -> list[tuple[bytes, int] | None]:
        return [self.found.popleft() for _ in range(n)] if self.model else []


def pending_lines(
    requests: Path,
    done: DigestSet,
    total: list[int],
    known: Known | None = None,
    trust: bool = True,
) -> Iterator[bytes]:
    """The requests not answered before, as the bytes of their lines; `total` counts [all,
    pending] as they go by. Each request's hash is read from requests.hashes while it was
    written for requests.jsonl's bytes (made.py; then also given to `known`), else computed
    (and with `trust` False). A damaged requests.hashes raises made.Untrusted: the caller
    starts again without it."""
    known = known or Known()
    with open(requests, "rb") as f:
        found = made.known(requests, f) if trust else None
        if found is not None:
            known.model, known.endpoint = found[0].model, found[0].endpoint
        while raw := list(islice(f, 1000)):
            batch = [line for line in raw if line.strip()]
            if found is not None:
                pairs = [next(found[1], None) for _ in batch]
                if None in pairs:
                    raise made.Untrusted(f"{hashes_of(requests)} has fewer lines than {requests}")
                keys = [pair[0][:16] for pair in pairs if pair is not None]
            elif len(done):
                texts = [x.decode() for x in batch]
                keys = [bytes.fromhex(request_hash(json.loads(x), x))[:16] for x in texts]
            flags = done.contains(keys) if len(done) else [False] * len(batch)
            for i, (line, answered) in enumerate(zip(batch, flags, strict=True)):
                total[0] += 1
                if answered:
                    continue
                total[1] += 1
                line = line if line.endswith(b"\n") else line + b"\n"
                if IMAGE in line:
                    # A local image's reference becomes its data URL: inline bytes live only
                    # in the chunks that send them (prompts/images/).
                    line = materialise(line.decode()).encode()
                    if found is not None:
                        known.found.append(None)
                elif found is not None:
                    known.found.append(pairs[i])
                yield line


def write_chunk(path: Path, lines: list[bytes], known: Known, own: bool) -> Path | None:
    """Write one chunk (fsynced), and beside it its info file (chunk.py) when `known` has every
    line's hash and tokens and the lines are the pipeline's own (`own`): that file, or None."""
    sha = hashlib.sha256()
    write_synced(path, lines, sha.update)
    found = known.take(len(lines))
    if not (own and found and None not in found) or known.model is None or not known.endpoint:
        return None
    ids = []
    for line in lines:
        if not line.startswith(CUSTOM_ID):
            return None
        ids.append(_DECODER.raw_decode(line.decode(), len(CUSTOM_ID))[0])
    pairs = [pair for pair in found if pair is not None]
    info = path.with_suffix(".info")
    text = info_text(sha.hexdigest(), known.model, known.endpoint, ids, pairs)
    write_synced(info, [text.encode()])  # on disk, not held: a million requests make 1,000
    return info


def write_synced(
    path: Path, lines: list[bytes], seen: Callable[[bytes], None] | None = None
) -> None:
    """Write `lines` to `path` and fsync it; `seen` is given each line as it is written."""
    with open(path, "wb") as f:
        for line in lines:
            f.write(line)
            if seen is not None:
                seen(line)
        f.flush()
        os.fsync(f.fileno())


def shaped(lines: Iterator[bytes], shape: Callable[[dict], dict] | None) -> Iterator[bytes]:
    """Each pending line as the provider sends it (provider.shape), where its lines are not
    the pipeline's own: a chunk file holds exactly what is sent. None: as they are."""
    if shape is None:
        yield from lines
        return
    for line in lines:
        yield (dumps(shape(json.loads(line))) + "\n").encode()


def embedding_inputs(line: str | bytes) -> int:
    """How many inputs an embeddings request holds (0 for other endpoints)."""
    if ('"/v1/embeddings"' if isinstance(line, str) else b'"/v1/embeddings"') not in line:
        return 0
    value = (json.loads(line).get("body") or {}).get("input")
    return len(value) if isinstance(value, list) else 1


Line = TypeVar("Line", str, bytes)


def utf8_size(line: str | bytes) -> int:
    return len(line) if isinstance(line, bytes) else len(line.encode())


def chunks(
    lines: Iterator[Line],
    max_requests: int,
    max_bytes: int,
    size_of: Callable[[Line], int] = utf8_size,
    api_bytes: int = MAX_FILE_BYTES,
) -> Iterator[list[Line]]:
    """Requests in batches the API accepts: at most max_requests and max_bytes each, and at most
    MAX_EMBEDDING_INPUTS embedding inputs (br/limits.py); `api_bytes` is the provider's own
    limit, named when one request is over max_bytes."""
    chunk: list[Line] = []
    size = inputs = 0
    for line in lines:
        n = size_of(line)  # plan.py: with its images inline
        k = embedding_inputs(line)
        if n > max_bytes:
            raise UserError(
                f"one request is {n} bytes, over MAX_BYTES={max_bytes}; shrink it (use image URLs, "
                f"not base64 data) or raise MAX_BYTES (the API's limit is {api_bytes})"
            )
        full = len(chunk) >= max_requests or size + n > max_bytes
        if chunk and (full or inputs + k > MAX_EMBEDDING_INPUTS):
            yield chunk
            chunk, size, inputs = [], 0, 0
        chunk.append(line)
        size += n
        inputs += k
    if chunk:
        yield chunk


def set_aside(step: StepDir, nnn: str) -> None:
    """Move a chunk's batch ids (and the note of a cancel) to superseded/: a paid batch's record
    is never deleted (and the ledger keeps every batch too). Its retries and results are
    dropped: answers/ has their rows. The chunk file itself is the caller's."""
    for path in [*step.id_files(nnn), step.cancelled(nnn)]:
        if path.exists():
            move_aside(path)
    for path in step.retry_files(nnn):
        path.unlink()
    step.results(nnn).unlink(missing_ok=True)


def remove_stale(step: StepDir, keep: set[str]) -> None:
    """Drop chunks (and what was built from them) that the new split no longer has."""
    for chunk in step.chunk_files():
        nnn = chunk_id(chunk)
        if nnn not in keep:
            set_aside(step, nnn)
            chunk.unlink()
            step.chunk_info(nnn).unlink(missing_ok=True)
