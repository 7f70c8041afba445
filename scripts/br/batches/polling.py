"""When to ask about a batch, when to give up on one, and how waiting looks.

The schedule: a batch of age `a` is next polled after min(a/2, max(60 s, a/20)), never sooner
than BR_POLL_MIN (default 1 s) nor later than BR_POLL_MAX (default none); sooner where its
request counts say it ends sooner (`next_poll`). A finished batch is therefore noticed within
max(60 s, 5% of its age), and a 24-hour batch costs 118 status calls (eleven in its first
minute, twenty more to its twentieth, then growing by 5% a poll), not one a minute. How several
batches in flight share the calls: engine.py.

A batch that never ends (a server restarted under it) is given up past its `expires_at` (or
`created_at` + 24 h) plus BR_GIVE_UP_GRACE seconds (default an hour).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any

DAY = 86400


def poll_min() -> float:
    return float(os.environ.get("BR_POLL_MIN", "1"))


def poll_max() -> float:
    return float(os.environ.get("BR_POLL_MAX", "inf"))


def interval(age: float) -> float:
    """Seconds until the next poll of a batch `age` seconds old."""
    age = max(age, 0.0)
    return min(max(min(age / 2, max(60.0, age / 20)), poll_min()), poll_max())


def next_poll(batch: Any, now: float, done_before: int = -1) -> float:
    """Seconds until the next poll of a batch in flight: `interval`, or sooner when its
    request counts say it will end sooner (the rate so far, over what is left), never
    sooner than a quarter of the interval nor BR_POLL_MIN: a run whose queue waits for the
    budget this batch holds starts the next batch without idling most of an interval.
    Counts that have not moved since the last poll (`done_before`) predict nothing: a batch
    stalled near its end is polled on the schedule, not four times as often."""
    wait = interval(now - batch.created_at)
    counts = getattr(batch, "request_counts", None)
    started = getattr(batch, "in_progress_at", None)
    if batch.status != "in_progress" or not counts or not counts.total or started is None:
        return wait
    done = (counts.completed or 0) + (counts.failed or 0)
    if not 0 < done < counts.total or done == done_before:
        return wait
    eta = (now - started) * (counts.total - done) / done
    return min(wait, max(eta, wait / 4, poll_min()))


def deadline(batch: Any) -> float:
    """When a batch still not ended is given up."""
    expires = getattr(batch, "expires_at", None) or (batch.created_at + DAY)
    return expires + float(os.environ.get("BR_GIVE_UP_GRACE", "3600"))


class Progress:
    """The run's progress: a bar on a terminal, plain lines (when the counts change, and at
    least once a minute) in logs, CI and under make -j."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.started = time.time()
        parallel = any(s in os.environ.get("MAKEFLAGS", "") for s in ("-j", "jobserver"))
        self.bar: Any = None
        if sys.stderr.isatty() and not parallel:
            from tqdm import tqdm

            size = shutil.get_terminal_size()  # a pty that reports no size gets 80x24
            self.bar = tqdm(
                desc=label,
                total=total or None,
                unit="chunk",
                file=sys.stderr,
                ncols=min(size.columns, 120),
                nrows=max(size.lines, 10),
            )
        self.last_line, self.last_time = "", 0.0

    def update(
        self, chunks_done: int, stopped: int, flight: int, queued: int, requests: tuple[int, int]
    ) -> None:
        """Chunks finished or stopped, batches in flight and queued, and the requests ended
        of the batches in flight (as their request_counts say: a cancelled batch's share)."""
        ended, total = requests
        if self.bar is not None:
            self.bar.n = chunks_done
            self.bar.set_postfix_str(
                f"{flight} in flight ({ended}/{total} requests), {queued} queued, "
                f"{stopped} stopped",
                refresh=False,
            )
            self.bar.refresh()
            return
        line = (
            f"{self.label}: {chunks_done}/{self.total} chunks done, {flight} batch(es) in flight "
            f"({ended}/{total} requests ended), {queued} queued"
            + (f", {stopped} stopped" if stopped else "")
        )
        if line != self.last_line or time.time() - self.last_time > 60:
            elapsed = time.time() - self.started
            print(f"{line}, {elapsed:.0f}s elapsed", file=sys.stderr, flush=True)
            self.last_line, self.last_time = line, time.time()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
