"""What a finished step did and cost, from its build files (named by layout.StepDir) and,
with a client, each batch read back from the API for its billed usage and times.

Per chunk and in total: requests succeeded, failed by reason, retried; tokens (input, cached,
output) from the responses' usage and from the batches'; cost at the config's batch prices
(prices.py), from the batches' usage (what is billed) when every batch reports it, else from
the responses'; wall time from the first batch's creation to the last one's end. `build` gives
the report as a dict (report.json), `table` and `spend` its text.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError

# isort: split

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from br import journal
from br.answers import store
from br.batches.ledger import Ledger
from br.batches.provider import NotFound
from br.batches.providers import line_identity
from br.config import Config
from br.layout import StepDir, chunk_id
from br.prices import MODE_FACTOR, output_cost, price_of, usd
from br.records import iter_jsonl

END_FIELDS = ("completed_at", "failed_at", "expired_at", "cancelled_at", "ended_at")


def epoch(value: Any) -> Any:
    """A time as seconds since the epoch (Anthropic's are RFC 3339 strings)."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return value


TOKENS = ("input", "cached", "output")


def chunk_ids(step: StepDir) -> list[str]:
    """The step's chunks: those chunks.mk names, else whatever results files are there."""
    ids = step.chunk_ids()
    return ids if ids is not None else sorted(chunk_id(p) for p in step.result_files())


def batch_id_files(step: StepDir, cid: str, last_attempt: int) -> list[Path]:
    """The id file of each attempt up to the last one the results record, in order."""
    files = (step.attempt_id(cid, k) for k in range(last_attempt + 1))
    return [p for p in files if p.exists()]


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


def batch_summary(provider: Any, batch_id: str) -> dict[str, Any]:
    """A batch's status, counts, usage and times, read from the API (the provider's JSON:
    OpenAI's, or Anthropic's with RFC 3339 times and a processing_status)."""
    try:
        b = provider.describe(batch_id)
    except NotFound:
        return {"id": batch_id, "status": "not_found", "usage": None}
    b = {k: epoch(v) if k.endswith("_at") else v for k, v in b.items()}
    b.setdefault("status", b.get("processing_status"))
    if b["status"] is None:  # neither OpenAI's JSON nor Anthropic's: Gemini's Operation
        b.update(in_common(provider, batch_id, b))
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


def in_common(provider: Any, batch_id: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A batch's status, times and counts in the seam's words (provider.retrieve), for a
    provider whose own JSON names them otherwise; the end time from Gemini's Operation
    (`metadata.endTime`, RFC 3339)."""
    batch = provider.retrieve(batch_id)
    counts = batch.request_counts
    return {
        "status": batch.status,
        "created_at": batch.created_at,
        "ended_at": epoch((raw.get("metadata") or {}).get("endTime")),
        "request_counts": counts and {
            "total": counts.total, "completed": counts.completed, "failed": counts.failed
        },
    }  # fmt: skip


def cost(tokens: dict[str, int], price: dict[str, float | None] | None, model: str) -> float | None:
    if price is None:
        return None
    fresh = tokens["input"] - tokens["cached"]
    return (
        fresh * (price["input"] or 0) + tokens["cached"] * (price["cached_input"] or 0)
    ) / 1e6 + output_cost(tokens["output"], price, model)


def chunk_model(step: StepDir, cid: str, batches: list[dict[str, Any]], config: Config) -> str:
    chunk = step.chunk(cid)
    if chunk.exists():
        for request in iter_jsonl(chunk):
            return str(line_identity(request)[2])  # whichever provider's line it is
    for b in batches:
        if b.get("model"):
            return str(b["model"])
    return str(config.data.get("model"))


def chunk_report(step: StepDir, cid: str, config: Config, client: Any) -> dict[str, Any]:
    results = step.results(cid)
    if not results.exists():
        raise UserError(f"{results} does not exist; run make caption for this step first")
    rows = list(iter_jsonl(results))  # the answers/ rows of each request's last attempt
    reasons: Counter[str] = Counter()
    from_responses, batched, synchronous = zero_tokens(), zero_tokens(), []
    for row in rows:
        if not store.succeeded(row):
            reasons[store.failure(row).code] += 1
        tokens = response_tokens(row.get("usage"))
        add_tokens(from_responses, tokens)
        if store.mode(row) == "batch":
            add_tokens(batched, tokens)
        else:
            synchronous.append((tokens, MODE_FACTOR[store.mode(row)]))
    last_attempt = max((store.attempts(r) for r in rows), default=1) - 1
    ids = [p.read_text().strip() for p in batch_id_files(step, cid, last_attempt)]
    batches = [batch_summary(client, i) for i in ids if i] if client else []
    from_batches = None
    if batches and all(b.get("usage") is not None for b in batches):
        from_batches = zero_tokens()
        for b in batches:
            add_tokens(from_batches, b["usage"])
    model = chunk_model(step, cid, batches, config)
    price = price_of(config, model)
    basis = "batches" if from_batches is not None else "responses"
    created = [b["created_at"] for b in batches if b.get("created_at")]
    ended = [b["ended_at"] for b in batches if b.get("ended_at")]
    return {
        "chunk": cid,
        "model": model,
        "requests": len(rows),
        "succeeded": sum(store.succeeded(r) for r in rows),
        "failed": sum(reasons.values()),
        "failed_by_reason": dict(reasons.most_common()),
        "retried": sum(store.attempts(r) > 1 for r in rows),
        "tokens_from_responses": from_responses,
        "tokens_from_batches": from_batches,
        "cost_basis": basis,
        # A batch's usage covers its own requests; live answers cost their own prices.
        "cost_usd": priced(from_batches or batched, synchronous, price, model),
        "live_requests": len(synchronous),
        "price": price,
        "started_at": min(created) if created else None,
        "ended_at": max(ended) if ended else None,
        "wall_seconds": max(ended) - min(created) if created and ended else None,
        "batches": batches if client else [{"id": i} for i in ids],
    }


def priced(
    batched: dict[str, int],
    synchronous: list[tuple[dict[str, int], float]],
    price: dict[str, float | None] | None,
    model: str,
) -> float | None:
    """The cost of a chunk's batch tokens at batch prices, plus each answer got live (or
    flex) at its mode's prices (br/prices.py: MODE_FACTOR)."""
    total = cost(batched, price, model)
    if total is None:
        return None
    return total + sum((cost(t, price, model) or 0.0) * factor for t, factor in synchronous)


def count_lines(path: Path) -> int:
    return sum(1 for _ in iter_jsonl(path)) if path.exists() else 0


def totals(step: StepDir, chunks: list[dict[str, Any]]) -> dict[str, Any]:
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
        for e in (iter_jsonl(step.errors) if step.errors.exists() else [])
        if e.get("stage") == "response"
    )
    requests = count_lines(step.requests)
    return {
        "requests_in_step": requests,
        "skipped_records": count_lines(step.skipped),
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
        "maybe_paid_twice": journal.resent(step.live_journals(), step.answer_files()),
    }


def ledger_spend(
    step: StepDir, config: Config, client: Any, chunks: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """Every batch the step's ledger ever created (earlier splits too: a changed input or
    prompt, retries, resends), priced from the batches' usage: what the step has cost."""
    ledger = Ledger(step.ledger)
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


def build(
    step: StepDir, ids: list[str], config: Config, client: Any, max_cost: str
) -> dict[str, Any]:
    """The report of chunks `ids` (report.json); client None: from the files alone."""
    chunks = [chunk_report(step, cid, config, client) for cid in ids]
    total = totals(step, chunks)
    total["model"] = ", ".join(sorted({c["model"] for c in chunks}))
    total["max_cost_usd"] = config.max_cost(max_cost)
    spent = ledger_spend(step, config, client, chunks)
    return {"dir": str(step.root), "chunks": chunks, "total": total, "step": spent}


def spend(report: dict[str, Any]) -> list[str]:
    """What every batch of the step cost (when the ledger knows more than these chunks'), and
    the spend against MAX_COST."""
    lines = []
    total, step = report["total"], report["step"]
    cap, spent = total["max_cost_usd"], total["cost_usd"]
    if step and step["batches"] > total["batches"]:
        lines.append(
            f"all {step['batches']} batches this step created (earlier inputs and prompts "
            f"too): {usd(step['cost_usd'])}"
            + (f", {step['unpriced_batches']} with no price" if step["unpriced_batches"] else "")
        )
    if step and not step["unpriced_batches"]:
        spent = max(spent or 0.0, step["cost_usd"])
    if cap is not None:
        share = f" ({spent / cap:.0%} of it)" if spent is not None and cap else ""
        money = "unknown (no price)" if spent is None else usd(spent)
        lines.append(f"spent {money} against MAX_COST {usd(cap)}{share}")
    return lines


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
    if total.get("maybe_paid_twice"):
        out.append(
            f"{total['maybe_paid_twice']} requests may have been paid twice (sent by a run that "
            "was killed before it answered)"
        )
    basis = "the batches' usage" if total["tokens_from_batches"] else "the responses' usage"
    live = sum(c.get("live_requests", 0) for c in report["chunks"])
    also = f" ({live:,} answered live: at live prices, twice them; flex at them)" if live else ""
    out.append(
        f"tokens and cost from {basis}, at the batch prices in the config's prices: table{also}"
    )
    for model in sorted({c["model"] for c in report["chunks"] if c["price"] is None}):
        out.append(f"no price for model {model} in the config's prices: (cost not computed)")
    return "\n".join(out)
