"""Look at and cancel batches: `status` (the last LIMIT, filtered with jq), `check` (one batch),
`cancel` (a step's batches still in flight, from the batch ids in its build directory).

    python scripts/batches.py status --limit 10 --filter 'select(.status == "in_progress")'
    python scripts/batches.py check batch_abc123
    python scripts/batches.py cancel --dir build/example/caption
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError

# isort: split

import itertools
import json
import time
from pathlib import Path
from typing import Any

from br.answers.outcomes import IN_FLIGHT
from br.files import write_text
from br.prompts.build import compile_jq


def when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def row(batch: dict[str, Any]) -> str:
    counts = batch.get("request_counts") or {}
    done = f"{counts.get('completed', 0)}+{counts.get('failed', 0)}/{counts.get('total', 0)}"
    step = (batch.get("metadata") or {}).get("br_step", "")
    return (
        f"{batch['id']:<40} {batch['status']:<12} {done:>14}  {when(batch['created_at'])}  {step}"
    )


def last_batches(client: Any, limit: int) -> list[Any]:
    """The last `limit` batches on the account, newest first."""
    return list(itertools.islice(client.batches.list(limit=min(limit, 100)), limit))


def status(client: Any, limit: int, filter_: str) -> int:
    program = compile_jq(filter_, "FILTER")
    print(f"{'batch':<40} {'status':<12} {'done+failed/all':>14}  {'created':<19}  step")
    shown = 0
    for batch in last_batches(client, limit):
        for out in program.input_value(batch.model_dump(mode="json")):
            if isinstance(out, dict) and "id" in out and "status" in out:
                print(row(out))
            else:
                print(json.dumps(out, ensure_ascii=False))
            shown += 1
    if not shown:
        print("(no batches)")
    return 0


def check(client: Any, batch_id: str) -> int:
    if not batch_id:
        raise UserError("no batch id: make check BATCH=batch_...")
    import openai

    try:
        batch = client.batches.retrieve(batch_id)
    except openai.NotFoundError:
        raise UserError(f"no batch {batch_id} on this account; `make status` lists them")
    data = batch.model_dump(mode="json", exclude_none=True)
    for key in [k for k in data if k.endswith("_at")]:
        data[key] = f"{data[key]} ({when(data[key])})"
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def acknowledge(directory: Path, nnn: str, batch_id: str) -> None:
    """batch_NNN.cancelled names the batch: you were told, so the next run sends the rest."""
    ack = directory / f"batch_{nnn}.cancelled"
    told = ack.read_text().split() if ack.exists() else []
    if batch_id not in told:
        write_text(ack, "".join(f"{b}\n" for b in [*told, batch_id]))


def cancel(client: Any, directory: Path) -> int:
    ids = sorted(directory.glob("batch_*.id")) + sorted(directory.glob("retry_*.id"))
    if not ids:
        raise UserError(f"{directory} has no batch ids: nothing of this step was submitted")
    cancelled = 0
    for path in ids:
        batch = client.batches.retrieve(path.read_text().strip())
        if batch.status in IN_FLIGHT - {"cancelling"}:
            batch = client.batches.cancel(batch.id)
            cancelled += 1
            acknowledge(directory, path.stem.split("_")[1], batch.id)
        print(f"{path.name}: {batch.id} {batch.status}")
    print(f"cancelled {cancelled} batch(es); rerun the make command to send what they did not do")
    return 0
