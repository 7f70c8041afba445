"""Before a create that nothing on this machine knows about: did a run we have no record of
(build/ deleted with the machine's state, or another machine) make this batch already?

A provider that sets `recall` (seconds back: how long its batches' results are kept) has its
batch list read once per run, back to then, the first time a chunk identity is about to be
created with neither the ledger nor the machine's index naming a batch for it. Batches this
machine knows (the ledger, and every batch of the machine's index, read once after the list:
another job's, or an earlier attempt of this chunk) are never candidates, nor one that
cannot hold the chunk's rows (failed, cancelled, expired, or its results gone).

- A provider whose batches carry our label (Gemini's display name): the oldest batch labelled
  with this identity is adopted.
- A provider without labels (Anthropic): a candidate has as many requests as the chunk
  (request_counts) and was made within the horizon (created_at); an ended one is adopted when
  its results hold exactly the chunk's custom_ids (which name each request's hash: the same
  requests), read until the first that is not ours. One still running cannot be told: the run
  stops with one line naming the chunk and the two ways forward (an id file, or RESEND=1).

A server that cannot list batches gets no recall (nothing to read): the chunk is created.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from br.batches.chunk import ChunkInfo
from br.batches.provider import GONE, Batch, NotFound, Provider, Unlistable

SLACK = 300  # seconds of clock skew allowed between us and the server


def batches_since(provider: Provider, since: float) -> Iterator[Batch]:
    """Batches newest first, back to `since` (the list is newest first); Unlistable without it."""
    for page in provider.pages():
        for batch in page:
            if batch.created_at < since - SLACK:
                return
            yield batch


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


class Ambiguous(Exception):
    """A candidate still running, of the chunk's size, that nothing explains."""

    def __init__(self, batch: Batch) -> None:
        super().__init__(batch.id)
        self.batch = batch


class Recall:
    """The batch list of one run, read once, and the earlier batch of a chunk on it."""

    def __init__(self, provider: Provider, machine: Callable[[], frozenset[str]]) -> None:
        self.provider, self.machine = provider, machine
        self.horizon = float(getattr(provider, "recall", 0) or 0)
        self._listed: list[Batch] | None = None
        self.made_here: frozenset[str] = frozenset()

    def listed(self) -> list[Batch]:
        """The list back to the horizon, once; then the batches the machine's index names
        (read after the list, so a batch on it that a run here made is among them)."""
        if self._listed is None:
            try:
                self._listed = list(batches_since(self.provider, time.time() - self.horizon))
            except Unlistable:
                self._listed = []
            self.made_here = self.machine()
        return self._listed

    def find(
        self, chunk: ChunkInfo, attempt: int, file_id: str | None, known: frozenset[str]
    ) -> Batch | None:
        """The earlier batch of this chunk identity on the server, or None; UserError when a
        candidate still running cannot be told apart."""
        if not self.horizon:
            return None
        listed = self.listed()
        known = known | self.made_here
        candidates = [
            b
            for b in reversed(listed)  # oldest first: the first one sent is kept
            if b.id not in known and b.status not in GONE
        ]
        labelled = getattr(self.provider, "labels", True)
        for batch in candidates:
            if labelled and batch.key != (chunk.sha, attempt):
                continue
            if not labelled:
                try:
                    held = self.provider.holds(batch, file_id)  # type: ignore[attr-defined]
                except NotFound:
                    continue  # its results are gone: it serves nothing
                if held is None and batch.id not in self.machine():  # (made here since?)
                    raise Ambiguous(batch)
                if not held:
                    continue  # not ours, or a run on this machine made it after the list
            if self.provider.results_kept(batch):
                return batch
        return None


def ambiguous(chunk: ChunkInfo, batch: Batch, where: object) -> str:
    """One line: a running batch of this chunk's size that no record of ours explains.
    The two ways forward are submission.py's for a create whose outcome is unknown."""
    return (
        f"{chunk.path.name}: batch {batch.id}, made at {when(batch.created_at)} by a run this "
        f"machine has no record of, is still {batch.status} with as many requests, and the "
        "server cannot tell before it ends whether it holds this chunk; either write the batch "
        f"id (see the server's dashboard) into {where} and rerun, or rerun with RESEND=1 to "
        "send it again (it may then be paid twice)"
    )
