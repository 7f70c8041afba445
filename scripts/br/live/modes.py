"""Which API a step runs through, and what that costs.

- ``batch`` (the default): the Batch API, at the config's `prices:`.
- ``live``: the synchronous API (CONCURRENCY requests at once), on the step's provider (OpenAI's
  chat/responses, Anthropic's Messages, Gemini's generateContent). Priced at twice the config's
  batch prices: each provider's batch is half its synchronous price (br/prices.py names the
  sources); the provider's price page wins.
- ``flex``: the synchronous API with `service_tier: "flex"`, priced at batch prices (OpenAI's
  flex processing guide: "priced at Batch API rates"), slower, with 429 "Resource Unavailable"
  waited out. Only for the models OpenAI offers it for (FLEX_MODELS), on chat completions and
  responses.

MODE= on the command line wins, then the step's `mode:`, then the config's top-level `mode:`.
"""

from __future__ import annotations

import re
from typing import Any

from br.cli import UserError
from br.config import Config
from br.openai_api import EMBEDDINGS
from br.prices import MODE_FACTOR

MODES = ("batch", "live", "flex")
# OpenAI's flex processing guide (April 2025): "currently only available for o3 and o4-mini";
# later versions say "supported models are listed on the pricing page", which lists the gpt-5
# family with flex prices. UNVERIFIED for gpt-5's dated and -chat variants: the pricing page
# is the authority, and a model it lacks is refused by the API with a 400.
FLEX_MODELS = re.compile(r"^(o3|o4-mini|gpt-5(\.\d+)?(-mini|-nano)?)(-\d{4}-\d{2}-\d{2})?$")
LIVE_PRICE_FACTOR = MODE_FACTOR  # br/prices.py owns the rule (and names its sources)


def said(config: Config, step_name: str, override: str = "") -> tuple[Any, Any, Any]:
    """The modes given, first wins: `override` (MODE=), the step's mode:, the config's."""
    raw = config.data.get(step_name)
    step_mode = raw.get("mode") if isinstance(raw, dict) else None
    return override or None, step_mode, config.data.get("mode")


def mode_of(config: Config, step_name: str, override: str = "") -> str:
    """The step's mode: `override` (MODE=), else the step's mode:, else the config's."""
    first, step_mode, top = said(config, step_name, override)
    mode = first or step_mode or top or "batch"
    if mode not in MODES:
        where = "MODE" if override else f"{config.path}: mode:"
        raise UserError(f"{where} is '{mode}'; use batch, live or flex")
    if mode != "batch":
        check_live(config, step_name, mode)
    return str(mode)


def plain_batch(config: Config, step_name: str, override: str, max_cost: str) -> bool:
    """Batch mode with no cost cap, by the config's and the command's words alone: make caption
    then starts run_batches.py without asking plan.py (anything else asks it: `mode_of`, and
    the cap's check)."""
    plain = all(mode is None or mode == "batch" for mode in said(config, step_name, override))
    return plain and max_cost == "" and config.data.get("max_cost") in (None, "")


def check_live(config: Config, step_name: str, mode: str) -> None:
    """Flex is OpenAI's tier only: one line, before anything is sent, for a step on another
    provider (live answers run on every provider: wires.py)."""
    provider = config.provider(step_name)
    if mode == "flex" and provider != "openai":
        raise UserError(
            f"step '{step_name}' runs on {provider}, and MODE=flex is OpenAI's flex tier; use "
            "MODE=live (the synchronous API) or MODE=batch"
        )


def check_flex(model: str, endpoint: str) -> None:
    """One line, before anything is sent, for a model or endpoint that has no flex tier."""
    if endpoint == EMBEDDINGS:
        raise UserError(
            "MODE=flex: flex processing is for chat completions and responses, not embeddings; "
            "use MODE=live or MODE=batch"
        )
    if not FLEX_MODELS.match(model):
        raise UserError(
            f"MODE=flex: {model} has no flex tier (OpenAI offers it for o3, o4-mini and the "
            "gpt-5 family); use MODE=batch for batch prices, or MODE=live"
        )


def price_note(mode: str) -> str:
    return {
        "live": "live prices: assumed twice the config's batch prices",
        "flex": "flex: the config's batch prices",
        "batch": "the config's batch prices",
    }[mode]
