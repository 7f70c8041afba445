"""A chunk in a run: its file, read once, and its state.

A chunk file is parsed once per run (`chunk_info`): its identity (the sha256 of its bytes, with
the attempt number), its model and endpoint (one of each per batch), its estimated input
tokens (for the token budget) and each request's custom_id, hash and tokens. A follow-up
attempt, retry_NNN_K.jsonl, is written from the chunk's own lines (`ChunkInfo.subset`), so
its identity is known without reading it back; a retry of every request has the chunk's own
bytes, which is why the attempt is part of the identity.

A chunk's life is one explicit state, moved by small steps of the engine (engine.py: submit,
poll; ended.py: what an ended batch means):

    Queued   -> InFlight                 submitted, or a batch it already has adopted
    Queued   -> Waiting -> InFlight      the token budget had no room, then had
    InFlight -> Done                     every request has its final row: results_NNN.jsonl
    InFlight -> Queued | InFlight        the next attempt, sending what may still succeed
    InFlight -> Waiting -> InFlight      failed on the enqueued-token limit: till ours drain
    InFlight -> Stopped(reason)          failed validation, cancelled outside the run, never
                                         ended, or its results are lost
"""

from __future__ import annotations

import hashlib
import pickle
import tempfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from br.batches.provider import Batch
from br.batches.providers import line_identity
from br.cli import UserError
from br.config import ENDPOINT
from br.files import atomic_output, sha256_file
from br.layout import StepDir, chunk_id
from br.records import BOM, dumps, iter_jsonl_lines


@dataclass(frozen=True)
class ChunkInfo:
    """One batch's input file: identity, model, endpoint, tokens, and its requests in order.

    Kept small, as every chunk in flight holds one: a request is its custom_id, its tokens in
    an array and its hash as 32 bytes of one string (about 100 bytes, not 300 in a dict).
    """

    path: Path
    sha: str
    model: str
    tokens: int
    endpoint: str = ENDPOINT
    ids: tuple[Any, ...] = ()  # each request line's custom_id
    costs: array[int] = field(default_factory=lambda: array("Q"))  # each line's tokens
    digests: bytes = b""  # each line's request hash (sha256: 32 bytes), in line order
    slim: bool = False  # its requests let go (`Chunk.slim`): `full()` has them back
    spilled: tuple[Spill, int, int] | None = None  # where they are kept meanwhile

    def full(self) -> ChunkInfo:
        """With its requests: itself, or (slim) them back from the spill file, else (never
        spilled) from its file read again (the same bytes)."""
        if not self.slim:
            return self
        if self.spilled is not None:
            spill, at, size = self.spilled
            ids, costs, digests = spill.get(at, size)
            return ChunkInfo(
                self.path, self.sha, self.model, self.tokens, self.endpoint, ids, costs, digests
            )
        again = chunk_info(self.path)
        if again.sha != self.sha:
            raise UserError(
                f"{self.path} changed while its batch ran; put it back (or delete it and rerun "
                "make to split again: the batch's answers are kept)"
            )
        return again

    def hashes(self) -> Iterator[tuple[Any, str]]:
        """(custom_id, request hash in hex) of each line, in order."""
        for i, cid in enumerate(self.ids):
            yield cid, self.digests[32 * i : 32 * i + 32].hex()

    def subset(self, path: Path, wanted: set[str]) -> ChunkInfo:
        """The follow-up attempt sending the requests of `wanted`: their lines of this file,
        copied as they are to `path` (rewritten only if the bytes changed)."""
        picked = {i for i, cid in enumerate(self.ids) if cid in wanted}
        digest, i = hashlib.sha256(), 0
        with atomic_output(path, "wb") as out, open(self.path, "rb") as f:
            for n, raw in enumerate(f):
                raw = raw.removeprefix(BOM) if n == 0 else raw
                if not raw.decode("utf-8").strip():
                    continue  # as iter_jsonl skips it
                if i in picked:
                    line = raw if raw.endswith(b"\n") else raw + b"\n"
                    out.write(line)
                    digest.update(line)
                i += 1
        order = sorted(picked)
        return ChunkInfo(
            path,
            digest.hexdigest(),
            self.model,
            sum(self.costs[i] for i in order),
            self.endpoint,
            tuple(self.ids[i] for i in order),
            array("Q", (self.costs[i] for i in order)),
            b"".join(self.digests[32 * i : 32 * i + 32] for i in order),
        )


def chunk_info(path: Path) -> ChunkInfo:
    """Read a chunk file (once): one model and one endpoint, or one line saying which. Its
    requests' identities come from its info file when the split wrote one for these bytes."""
    sha = sha256_file(path)
    saved = saved_info(path, sha)
    if saved is not None:
        return saved
    ids: list[Any] = []
    costs, digests, models, urls = array("Q"), bytearray(), set(), set()
    for text, request in iter_jsonl_lines(path):
        cid, hashed, model, url, tokens = line_identity(request, text)  # whoever's line it is
        ids.append(cid)
        costs.append(tokens)
        digests += bytes.fromhex(hashed)
        models.add(model)
        urls.add(url)
    if len(models) != 1:
        raise UserError(f"{path} mixes models {sorted(map(str, models))}; one model per batch")
    if len(urls) != 1:
        raise UserError(f"{path} mixes endpoints {sorted(urls)}; one endpoint per batch")
    return ChunkInfo(
        path,
        sha,
        str(models.pop()),
        sum(costs),
        urls.pop(),
        tuple(ids),
        costs,
        bytes(digests),
    )


# ----------------------------------------------------------------------------- info files
# chunk_NNN.info, written by the split beside a chunk of the pipeline's own lines when
# requests.hashes gave each line's hash and tokens (prompts/made.py): the identities chunk_info
# would read and hash the chunk for, under the sha256 of the chunk's bytes. Read only for
# exactly those bytes: a chunk edited or split again is read as before.


def info_text(
    sha: str, model: str, endpoint: str, ids: list[Any], found: list[tuple[bytes, int]]
) -> str:
    """An info file's text: one JSON line."""
    digests = b"".join(sha32 for sha32, _ in found).hex()
    info = {"sha256": sha, "model": model, "endpoint": endpoint, "ids": ids}
    return dumps({**info, "tokens": [t for _, t in found], "hashes": digests}) + "\n"


def saved_info(path: Path, sha: str) -> ChunkInfo | None:
    """The chunk's identities from its info file, if it has one for these bytes."""
    import orjson  # run_batches has it loaded already; the split, which imports this, not

    try:
        info = orjson.loads(info_file(path).read_bytes())  # ids, counts, hex: read as json would
        if info["sha256"] != sha:
            return None
        ids, costs = tuple(info["ids"]), array("Q", info["tokens"])
        digests = bytes.fromhex(info["hashes"])
        if not (len(ids) == len(costs) and len(digests) == 32 * len(ids)):
            return None
        return ChunkInfo(
            path, sha, info["model"], sum(costs), info["endpoint"], ids, costs, digests
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def info_file(chunk: Path) -> Path:
    return StepDir(chunk.parent).chunk_info(chunk_id(chunk))


class Spill:
    """The requests of chunks in flight let go of (`Chunk.slim`), in one temporary file of
    the process (gone when it ends): read back when their batch ends, instead of reading and
    hashing the chunk again. The file only grows; a run's is about 100 bytes a request."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the run)

    def put(self, info: ChunkInfo) -> tuple[Spill, int, int]:
        blob = pickle.dumps((info.ids, info.costs, info.digests), pickle.HIGHEST_PROTOCOL)
        at = self.file.seek(0, 2)
        self.file.write(blob)
        return self, at, len(blob)

    def get(self, at: int, size: int) -> tuple[tuple[Any, ...], array[int], bytes]:
        self.file.seek(at)
        ids, costs, digests = pickle.loads(self.file.read(size))
        return ids, costs, digests


# ----------------------------------------------------------------------------- states


@dataclass(frozen=True)
class Queued:
    """To be submitted (or adopted) at its current attempt."""


@dataclass(frozen=True)
class Waiting:
    """Not submitted yet. `below` None: the token budget had no room (tried again each round);
    else its batch failed on the enqueued-token limit, and it waits till fewer than `below` of
    ours are in flight (with none: till `until`)."""

    below: int | None = None
    until: float = 0.0


@dataclass
class InFlight:
    """Its batch is on the server and not ended (as far as the last poll knows)."""

    batch_id: str
    batch: Batch | None = None
    next_at: float = 0.0  # when to poll it next
    done_seen: int = -1  # requests ended at the last poll (polling.next_poll)
    listed: bool = False  # seen on a page of the list: checked for a duplicate there
    reserved: bool = False  # its tokens are held in the machine's budget (machine.Budget)


@dataclass(frozen=True)
class Done:
    """results_NNN.jsonl is written (collecting: its rows are in answers/)."""


@dataclass(frozen=True)
class Stopped:
    """It cannot go on in this run; `reason` is the one line the run ends with."""

    reason: str


State = Queued | Waiting | InFlight | Done | Stopped


@dataclass
class Chunk:
    """One chunk of the step (or, collecting, one earlier batch) on its way to Done."""

    nnn: str
    path: Path  # chunk_NNN.jsonl; collecting, the earlier batch's input file
    earlier: bool = False  # collecting (--collect): only its rows matter, nothing is sent
    attempt: int = 0
    attempts: dict[int, ChunkInfo] = field(default_factory=dict)  # each attempt's file, read once
    state: State = field(default_factory=Queued)
    tried_unknown: dict[str, int] = field(default_factory=dict)  # custom_id -> unknown failures
    alone: int = 0  # enqueued-token-limit failures with nothing else of ours in flight

    @property
    def info(self) -> ChunkInfo:
        """The file of the current attempt."""
        if self.attempt not in self.attempts:
            self.attempts[self.attempt] = chunk_info(self.path)  # only attempt 0 is read
        return self.attempts[self.attempt]

    def slim(self, spill: Spill | None = None) -> None:
        """Each attempt's identity and tokens kept, its requests let go: once Done (dropped),
        or while in flight beyond the engine's HOLD (to `spill`, read back when it ends)."""
        for k, i in self.attempts.items():
            if not i.slim:
                kept = spill.put(i) if spill is not None else None
                self.attempts[k] = ChunkInfo(
                    i.path, i.sha, i.model, i.tokens, i.endpoint, slim=True, spilled=kept
                )
            elif spill is None:  # done: what was spilled is not needed again
                self.attempts[k] = replace(i, spilled=None)

    @property
    def requests(self) -> int:
        """Requests held in memory for it."""
        return sum(len(i.ids) for i in self.attempts.values())

    @property
    def flight(self) -> InFlight:
        assert isinstance(self.state, InFlight), self.state
        return self.state


def chunks_of(step: StepDir, only: list[str] | None) -> list[Chunk]:
    """The step's chunks (or `only` these); Done where results_NNN.jsonl is newer than the
    chunk and its id file, as make would judge: a rerun sends and asks nothing for them."""
    ids = only or step.chunk_ids()
    if ids is None:
        raise UserError(f"{step.manifest} does not exist; run make to split the requests first")
    chunks = []
    for nnn in ids:
        chunk = Chunk(nnn=nnn, path=step.chunk(nnn))
        if not chunk.path.exists():
            raise UserError(f"{chunk.path} does not exist; run make to split the requests")
        if fresh(step.results(nnn), chunk.path, step.batch_id(nnn)):
            chunk.state = Done()
        chunks.append(chunk)
    return chunks


def fresh(results: Path, *sources: Path) -> bool:
    """Make's rule: the results file exists and is newer than what it was made from."""
    if not results.exists():
        return False
    made = results.stat().st_mtime_ns
    return all(not s.exists() or s.stat().st_mtime_ns <= made for s in sources)
