"""Look at and cancel batches: `status` (the last LIMIT, filtered with jq), `check` (one batch),
`cancel` (a step's batches still in flight, from the batch ids in its build directory).

The account is shown in the provider's own JSON (what its dashboard shows); a cancel is
acknowledged in batch_NNN.cancelled, so the next run sends the rest (ended.acknowledged).
"""

from __future__ import annotations

import json
import time
from typing import Any

from br.batches.openai import META_STEP
from br.batches.provider import IN_FLIGHT, NotFound, Provider
from br.cli import UserError
from br.config import compile_jq
from br.files import write_text
from br.layout import StepDir, chunk_id


def when(ts: int | str | None) -> str:
    if isinstance(ts, str):  # Anthropic's times are RFC 3339 already
        return ts[:19].replace("T", " ")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def row(batch: dict[str, Any]) -> str:
    """One line of `make status`: OpenAI's batch, or Anthropic's (processing_status, and
    request_counts of succeeded, errored, canceled, expired, processing)."""
    counts = batch.get("request_counts") or {}
    if "processing" in counts:
        failed = sum(counts.get(k, 0) for k in ("errored", "canceled", "expired"))
        done = f"{counts.get('succeeded', 0)}+{failed}/{sum(counts.values())}"
    else:
        done = f"{counts.get('completed', 0)}+{counts.get('failed', 0)}/{counts.get('total', 0)}"
    status = batch.get("status") or batch.get("processing_status") or ""
    step = (batch.get("metadata") or {}).get(META_STEP, "")
    return f"{batch['id']:<40} {status:<12} {done:>14}  {when(batch.get('created_at'))}  {step}"


def status(provider: Provider, limit: int, filter_: str) -> int:
    program = compile_jq(filter_, "FILTER")
    print(f"{'batch':<40} {'status':<12} {'done+failed/all':>14}  {'created':<19}  step")
    shown = 0
    for batch in provider.listing(limit):
        for out in program.input_value(batch):
            if (
                isinstance(out, dict)
                and "id" in out
                and ("status" in out or "processing_status" in out)
            ):
                print(row(out))
            else:
                print(json.dumps(out, ensure_ascii=False))
            shown += 1
    if not shown:
        print("(no batches)")
    return 0


def check(provider: Provider, batch_id: str) -> int:
    if not batch_id:
        raise UserError("no batch id: make check BATCH=batch_...")
    try:
        data = provider.describe(batch_id, nones=False)
    except NotFound:
        raise UserError(f"no batch {batch_id} on this account; `make status` lists them")
    for key in [k for k in data if k.endswith("_at") and not isinstance(data[k], str)]:
        data[key] = f"{data[key]} ({when(data[key])})"
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def acknowledge(step: StepDir, nnn: str, batch_id: str) -> None:
    """batch_NNN.cancelled names the batch: you were told, so the next run sends the rest."""
    ack = step.cancelled(nnn)
    told = ack.read_text().split() if ack.exists() else []
    if batch_id not in told:
        write_text(ack, "".join(f"{b}\n" for b in [*told, batch_id]))


def cancel(provider: Provider, step: StepDir) -> int:
    ids = step.id_files()
    if not ids:
        raise UserError(f"{step.root} has no batch ids: nothing of this step was submitted")
    cancelled = 0
    for path in ids:
        batch = provider.retrieve(path.read_text().strip())
        if batch.status in IN_FLIGHT - {"cancelling"}:
            batch = provider.cancel(batch.id)
            cancelled += 1
            acknowledge(step, chunk_id(path), batch.id)
        print(f"{path.name}: {batch.id} {batch.status}")
    print(f"cancelled {cancelled} batch(es); rerun the make command to send what they did not do")
    return 0
