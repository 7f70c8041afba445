"""Prices: the config's `prices:` table (USD per million tokens at batch prices) and what a
plan or a report costs by it, for `make plan`, MAX_COST and `make report`; a live run (MODE=live)
at live prices (`MODE_FACTOR`, `at_mode`)."""

from __future__ import annotations

import math
from typing import Any

from br.cli import UserError
from br.config import Config


def estimate_usd(s: dict[str, Any]) -> tuple[float, list[str]]:
    """The plan's cost estimate (input, plus output where a cap bounds it) and what it leaves
    out: models without a price, output no max_tokens bounds."""
    total, unknown = 0.0, []
    for model, m in s["models"].items():
        if m["input_cost"] is None:
            unknown.append(f"no price for {model}")
            continue
        total += m["input_cost"]
        if m["max_output_cost"] is None:
            unknown.append(f"output of {model} unbounded (no max_tokens)")
        else:
            total += m["max_output_cost"]
    return total, unknown


# What a request costs in each mode, as a multiple of the batch prices `prices:` holds. Every
# provider's batch is half its synchronous price, so live is twice the batch price:
# - OpenAI: the Batch API's "50% cost discount" (https://platform.openai.com/docs/guides/batch);
#   flex is "priced at Batch API rates" (https://platform.openai.com/docs/guides/flex-processing);
# - Anthropic: "All batch usage is billed at 50% of standard prices"
#   (https://docs.claude.com/en/docs/build-with-claude/batch-processing; reference FACTS §8);
# - Gemini: "Batch usage costs 50% of the interactive price for the same model"
#   (https://ai.google.dev/gemini-api/docs/batch-mode; reference FACTS §8).
MODE_FACTOR = {"batch": 1.0, "live": 2.0, "flex": 1.0}
COSTS = ("input_cost", "max_output_cost")  # a plan summary's costs per model
MODE_BASIS = {
    "batch": "batch prices",
    "live": "live prices: twice the batch prices",
    "flex": "flex prices: the batch prices",
}


def at_mode(s: dict[str, Any], mode: str) -> dict[str, Any]:
    """A plan's summary priced for `mode` (batch, live or flex): each model's costs scaled."""
    factor = MODE_FACTOR[mode]
    models = {}
    for model, m in s["models"].items():
        scaled = {k: m[k] * factor if m[k] is not None else None for k in COSTS}
        models[model] = {**m, **scaled}
    return {**s, "models": models, "mode": mode, "price_basis": MODE_BASIS[mode]}


def check_cost(s: dict[str, Any], cap: float) -> str:
    """One line under the cap; UserError (one line, nothing sent) over it, or unpriced."""
    total, unknown = estimate_usd(s)
    missing = [u for u in unknown if u.startswith("no price")]
    if missing:
        raise UserError(
            f"MAX_COST is {usd(cap)} but the cost cannot be estimated ({', '.join(missing)}): "
            "add the model to the config's prices:, or unset MAX_COST"
        )
    left = f" (not counted: {'; '.join(unknown)})" if unknown else ""
    basis = f" at {s['price_basis']}" if s.get("mode", "batch") != "batch" else ""
    if total > cap:
        raise UserError(
            f"estimated cost {usd(total)}{basis} is over MAX_COST {usd(cap)}{left}; nothing was "
            "sent: raise MAX_COST (or max_cost:), or send fewer requests"
            + (" (or run it as a batch, at half the price)" if s.get("mode") == "live" else "")
        )
    return f"estimated cost {usd(total)}{basis}, within MAX_COST {usd(cap)}{left}"


# Gemini's batch prices, USD per 1M tokens: half the paid tier's interactive prices (the batch
# guide: "50% of the interactive price"), prompts up to 200k tokens, as
# https://ai.google.dev/gemini-api/docs/pricing listed them in September 2026 (2.5 Pro's and 2.5
# Flash-Lite's other half from the same page's earlier listing). A config's `prices:` entry
# wins: prices change, and this table is only what a plan uses when the config names none.
# Cached input is priced as input (cache hits are billed as outside batches, and cheaper).
GEMINI_BATCH_PRICES: dict[str, dict[str, float]] = {
    "gemini-2.5-pro": {"input": 0.625, "output": 5.00},
    "gemini-2.5-flash": {"input": 0.15, "output": 1.25},
    "gemini-2.5-flash-lite": {"input": 0.05, "output": 0.20},
    "gemini-3.1-pro-preview": {"input": 1.00, "output": 6.00},
    "gemini-3.5-flash": {"input": 0.75, "output": 4.50},
}


def price_of(config: Config, model: str) -> dict[str, float | None] | None:
    """The model's batch prices (USD per 1M tokens); None when the table lacks it. The table's
    shape is checked when the config is read (config.check_prices); `output` may be left out
    (None) for a model that writes none, an embeddings model. A Gemini model the config does
    not price takes GEMINI_BATCH_PRICES'."""
    price = config.price(model) or GEMINI_BATCH_PRICES.get(model.removeprefix("models/"))
    if price is None:
        return None
    return {
        "input": float(price["input"]),
        "cached_input": float(price.get("cached_input", price["input"])),
        "output": float(price["output"]) if "output" in price else None,
    }


def output_cost(tokens: int, price: dict[str, float | None], model: str) -> float:
    """The cost of `tokens` output tokens; with no output price, only none is priced."""
    if price["output"] is None:
        if tokens:
            raise UserError(
                f"prices: {model} has no output price, and its requests write output; add "
                "output: (USD per million tokens) to it"
            )
        return 0.0
    return tokens * price["output"] / 1e6


def usd(x: float) -> str:
    if x >= 1 or x == 0:
        return f"${x:,.2f}"
    if x >= 0.01:
        return f"${x:.4f}"
    # At least two significant digits: MAX_COST=0.0000001 is not shown as $0.000000.
    return f"${x:.{max(6, 1 - math.floor(math.log10(x)))}f}"
