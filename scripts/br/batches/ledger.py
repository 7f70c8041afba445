"""The submission ledger: every upload and batch create of a step, written down before the
call and answered after, so a rerun asks the server only about what it does not know.

`build/<input>/<step>/ledger.jsonl` is append-only, one JSON object a line, each line written
with one `write`; an intent is fsynced before the call it announces, and an answer (an upload
or create done, ended, fetched) is fsynced with the next intent (`durable=False`): the next
fsync of the file carries every line written before it, so a line is never durable ahead of
an earlier one. A kill loses nothing written; a power cut may lose answers after the last
intent, which leaves that intent unanswered: the rerun reads the list back to its moment (or
the machine's index names the batch), as after any lost answer, and nothing is paid twice.

    {"at": t, "op": "upload", "phase": "intent", "sha": S, "chunk": name, "filename": f, "bytes": n}
    {"at": t, "op": "upload", "phase": "done", "sha": S, "file_id": id}
    {"at": t, "op": "create", "phase": "intent", "sha": S, "attempt": k, "file_id": id,
     "metadata": {...}, "provider": p}
    {"at": t, "op": "create", "phase": "done", "sha": S, "attempt": k, "batch_id": id,
     "provider": p}
    {"at": t, "op": "create", "phase": "refused", "sha": S, "attempt": k, "error": text}
    {"at": t, "op": "ended", "batch_id": id, "status": s}     a terminal status, seen
    {"at": t, "op": "fetched", "batch_id": id}                its rows are in answers/
    {"at": t, "op": "resend", "sha": S, "attempt": k}         RESEND=1: an unknown create let go
    {"at": t, "op": "tidied", "batch_id": id, "files": [..]}  make tidy deleted its files
    {"at": t, "op": "lost", "batch_id": id}                   RESEND=1: its results were gone

`provider` (the config's `provider:` name; absent in ledgers written before it was noted, read
as the step's provider now) says whose API holds the batch: after `provider:` changes, the
batches still unfetched are collected from the API that made them (run_batches.py --collect).

Lines are never rewritten or removed (a paid batch's record is never deleted); a torn last
line, left by a kill in the middle of a write, is ignored when read (and the next entry starts
a new line after it). An "intent" without its
answer is an outcome we do not know: only that entry sends a rerun to the server, and only
back to its time.

A server that cannot list batches or files is worked with from the ledger alone
(submission.py). Beside it, the machine's index (machine.py) survives deleting build/.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from br.records import dumps


@dataclass
class Create:
    """What the ledger knows of one chunk identity (sha, attempt)."""

    batches: list[str] = field(default_factory=list)  # every batch created, oldest first
    unknown_since: float | None = None  # an intent without an answer: when it was sent
    provider: str | None = None  # whose API the create was sent to (None: not noted)


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.existed = self.path.exists()
        self.creates: dict[tuple[str, int], Create] = {}
        self.uploads: dict[str, str] = {}  # chunk sha -> file id
        self.upload_intents: dict[str, dict[str, Any]] = {}  # sha -> unanswered intent
        self.ended: dict[str, str] = {}  # batch id -> terminal status
        self.fetched: set[str] = set()
        self.tidied: set[str] = set()
        self.lost: set[str] = set()  # ended, its results gone from the server and from answers/
        self.chunk_of: dict[str, tuple[str, int, str]] = {}  # batch id -> (sha, attempt, chunk)
        self.made_by: dict[str, str] = {}  # batch id -> the provider that holds it (if noted)
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for raw in f.read().split(b"\n"):
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue  # a torn last line (or an empty one)
                if isinstance(entry, dict):
                    self._apply(entry)

    def _apply(self, e: dict[str, Any]) -> None:
        op, phase = e.get("op"), e.get("phase")
        if op == "upload":
            if phase == "intent":
                self.upload_intents[e["sha"]] = e
            elif phase == "done":
                self.uploads[e["sha"]] = e["file_id"]
                self.upload_intents.pop(e["sha"], None)
        elif op in ("create", "resend"):
            c = self.creates.setdefault((e["sha"], int(e["attempt"])), Create())
            if op == "resend" or phase in ("refused", "done"):
                c.unknown_since = None
            elif phase == "intent":
                c.unknown_since = float(e["at"])
                c.provider = e.get("provider")
            if phase == "done" and e.get("provider"):
                self.made_by[e["batch_id"]] = e["provider"]
            if phase == "done":
                if e["batch_id"] not in c.batches:
                    c.batches.append(e["batch_id"])
                self.chunk_of[e["batch_id"]] = (e["sha"], int(e["attempt"]), e.get("chunk", ""))
        elif op == "ended":
            self.ended[e["batch_id"]] = e["status"]
        elif op == "fetched":
            self.fetched.add(e["batch_id"])
        elif op == "lost":
            self.lost.add(e["batch_id"])
        elif op == "tidied":
            self.tidied.add(e["batch_id"])
            deleted = set(e.get("files") or [])
            self.uploads = {s: f for s, f in self.uploads.items() if f not in deleted}

    def record(self, op: str, durable: bool = True, **fields: Any) -> None:
        """Append one entry; `durable`: fsynced before this returns (an intent, before the
        call it announces), else with the next durable entry (see the top)."""
        entry = {"at": round(time.time(), 3), "op": op, **fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            # After a torn last line (a kill mid-write), start a new line: else this entry
            # would join the torn one and both would be unreadable.
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            os.write(fd, ("\n" if torn else "").encode() + (dumps(entry) + "\n").encode())
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._apply(entry)

    # ------------------------------------------------------------------ questions

    def create(self, sha: str, attempt: int) -> Create:
        return self.creates.get((sha, attempt)) or Create()

    def live(self, sha: str, attempt: int) -> str | None:
        """The newest batch made for this identity that did not fail nor lose its results."""
        for batch_id in reversed(self.create(sha, attempt).batches):
            if self.usable(batch_id):
                return batch_id
        return None

    def usable(self, batch_id: str) -> bool:
        return self.ended.get(batch_id) != "failed" and batch_id not in self.lost

    def unfetched(self) -> list[str]:
        """Batches created and not failed whose rows never reached answers/."""
        return [
            b
            for b in self.chunk_of
            if b not in self.fetched and self.ended.get(b) not in ("failed",)
        ]

    def pending_providers(self) -> set[str | None]:
        """Whose APIs hold what a collect must wait for: batches never fetched, and creates
        whose outcome is not known (None: not noted)."""
        return {self.made_by.get(b) for b in self.unfetched()} | {
            self.create(sha, attempt).provider for sha, attempt, _ in self.unknown()
        }

    def unknown(self) -> list[tuple[str, int, float]]:
        """(sha, attempt, since) of creates whose outcome is not known."""
        return [
            (sha, attempt, c.unknown_since)
            for (sha, attempt), c in self.creates.items()
            if c.unknown_since is not None
        ]
