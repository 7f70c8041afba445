"""What a finished step did and cost: `make report STEP=...` prints a table and writes report.json.

Reads the step's build directory: chunks.mk, chunk_NNN.jsonl (the model), results_NNN.jsonl
(outcomes, attempts and each response's usage), batch_NNN.id and retry_NNN_K.id (the batches),
requests.jsonl, skipped.jsonl and errors.jsonl. Each batch is fetched read-only from the API for
its `usage` and timestamps (--offline skips that). Per chunk and in total: requests succeeded,
failed by reason, retried; tokens (input, cached, output) from the responses and from the
batches; cost at the batch prices of the config's `prices:` (from the batches' usage, which is
what is billed, when every batch reports it; else from the responses); wall time from the first
batch's creation to the last one's end. Writes report.json atomically; a rerun rewrites it only
if something changed.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError

# isort: split

import re
from collections import Counter
from pathlib import Path
from typing import Any

from br.batches.ledger import Ledger
from br.config import Config
from br.prices import output_cost, price_of, usd
from br.records import iter_jsonl

END_FIELDS = ("completed_at", "failed_at", "expired_at", "cancelled_at")
TOKENS = ("input", "cached", "output")


def chunk_ids(directory: Path) -> list[str]:
    """The step's chunks: from chunks.mk, else whatever results files are there."""
    manifest = directory / "chunks.mk"
    if manifest.exists():
        m = re.search(r"^CHUNK_IDS :=(.*)$", manifest.read_text(encoding="utf-8"), re.M)
        if m:
            return m.group(1).split()
    return sorted(p.stem.split("_", 1)[1] for p in directory.glob("results_*.jsonl"))


def batch_id_files(directory: Path, cid: str, last_attempt: int) -> list[Path]:
    """batch_NNN.id, then retry_NNN_K.id in order, up to the last attempt the results record."""
    retries = []
    for path in directory.glob(f"retry_{cid}_*.id"):
        k = path.stem.rsplit("_", 1)[1]
        if k.isdigit() and int(k) <= last_attempt:
            retries.append((int(k), path))
    first = directory / f"batch_{cid}.id"
    return ([first] if first.exists() else []) + [p for _, p in sorted(retries)]


def zero_tokens() -> dict[str, int]:
    return dict.fromkeys(TOKENS, 0)


def add_tokens(into: dict[str, int], more: dict[str, int]) -> None:
    for k in TOKENS:
        into[k] += more.get(k, 0)


def response_tokens(usage: dict[str, Any] | None) -> dict[str, int]:
    """A response's usage: chat's prompt/completion names, the Responses API's input/output
    names, or an embedding's prompt_tokens alone."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    return {
        "input": int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0),
        "cached": int(details.get("cached_tokens") or 0),
        "output": int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
    }


def batch_summary(client: Any, batch_id: str) -> dict[str, Any]:
    """A batch's status, counts, usage and times, read from the API."""
    import openai

    try:
        b = client.batches.retrieve(batch_id).model_dump()
    except openai.NotFoundError:
        return {"id": batch_id, "status": "not_found", "usage": None}
    ended = next((b[k] for k in END_FIELDS if b.get(k)), None)
    usage = b.get("usage")
    tokens = None
    if usage:
        tokens = {
            "input": int(usage.get("input_tokens") or 0),
            "cached": int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
            "output": int(usage.get("output_tokens") or 0),
        }
    return {
        "id": batch_id,
        "status": b.get("status"),
        "model": (b.get("metadata") or {}).get("br_model") or b.get("model"),
        "created_at": b.get("created_at"),
        "ended_at": ended,
        "wall_seconds": ended - b["created_at"] if ended and b.get("created_at") else None,
        "request_counts": b.get("request_counts"),
        "usage": tokens,
    }


def cost(tokens: dict[str, int], price: dict[str, float | None] | None, model: str) -> float | None:
    if price is None:
        return None
    fresh = tokens["input"] - tokens["cached"]
    return (
        fresh * (price["input"] or 0) + tokens["cached"] * (price["cached_input"] or 0)
    ) / 1e6 + output_cost(tokens["output"], price, model)


def chunk_model(directory: Path, cid: str, batches: list[dict[str, Any]], config: Config) -> str:
    chunk = directory / f"chunk_{cid}.jsonl"
    if chunk.exists():
        for request in iter_jsonl(chunk):
            return str((request.get("body") or {}).get("model"))
    for b in batches:
        if b.get("model"):
            return str(b["model"])
    return str(config.data.get("model"))


def chunk_report(directory: Path, cid: str, config: Config, client: Any) -> dict[str, Any]:
    results = directory / f"results_{cid}.jsonl"
    if not results.exists():
        raise UserError(f"{results} does not exist; run make caption for this step first")
    rows = list(iter_jsonl(results))
    reasons: Counter[str] = Counter()
    from_responses = zero_tokens()
    for row in rows:
        if row.get("outcome") != "succeeded":
            reasons[(row.get("error") or {}).get("code") or "unknown"] += 1
        add_tokens(from_responses, response_tokens(row.get("usage")))
    last_attempt = max((int(r.get("attempts") or 1) for r in rows), default=1) - 1
    ids = [p.read_text().strip() for p in batch_id_files(directory, cid, last_attempt)]
    batches = [batch_summary(client, i) for i in ids if i] if client else []
    from_batches = None
    if batches and all(b.get("usage") is not None for b in batches):
        from_batches = zero_tokens()
        for b in batches:
            add_tokens(from_batches, b["usage"])
    model = chunk_model(directory, cid, batches, config)
    price = price_of(config, model)
    basis = "batches" if from_batches is not None else "responses"
    created = [b["created_at"] for b in batches if b.get("created_at")]
    ended = [b["ended_at"] for b in batches if b.get("ended_at")]
    return {
        "chunk": cid,
        "model": model,
        "requests": len(rows),
        "succeeded": sum(r.get("outcome") == "succeeded" for r in rows),
        "failed": sum(reasons.values()),
        "failed_by_reason": dict(reasons.most_common()),
        "retried": sum(int(r.get("attempts") or 1) > 1 for r in rows),
        "tokens_from_responses": from_responses,
        "tokens_from_batches": from_batches,
        "cost_basis": basis,
        "cost_usd": cost(from_batches or from_responses, price, model),
        "price": price,
        "started_at": min(created) if created else None,
        "ended_at": max(ended) if ended else None,
        "wall_seconds": max(ended) - min(created) if created and ended else None,
        "batches": batches if client else [{"id": i} for i in ids],
    }


def count_lines(path: Path) -> int:
    return sum(1 for _ in iter_jsonl(path)) if path.exists() else 0


def totals(directory: Path, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    responses, batches = zero_tokens(), zero_tokens()
    batch_usage_complete = bool(chunks)
    for c in chunks:
        reasons.update(c["failed_by_reason"])
        add_tokens(responses, c["tokens_from_responses"])
        if c["tokens_from_batches"] is None:
            batch_usage_complete = False
        else:
            add_tokens(batches, c["tokens_from_batches"])
    costs = [c["cost_usd"] for c in chunks]
    starts = [c["started_at"] for c in chunks if c["started_at"]]
    ends = [c["ended_at"] for c in chunks if c["ended_at"]]
    sent = sum(c["requests"] for c in chunks)
    invalid: Counter[str] = Counter(
        e.get("code") or "unknown"
        for e in (
            iter_jsonl(directory / "errors.jsonl") if (directory / "errors.jsonl").exists() else []
        )
        if e.get("stage") == "response"
    )
    requests = count_lines(directory / "requests.jsonl")
    return {
        "requests_in_step": requests,
        "skipped_records": count_lines(directory / "skipped.jsonl"),
        "reused_answers": max(0, requests - sent) if requests else 0,
        "requests": sent,
        "succeeded": sum(c["succeeded"] for c in chunks),
        "failed": sum(c["failed"] for c in chunks),
        "failed_by_reason": dict(reasons.most_common()),
        "invalid_responses_by_reason": dict(invalid.most_common()),
        "retried": sum(c["retried"] for c in chunks),
        "batches": sum(len(c["batches"]) for c in chunks),
        "tokens_from_responses": responses,
        "tokens_from_batches": batches if batch_usage_complete else None,
        "cost_usd": sum(costs) if costs and None not in costs else None,  # type: ignore[arg-type]
        "wall_seconds": max(ends) - min(starts) if starts and ends else None,
    }


def ledger_spend(
    directory: Path, config: Config, client: Any, chunks: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """Every batch the step's ledger ever created (earlier splits too: a changed input or
    prompt, retries, resends), priced from the batches' usage: what the step has cost."""
    ledger = Ledger(directory / "ledger.jsonl")
    if client is None or not ledger.chunk_of:
        return None
    known = {b["id"]: b for c in chunks for b in c["batches"]}
    spent, unpriced = 0.0, 0
    for batch_id in ledger.chunk_of:
        b = known.get(batch_id) or batch_summary(client, batch_id)
        if not b.get("usage"):
            continue  # not ended yet, or the server does not report usage
        price = price_of(config, str(b.get("model") or config.data.get("model")))
        value = cost(b["usage"], price, str(b.get("model")))
        if value is None:
            unpriced += 1
        else:
            spent += value
    return {"batches": len(ledger.chunk_of), "cost_usd": spent, "unpriced_batches": unpriced}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def table(report: dict[str, Any]) -> str:
    head = (
        "chunk",
        "requests",
        "ok",
        "failed",
        "retried",
        "batches",
        "input",
        "cached",
        "output",
        "cost",
        "wall",
    )
    lines: list[tuple[str, ...]] = [head]

    def cells(name: str, c: dict[str, Any], batches: int) -> tuple[str, ...]:
        t = c["tokens_from_batches"] or c["tokens_from_responses"]
        money = "no price" if c["cost_usd"] is None else usd(c["cost_usd"])
        return (
            name,
            f"{c['requests']:,}",
            f"{c['succeeded']:,}",
            f"{c['failed']:,}",
            f"{c['retried']:,}",
            str(batches),
            f"{t['input']:,}",
            f"{t['cached']:,}",
            f"{t['output']:,}",
            money,
            duration(c["wall_seconds"]),
        )

    for c in report["chunks"]:
        lines.append(cells(c["chunk"], c, len(c["batches"])))
    total = report["total"]
    lines.append(cells("total", total, total["batches"]))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    fmt = [("{:<%d}" if i == 0 else "{:>%d}") % w for i, w in enumerate(widths)]
    out = [f"report for {report['dir']}"]
    for n, row in enumerate(lines):
        if n == len(lines) - 1:
            out.append("  ".join("-" * w for w in widths))
        out.append("  ".join(f.format(v) for f, v in zip(fmt, row, strict=True)).rstrip())
    if total["failed_by_reason"]:
        why = ", ".join(f"{n} {code}" for code, n in total["failed_by_reason"].items())
        out.append(f"failed requests by reason: {why}")
    if total["invalid_responses_by_reason"]:
        why = ", ".join(f"{n} {c}" for c, n in total["invalid_responses_by_reason"].items())
        out.append(f"answers rejected at merge: {why} (see errors.jsonl)")
    extra = []
    if total["skipped_records"]:
        extra.append(f"{total['skipped_records']} record(s) skipped for missing fields")
    if total["reused_answers"]:
        extra.append(f"{total['reused_answers']} request(s) answered by earlier runs (no cost now)")
    if extra:
        out.append("; ".join(extra))
    basis = "the batches' usage" if total["tokens_from_batches"] else "the responses' usage"
    out.append(f"tokens and cost from {basis}, at the batch prices in the config's prices: table")
    for model in sorted({c["model"] for c in report["chunks"] if c["price"] is None}):
        out.append(f"no price for model {model} in the config's prices: (cost not computed)")
    return "\n".join(out)
