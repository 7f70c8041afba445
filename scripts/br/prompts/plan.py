"""A step's plan, built in memory exactly as make_requests.py and split_requests.py would build
the requests and chunks (nothing written, no API called): records, requests, skips, chunks,
bytes, estimated tokens and cost (`make_plan`, `sent_plan`, `summary`, `render`); the command
is scripts/plan.py. Chunks are sized as the step's provider's own lines (an Anthropic or Gemini
chunk holds its provider's lines, not the pipeline's), their tokens counted as the run counts
them, and images by that provider's rule (tokens.py).
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.

# isort: split

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from br.batches.split import answered_hashes, chunks, utf8_size
from br.config import Config, response_key_of
from br.limits import MAX_FILE_BYTES
from br.openai_api import CHAT, EMBEDDINGS
from br.prices import output_cost, price_of, usd
from br.prompts.build import step_requests
from br.prompts.images.cache import LocalImages
from br.prompts.images.identity import materialise, materialised_size, request_hash
from br.prompts.preflight import GIVE_UP_AFTER, Preflight
from br.prompts.request_images import reason_kinds
from br.prompts.tokens import body_images, estimate_tokens, image_rule
from br.records import dumps, iter_jsonl, iter_records

# What `render` says of each image rule (tokens.py has the rules and their sources), and where
# each provider publishes its prices (the batch guides: half the interactive prices).
IMAGE_RULES = {
    "openai": "OpenAI's rule for their detail: 85 tokens at low; at high or auto 85 + 170 per "
    "512 px tile (a remote URL as a 3:2 photo: 1105)",
    "claude": "Anthropic's rule: 28 x 28 px patches, ceil(w/28) x ceil(h/28), within 1568 px "
    "and 1568 tokens (a remote URL as a 3:2 photo: 1536 x 1024 px)",
    "gemini": "Gemini's rule: 258 tokens up to 384 x 384 px, else 258 per tile of side "
    "min(w, h) / 1.5 within 256-768 px (a remote URL as a 3:2 photo: 1548)",
}
PRICING = {
    "openai": "https://openai.com/api/pricing",
    "anthropic": "https://platform.claude.com/docs/en/about-claude/pricing",
    "gemini": "https://ai.google.dev/gemini-api/docs/pricing",
}


@dataclass(frozen=True)
class Lines:
    """How the step's provider sends a request (the command asks br.batches.providers): its
    name, its own line of a pipeline request (None: the pipeline's line is sent), a line's
    estimated input tokens, and the most bytes one of its batches takes."""

    provider: str = "openai"
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    tokens: Callable[[dict[str, Any]], int] | None = None
    max_file_bytes: int = MAX_FILE_BYTES

    def sent(self, request: dict[str, Any]) -> tuple[dict[str, Any] | None, int | None]:
        """The provider's line of a request and its tokens (None, None: the pipeline's)."""
        if self.shape is None:
            return None, None
        line = self.shape(request)
        return line, self.tokens(line) if self.tokens else None


@dataclass
class ModelTotals:
    requests: int = 0
    text_tokens: int = 0
    image_tokens: int = 0
    images: int = 0
    max_output_tokens: int | None = 0  # None: some request has no max_tokens


@dataclass
class Plan:
    records: int = 0
    requests: int = 0
    reused: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    image_reasons: list[str] = field(default_factory=list)  # records skipped for their image
    unchecked_urls: int = 0  # image URLs the preflight has not checked yet
    unchecked_hosts: int = 0  # the hosts they are on
    busiest_host: int = 0  # the most of them on one host
    preflight_seconds: float = 0.0  # the time checking them takes, at most
    preflight_limits: str = ""  # how the preflight checks them: "4 at a time a host, ..."
    skipped_records: int = 0
    not_selected: int = 0
    chunk_sizes: list[tuple[int, int]] = field(default_factory=list)  # (requests, bytes)
    endpoints: Counter[str] = field(default_factory=Counter)  # requests to send, by endpoint
    models: dict[str, ModelTotals] = field(default_factory=dict)
    provider: str = "openai"


def output_cap(body: dict[str, Any], url: str | None = None) -> int | None:
    """The most output tokens a request may produce, if the body caps it (an embedding: 0)."""
    if url == EMBEDDINGS:
        return 0
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    cap = cap or body.get("max_output_tokens")  # /v1/responses
    return int(cap) * int(body.get("n") or 1) if cap else None


def make_plan(
    input_path: Path,
    config: Config,
    step_name: str,
    data_key: str,
    max_requests: int,
    max_bytes: int,
    answers: Path | None = None,
    response_key: str | None = None,
    local: LocalImages | None = None,
    checker: Preflight | None = None,
    sent: Lines = Lines(),
) -> Plan:
    """The plan; raises the same UserError make_requests.py would, for the same mistakes."""
    step = config.step(step_name)
    key = response_key_of(step, response_key)
    done = answered_hashes(answers) if answers else set()
    plan = Plan(provider=sent.provider)

    def counted() -> Iterator[dict[str, Any]]:
        for record in iter_records(input_path):
            plan.records += 1
            yield record

    def lines() -> Iterator[str]:
        for built, reason in step_requests(counted(), step, data_key, local, checker, key):
            if built.request is None:
                plan.skipped_records += 1
                plan.skipped.update(built.missing)
                if reason:
                    plan.image_reasons.append(reason)
                continue
            request = built.request
            if done and bytes.fromhex(request_hash(request))[:16] in done:
                plan.reused += 1
                continue
            if sent.shape is None:
                count(plan, request)
                yield built.line
                continue
            # The provider's own line, as the split writes it: local images inline.
            line, tokens = sent.sent(json.loads(materialise(built.line)))
            count(plan, request, tokens)
            yield dumps(line) + "\n"

    # Sizes as the chunks will have them: local images inline, as base64.
    size = materialised_size if sent.shape is None else utf8_size
    for chunk in chunks(lines(), max_requests, max_bytes, size, sent.max_file_bytes):
        plan.chunk_sizes.append((len(chunk), sum(size(line) for line in chunk)))
    plan.not_selected = plan.records - plan.requests - plan.reused - plan.skipped_records
    plan.unchecked_urls = checker.counts["unchecked"] if checker else 0
    if checker is not None and checker.unchecked_hosts:
        plan.unchecked_hosts = len(checker.unchecked_hosts)
        plan.busiest_host = max(checker.unchecked_hosts.values())
        plan.preflight_seconds = checker.seconds_at_most
        plan.preflight_limits = (
            f"{checker.per_host} at a time a host, {checker.workers} in all, "
            f"{checker.timeout:g} s time-out"
        )
    return plan


def count(plan: Plan, request: dict[str, Any], tokens: int | None = None) -> None:
    """Add one request to be sent to the plan's totals for its model: `tokens` as its
    provider's line counts them (else as the pipeline's), images by its provider's rule."""
    plan.requests += 1
    body, url = request.get("body") or {}, request.get("url") or CHAT
    plan.endpoints[url] += 1
    totals = plan.models.setdefault(str(body.get("model")), ModelTotals())
    images, image_tokens = body_images(body, plan.provider)
    tokens = estimate_tokens(body, url) if tokens is None else tokens
    totals.requests += 1
    totals.images += images
    totals.image_tokens += image_tokens
    totals.text_tokens += tokens - image_tokens
    cap = output_cap(body, url)
    if cap is None or totals.max_output_tokens is None:
        totals.max_output_tokens = None
    else:
        totals.max_output_tokens += cap


def sent_plan(requests: Path, answers: Path | None, sent: Lines = Lines()) -> Plan:
    """The cheap plan of a built requests.jsonl: only what is left to send, counted (no split,
    no record read, nothing resolved), for the cost check before the first upload."""
    done = answered_hashes(answers) if answers else set()
    plan = Plan(provider=sent.provider)
    for request in iter_jsonl(requests):
        if done and bytes.fromhex(request_hash(request))[:16] in done:
            plan.reused += 1
        else:
            count(plan, request, sent.sent(request)[1])
    return plan


def summary(plan: Plan, config: Config, step_name: str) -> dict[str, Any]:
    """The plan as data (what --json prints)."""
    models: dict[str, Any] = {}
    for model, t in plan.models.items():
        price = price_of(config, model)
        input_tokens = t.text_tokens + t.image_tokens
        entry: dict[str, Any] = {
            "requests": t.requests,
            "input_tokens": input_tokens,
            "text_tokens": t.text_tokens,
            "image_tokens": t.image_tokens,
            "images": t.images,
            "max_output_tokens": t.max_output_tokens,
            "price": price,
            "input_cost": None,
            "max_output_cost": None,
        }
        if price is not None:
            entry["input_cost"] = input_tokens * (price["input"] or 0) / 1e6
            if t.max_output_tokens is not None:
                entry["max_output_cost"] = output_cost(t.max_output_tokens, price, model)
        models[model] = entry
    return {
        "step": step_name,
        "provider": plan.provider,
        "records": plan.records,
        "requests": plan.requests,
        "reused_answers": plan.reused,
        "skipped": plan.skipped_records,
        "skipped_by_field": dict(sorted(plan.skipped.items())),
        "skipped_for_image": len(plan.image_reasons),
        "skipped_image_reasons": reason_kinds(plan.image_reasons) if plan.image_reasons else "",
        "image_urls_not_checked": plan.unchecked_urls,
        "image_url_hosts_not_checked": plan.unchecked_hosts,
        "image_urls_busiest_host": plan.busiest_host,
        "preflight_seconds_at_most": plan.preflight_seconds,
        "preflight_limits": plan.preflight_limits,
        "not_selected": plan.not_selected,
        "chunks": len(plan.chunk_sizes),
        "bytes": sum(b for _, b in plan.chunk_sizes),
        "largest_chunk": {
            "requests": max((n for n, _ in plan.chunk_sizes), default=0),
            "bytes": max((b for _, b in plan.chunk_sizes), default=0),
        },
        "endpoints": dict(sorted(plan.endpoints.items())),
        "models": models,
    }


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def duration(seconds: float) -> str:
    """12 s, 2 min 40 s, 3 h 5 min."""
    n = math.ceil(seconds)
    if n < 60:
        return f"{n} s"
    if n < 3600:
        return f"{n // 60} min" + (f" {n % 60} s" if n % 60 else "")
    return f"{n // 3600:,} h" + (f" {n % 3600 // 60} min" if n % 3600 // 60 else "")


def render(s: dict[str, Any], config: Config) -> str:
    out = [f"plan for step '{s['step']}' (nothing is sent; estimates only)"]
    row = "  {:<30} {}".format
    out.append(row("records in the input", f"{s['records']:,}"))
    if s["not_selected"]:
        out.append(row("not selected by where:", f"{s['not_selected']:,}"))
    by_field = s["skipped"] - s["skipped_for_image"]
    skipped = ", ".join(f"{n} missing {f}" for f, n in s["skipped_by_field"].items())
    out.append(
        row("skipped (missing fields)", f"{by_field:,}" + (f" ({skipped})" * bool(by_field)))
    )
    if s["skipped_for_image"]:
        reasons = s["skipped_image_reasons"]
        out.append(row("skipped (their image)", f"{s['skipped_for_image']:,} ({reasons})"))
    if s["image_urls_not_checked"]:
        out.append(
            row("image URLs not checked yet", f"{s['image_urls_not_checked']:,}")
            + " (make caption checks them first; make preflight STEP=... now)"
        )
        hosts = s["image_url_hosts_not_checked"]
        out.append(
            row("preflight, at most", duration(s["preflight_seconds_at_most"]))
            + f" ({s['image_urls_not_checked']:,} URLs on {hosts:,} host{'s' * (hosts != 1)},"
            f" {s['image_urls_busiest_host']:,} on the busiest; {s['preflight_limits']};"
            f" a host that does not answer is given up after {GIVE_UP_AFTER} tries)"
        )
    if s["reused_answers"]:
        out.append(row("already answered (reused)", f"{s['reused_answers']:,}"))
    out.append(row("requests to send", f"{s['requests']:,}"))
    for url, n in s["endpoints"].items():
        out.append(row(f"  to {url}", f"{n:,}"))
    big = s["largest_chunk"]
    out.append(
        row("chunks (batches)", f"{s['chunks']:,}")
        + (
            f" (largest: {big['requests']:,} requests, {human_bytes(big['bytes'])})"
            * bool(s["chunks"])
        )
    )
    out.append(row("bytes to upload", f"{s['bytes']:,} ({human_bytes(s['bytes'])})"))
    total_in = total_out = 0.0
    priced = True
    for model, m in s["models"].items():
        out.append(f"model {model}: {m['requests']:,} requests")
        out.append(
            row(
                "estimated input tokens",
                f"{m['input_tokens']:,} (text {m['text_tokens']:,}, images {m['image_tokens']:,}"
                f" for {m['images']:,} image(s))",
            )
        )
        if m["max_output_tokens"]:
            out.append(row("output tokens, at most", f"{m['max_output_tokens']:,} (max_tokens)"))
        price = m["price"]
        if price is None:
            priced = False
            out.append(
                f"  no price for model {model} in the config's prices: (add it to estimate cost)"
            )
            continue
        out.append(
            row(f"input cost ({s.get('price_basis', 'batch prices')})", usd(m["input_cost"]))
        )
        total_in += m["input_cost"]
        if m["max_output_cost"] is not None:
            out.append(row("output cost, at most", usd(m["max_output_cost"])))
            total_out += m["max_output_cost"]
        else:
            priced = False
            out.append("  output cost: unknown (the step sets no max_tokens to bound it)")
    if not s["models"]:
        out.append("nothing to send: no cost")
    elif priced:
        out.append(row("total cost, at most", usd(total_in + total_out)))
    provider = s.get("provider") or "openai"
    for rule in sorted({image_rule(provider, m) for m, t in s["models"].items() if t["images"]}):
        out.append(f"note: images are counted by {IMAGE_RULES[rule]}.")
    out.append(
        "note: token counts are estimates (a token per 4 characters); prices come from "
        f"{config.path}; check them against {PRICING.get(provider, PRICING['openai'])}"
    )
    return "\n".join(out)
