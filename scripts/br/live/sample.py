"""`make sample`: a few records' requests answered through the synchronous API, and shown.

The records are the first N that the step selects (`where:`), or with SAMPLE=random N picked
across the dataset by a seeded reservoir; their requests are built exactly as make_requests.py
builds them (br/prompts: the templates, images, the same request line), so an answer here is
the answer the batch would get, and it is kept in answers/ under the request's hash: a rerun
asks nothing again, a changed prompt asks again, and `make caption` later pays nothing for
what a sample answered. Answers are read as the merge reads them (Merger.value: structured
output parsed and checked, extract: applied).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from br.answers import store
from br.answers.report import cost, response_tokens
from br.answers.values import Merger
from br.cli import note
from br.config import Step
from br.files import atomic_output
from br.journal import Journal
from br.layout import StepDir
from br.prices import price_of, usd
from br.prompts.build import Built, RequestBuilder, step_requests
from br.prompts.images.cache import LocalImages
from br.prompts.images.identity import materialise, request_hash
from br.records import dumps, iter_records

SHOWN = 600  # characters of a prompt or answer printed


@dataclass
class Picked:
    record: dict[str, Any]
    built: Built
    hash: str = ""
    row: dict[str, Any] | None = None
    asked: bool = False  # answered in this run (not from answers/)


def pick(path: Path, step: Step, data_key: str, n: int, seed: int | None) -> list[dict[str, Any]]:
    """The first n records `where:` selects, or (seed given) n of them at random."""
    selector = RequestBuilder(step, data_key)
    chosen = (r for i, r in enumerate(iter_records(path)) if selector.selected(r, i))
    if seed is None:
        return list(islice(chosen, n))
    rng, kept = random.Random(seed), []
    for i, record in enumerate(chosen):  # reservoir sampling: one pass, n records held
        if i < n:
            kept.append(record)
        elif (j := rng.randint(0, i)) < n:
            kept[j] = record
    return kept


def built(
    records: list[dict[str, Any]], step: Step, data_key: str, local: LocalImages, key: str
) -> list[Picked]:
    out = []
    for b, _ in step_requests(iter(records), step, data_key, local, None, key):
        out.append(Picked(records[b.index], b))
    return out


def earlier(step: StepDir, hashes: set[str]) -> dict[str, dict[str, Any]]:
    """The standing answers/ row of each of these request hashes that has a final one."""
    found: dict[str, dict[str, Any]] = {}
    for row in store.rows(step):
        h = row.get("hash")
        better = h not in found or store.rank(row) >= store.rank(found[h])
        if h in hashes and store.final(row) and better:
            found[h] = row
    return found


def requests_of(picked: list[Picked]) -> Iterator[dict[str, Any]]:
    for p in picked:
        if p.built.request is not None and p.row is None:
            yield json.loads(materialise(p.built.line))


def prompt_text(body: dict[str, Any]) -> str:
    """The prompt as a person reads it: the system text, the user text, images as [image]."""

    def text(content: Any) -> str:
        if isinstance(content, str):
            return content
        parts = []
        for part in content if isinstance(content, list) else []:
            if part.get("type") in ("text", "input_text"):
                parts.append(part.get("text", ""))
            elif part.get("type") in ("image_url", "input_image"):
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                parts.append(f"[image {str(url)[:60]}]")
        return "\n".join(parts)

    lines = [f"system: {body['instructions']}"] if body.get("instructions") else []
    for message in body.get("messages") or []:
        lines.append(f"{message.get('role')}: {text(message.get('content'))}")
    inputs = body.get("input")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        lines += [f"{m.get('role')}: {text(m.get('content'))}" for m in inputs]
    elif inputs is not None:
        lines.append(f"input: {text(inputs)}")
    return "\n".join(lines)


def short(value: Any) -> str:
    s = value if isinstance(value, str) else dumps(value)
    return s if len(s) <= SHOWN else s[:SHOWN] + f" ... ({len(s):,} characters)"


def answer(merger: Merger, row: dict[str, Any] | None) -> tuple[Any, dict[str, Any] | None]:
    """(the stored value, None) or (None, the error) of a row, as the merge reads it."""
    if row is None:
        return None, {"code": "not_sent", "message": "no answer"}
    if not store.succeeded(row):
        f = store.failure(row)
        return None, {"code": f.code, "message": f.message, "status": f.status}
    try:
        return merger.value(row["response"]), None
    except ValueError as e:
        code, message = e.args if len(e.args) == 2 else ("invalid", str(e))
        return None, {"code": code, "message": message}


def show(p: Picked, value: Any, error: dict[str, Any] | None, key: str) -> str:
    """One sampled record, readable: its fields, its prompt, its answer (or why none)."""
    head = f"=== {p.built.custom_id} (record {p.built.index})"
    head += " [cached]" if p.row is not None and not p.asked else ""
    fields = {k: v for k, v in p.record.items() if k != key}
    lines = [head, "record: " + short(fields)]
    if p.built.request is None:
        why = p.built.reason or f"missing field(s): {', '.join(p.built.missing)}"
        return "\n".join([*lines, f"skipped: {why}", ""])
    lines.append("prompt:\n  " + short(prompt_text(p.built.request["body"])).replace("\n", "\n  "))
    if error is not None:
        status = f" (HTTP {error['status']})" if error.get("status") else ""
        lines.append(f"ERROR {error['code']}{status}: {error['message']}")
    else:
        lines.append(f"answer ({key}): " + short(value))
    return "\n".join([*lines, ""])


def usage_cost(rows: list[dict[str, Any]], price: Any, model: str, factor: float) -> float | None:
    if price is None:
        return None
    total = 0.0
    for row in rows:
        tokens = response_tokens(row.get("usage"))
        total += (cost(tokens, price, model) or 0.0) * factor
    return total


def write_sample(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_output(path) as f:
        json.dump(records, f, indent=1, ensure_ascii=False)
        f.write("\n")


def keep(log: Journal, p: Picked, row: dict[str, Any]) -> None:
    """One answer, durably, the moment it arrives: in the sample's journal."""
    p.row, p.asked = store.stored(p.built.custom_id or "", p.hash, row), True
    log.add([p.row])


def cost_line(config: Any, step: Step, picked: list[Picked], factor: float, rule: str) -> str:
    price = price_of(config, step.model)
    asked = [p.row for p in picked if p.asked and p.row is not None]
    every = [p.row for p in picked if p.row is not None]
    now, whole = (usage_cost(r, price, step.model, factor) for r in (asked, every))
    if now is None or whole is None:
        return f"cost: no price for {step.model} in the config's prices:"
    return (
        f"cost: {usd(now)} for {len(asked)} request(s) sent now; {usd(whole)} the whole "
        f"sample ({rule})"
    )


def announce(picked: list[Picked], todo: int) -> None:
    cached = sum(p.row is not None for p in picked)
    note(f"sample: {len(picked)} record(s), {cached} answered before, {todo} to ask")


def run_sample(
    args: Any, config: Any, step: Step, local: LocalImages, key: str, mode: str
) -> list[str]:
    """Pick, build, answer (asking only what answers/ lacks), print, write sample.json; the
    lines to print, the cost line last."""
    from br.live.call import Caller
    from br.live.modes import LIVE_PRICE_FACTOR, price_note

    step_dir = StepDir(args.dir)
    seed = args.seed if args.sample == "random" else None
    records = pick(args.input, step, args.data_key, args.n, seed)
    picked = built(records, step, args.data_key, local, key)
    by_hash: dict[str, list[Picked]] = {}
    for p in picked:
        if p.built.request is not None:
            p.hash = request_hash(p.built.request)
            by_hash.setdefault(p.hash, []).append(p)
    found = earlier(step_dir, set(by_hash))
    for h, ps in by_hash.items():
        for p in ps:
            p.row = found.get(h)
    todo = [ps[0] for ps in by_hash.values() if ps[0].row is None]
    announce(picked, len(todo))
    if todo:
        step_dir.root.mkdir(parents=True, exist_ok=True)
        step_dir.live_sent.touch()
        caller = Caller(config.for_step(step.name), mode, args.retries, config.provider(step.name))
        with Journal(step_dir.live_journal(), step_dir.live_journals()) as log:

            def done(request: dict[str, Any], row: dict[str, Any]) -> None:
                ps = by_hash[request_hash(request)]
                keep(log, ps[0], row)
                for other in ps[1:]:
                    other.row = ps[0].row

            def before(request: dict[str, Any]) -> None:
                log.sent(request_hash(request))

            caller.send_all(requests_of(todo), args.concurrency, done, before)
        if caller.waited:
            note(f"sample: waited out {caller.waited} rate limit answer(s) (429)")
    merger = Merger(step, args.data_key, key)
    out, records_out, failed = [], [], 0
    for p in picked:
        value, error = answer(merger, p.row) if p.built.request is not None else (None, None)
        failed += error is not None
        out.append(show(p, value, error, key))
        record = merger.apply(p.record, value) if error is None else {**p.record, key: None}
        records_out.append({**record, "sample_error": error} if error else record)
    write_sample(step_dir.sample, records_out)
    out.append(f"{step_dir.sample}: {len(picked)} record(s), {failed} failed")
    out.append(cost_line(config, step, picked, LIVE_PRICE_FACTOR[mode], price_note(mode)))
    return out
