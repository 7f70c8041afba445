"""The YAML config: top-level keys, and each step checked and parsed into a `Step`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jq

from br.anthropic_api import check_step as check_anthropic_step
from br.cli import UserError
from br.config_cache import parsed
from br.openai_api import (
    BODY_KEYS,
    CHAT,
    EMBEDDING_KEYS,
    EMBEDDINGS,
    IMAGE_DETAILS,
    check_parameters,
    context_window,
    endpoint_of,
)
from br.response_format import parse_response_format

# Config keys that are not steps (response_key: the original tool's default, for
# send_batch_requests.py).
TOP_LEVEL_KEYS = {
    "model",
    "response_key",
    "api_key",
    "base_url",
    "prices",
    "token_budget",
    "pipeline",
    "max_requests",
    "context_windows",
    "max_cost",
    "provider",
    "mode",  # batch (the default), live or flex: br/live/modes.py
}
PROVIDERS = ("openai", "anthropic", "gemini")  # whose Batch API a step's batches go to
STEP_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # one path component: see check_step_name
# Keys a step may hold besides chat-completions body parameters.
STEP_KEYS = {
    "system": str,
    "user": str,
    "is_multimodal": bool,
    "image_key": str,
    "image_detail": str,
    "image_max_side": int,
    "image_quality": int,
    "response_key": str,
    "model": str,
    "where": str,
    "extract": str,
    "response_format": dict,
    "body": dict,
    "kind": str,
    "dialog_history": str,
    "context": str,
    "image_url": str,
    "endpoint": str,
    "dimensions": int,
    "encoding_format": str,
    "provider": str,
    "mode": str,  # this step's batch, live or flex (br/live/modes.py); never sent
    "base_url": str,  # this step's server (Config.base_url); never sent
}
ENDPOINT = CHAT  # the default endpoint (openai_api.py has the others)


@dataclass
class Step:
    name: str
    model: str
    system: str | None
    user: str | None
    is_multimodal: bool = True
    image_key: str = "image_url"
    image_detail: str | None = None
    image_max_side: int | None = None  # resize local images larger than this (pixels)
    image_quality: int | None = None  # JPEG/WebP quality of a resized image
    response_key: str | None = None
    where: str | None = None
    extract: str | None = None
    response_format: dict[str, Any] | None = None
    kind: str = "plain"  # "question": the original tool's dialogue rounds
    templates: dict[str, str] = field(default_factory=dict)  # question: dialog_history, ...
    body: dict[str, Any] = field(default_factory=dict)
    context_window: int | None = None  # the model's, in tokens (openai_api.py, or the config's)
    endpoint: str = CHAT  # /v1/chat/completions, /v1/responses or /v1/embeddings
    provider: str = "openai"  # whose Batch API (PROVIDERS): the step's, else the config's

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema responses must match, if the step asks for structured output."""
        if not self.response_format:
            return None
        return self.response_format.get("json_schema", {}).get("schema")


@dataclass
class Config:
    path: Path
    data: dict[str, Any]
    sha256: str = ""  # of the file's bytes as read (load_config): what requests.hashes records

    @property
    def steps(self) -> list[str]:
        return [k for k, v in self.data.items() if k not in TOP_LEVEL_KEYS and isinstance(v, dict)]

    def step(self, name: str) -> Step:
        if not name:
            raise UserError(f"no step given; set STEP to one of: {', '.join(self.steps)}")
        raw = self.data.get(name)
        if name in TOP_LEVEL_KEYS or not isinstance(raw, dict):
            raise UserError(
                f"{self.path} has no step '{name}'; steps there: {', '.join(self.steps) or 'none'}"
            )
        return parse_step(
            self.path,
            name,
            raw,
            self.data.get("model"),
            self.context_windows(),
            self.data.get("provider", "openai"),
        )

    def provider(self, step: str | None = None) -> str:
        """Whose Batch API: the step's `provider:`, else the config's, else openai."""
        raw = self.data.get(step) if step and step not in TOP_LEVEL_KEYS else None
        chosen = raw.get("provider") if isinstance(raw, dict) and "provider" in raw else None
        return str(chosen or self.data.get("provider") or "openai")

    def base_url(self, step: str | None = None) -> str | None:
        """The server a step's provider is told: the step's `base_url:`, else the top-level one
        if the step's provider is the top level's; else none (its SDK's environment variable,
        or its default host): another provider's key never goes to that server."""
        raw = self.data.get(step) if step and step not in TOP_LEVEL_KEYS else None
        if isinstance(raw, dict) and raw.get("base_url"):
            return str(raw["base_url"])
        same = self.provider(step) == str(self.data.get("provider") or "openai")
        return str(self.data["base_url"]) if same and self.data.get("base_url") else None

    def for_step(self, step: str | None) -> Config:
        """This config as the step's provider reads it: `base_url:` is the one meant for it."""
        data = {k: v for k, v in self.data.items() if k != "base_url"}
        url = self.base_url(step)
        return Config(self.path, {**data, "base_url": url} if url else data, self.sha256)

    def price(self, model: str) -> dict[str, float] | None:
        """The model's entry in `prices:`, checked (a Config not from load_config included)."""
        prices = self.data.get("prices")
        check_prices(self.path, prices)
        return (prices or {}).get(model)

    def context_windows(self) -> dict[str, int]:
        """The config's `context_windows: {model: tokens}` (checked by load_config)."""
        return dict(self.data.get("context_windows") or {})

    def max_cost(self, override: str | None = None) -> float | None:
        """The spending cap in USD: MAX_COST if given, else the config's max_cost:, else None."""
        value: Any = override if override not in (None, "") else self.data.get("max_cost")
        if value is None or value == "":
            return None
        what = "MAX_COST" if override not in (None, "") else f"{self.path}: max_cost"
        try:
            cap = float(value)
        except (TypeError, ValueError):
            cap = -1.0
        if isinstance(value, bool) or not cap >= 0 or cap == float("inf"):
            raise UserError(
                f"{what} must be a number of US dollars, like 25 or 2.50; not {value!r}"
            )
        return cap

    def token_budget(self, model: str) -> int | None:
        budget = self.data.get("token_budget")
        if isinstance(budget, dict):
            budget = budget.get(model)
        if budget is None:
            return None
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise UserError(
                f"{self.path}: token_budget must be a positive whole number of tokens (or "
                f"{{model: tokens}}), not {budget!r}"
            )
        return budget


def load_config(path: Path, keep: bool = False) -> Config:
    """CONFIG, checked. `keep`: the stamps' process (write_if_changed.py) writes the parse
    to $BR_CONFIG_CACHE for the run's later scripts, which only read it (`parsed`)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist; set CONFIG=path/to/config.yaml")
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    data = parsed(path, raw, sha, keep)
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a YAML mapping with 'model' and one mapping per step")
    check_top_level_keys(path, data)
    if "model" in data and not isinstance(data["model"], str):
        raise UserError(f"{path}: 'model' must be a string such as gpt-4o-mini")
    check_base_url(str(path), data.get("base_url"))
    check_provider(f"{path}:", data.get("provider"))
    check_prices(path, data.get("prices"))
    windows = data.get("context_windows")
    if windows is not None and not (
        isinstance(windows, dict)
        and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
            for k, v in windows.items()
        )
    ):
        raise UserError(
            f"{path}: 'context_windows' must map model names to token counts, "
            "like {gpt-4o-mini: 128000}"
        )
    for key, value in data.items():
        if key not in TOP_LEVEL_KEYS and isinstance(value, dict):
            check_step_name(path, "step", key)
    pipeline = data.get("pipeline")
    for entry in pipeline if isinstance(pipeline, list) else []:
        check_step_name(path, "pipeline: entry", entry)
    return Config(path, data, sha)


def near_miss(key: Any, known: set[str]) -> str:
    """' (did you mean 'max_cost'?)' for a key that resembles a known one, else ''."""
    # Swapped letters first: `modle` is `model`, though `mode` is as close by difflib's ratio.
    swapped = [k for k in sorted(known) if sorted(k) == sorted(str(key))]
    if swapped:
        close = swapped[:1]
    else:
        import difflib  # only for a key that is wrong: not loaded by every command

        close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_top_level_keys(path: Path, data: dict[Any, Any]) -> None:
    """Every top-level key is a setting or a step (a mapping): a typo such as `max_cots: 5`
    would silently drop the cost cap. A mapping named like a setting and holding no step key
    (`token_budjet: {gpt-4o-mini: 1000}`) is a mistyped setting too, not a step."""
    step_keys = set(STEP_KEYS) | BODY_KEYS | EMBEDDING_KEYS
    for key, value in data.items():
        if key in TOP_LEVEL_KEYS:
            continue
        if isinstance(value, dict) and set(value) & step_keys:
            continue  # a step
        hint = near_miss(key, TOP_LEVEL_KEYS)
        if isinstance(value, dict) and not hint:
            continue
        raise UserError(
            f"{path}: unknown setting '{key}'{hint}; the settings are "
            f"{', '.join(sorted(TOP_LEVEL_KEYS))}, and a step is a mapping (user: ...)"
        )


def check_base_url(where: str, base_url: Any) -> None:
    if base_url is not None and not str(base_url).startswith(("https://", "http://")):
        raise UserError(
            f"{where}: base_url must be an http(s) URL such as https://api.openai.com/v1, "
            f"not {base_url!r}"
        )


def check_provider(where: str, provider: Any) -> None:
    """`provider:` names one of PROVIDERS (or is absent: openai)."""
    if provider is not None and provider not in PROVIDERS:
        hint = near_miss(provider, set(PROVIDERS))
        raise UserError(f"{where} provider {provider!r} is not one of {', '.join(PROVIDERS)}{hint}")


PRICE_KEYS = ("input", "cached_input", "output")


def check_prices(path: Path, prices: Any) -> None:
    """`prices: {model: {input, cached_input, output}}` (USD per million tokens), or one line.
    `output` may be left out for a model that writes none, an embeddings model."""
    example = (
        "{gpt-4o-mini: {input: 0.075, cached_input: 0.0375, output: 0.30}} (USD per million "
        "tokens; output may be left out for an embeddings model)"
    )
    if prices is None:
        return
    if not isinstance(prices, dict):
        raise UserError(f"{path}: prices must map model names to prices, like {example}")

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0

    for model, price in prices.items():
        if not (
            isinstance(price, dict)
            and number(price.get("input"))
            and all(number(price[k]) for k in PRICE_KEYS if k in price)
            and set(price) <= set(PRICE_KEYS)
        ):
            raise UserError(f"{path}: prices: {model} must be a mapping like {example}")


def check_step_name(path: Path, what: str, name: Any) -> None:
    """A step name is one path component (its directory stays inside BUILD): the rule the
    Makefile applies to STEP and STEPS."""
    if not isinstance(name, str) or not STEP_NAME.fullmatch(name) or name in (".", ".."):
        raise UserError(
            f"{path}: {what} {name!r} is not a step name: use letters, digits, _ . and - only "
            "(one path component, not . or ..)"
        )


# Every jq program runs inside this: `env` and `$ENV` are empty, so no DATA_KEY, placeholder,
# where:, extract: or FILTER can copy the API key (or any variable) into a request or a file.
# The newlines keep a trailing `# comment` from swallowing the `)`; inside the parentheses an
# `import` or `include` is a syntax error, so no program brings in a module.
JQ_SANDBOX = "def env: {{}}; {{}} as $ENV | (\n{}\n)"


def compile_jq(expression: str, what: str) -> Any:
    """A compiled jq program that sees no environment; an invalid expression is one line
    naming what it is for."""
    try:
        jq.compile(expression)  # a mistake is reported at its line and column in the user's text
        return jq.compile(JQ_SANDBOX.format(expression))
    except ValueError as e:
        first = str(e).splitlines()[0]
        raise UserError(f"{what} '{expression}' is not a valid jq expression: {first}")


def response_key_of(step: Step, override: str | None = None) -> str:
    """Where each answer goes: RESPONSE_KEY if given, else the step's response_key."""
    key = override or step.response_key
    if not key:
        raise UserError(
            f"no response key for step '{step.name}': set RESPONSE_KEY=... or add "
            "response_key: to the step in the config"
        )
    if step.kind == "question" and key == "dialog_history":
        raise UserError(
            f"response_key 'dialog_history' of step '{step.name}' is where a question step "
            "keeps its history; choose another response_key (or RESPONSE_KEY=...)"
        )
    return key


def parse_step(
    path: Path,
    name: str,
    raw: dict[str, Any],
    default_model: Any,
    context_windows: dict[str, int] | None = None,
    default_provider: Any = "openai",
) -> Step:
    """A step checked whole: types, known keys, jq that compiles, a valid JSON schema, enumerated
    values. Every script parses steps here, so a mistake is found before anything is paid."""
    where = f"{path}: step '{name}'"
    kind = raw.get("kind") or ("question" if name == "question" else "plain")
    for key, value in raw.items():
        if key in STEP_KEYS:
            want = STEP_KEYS[key]
            if not isinstance(value, want):
                raise UserError(
                    f"{where}: '{key}' must be a {want.__name__}, not {type(value).__name__}"
                )
        elif key not in BODY_KEYS:
            hint = near_miss(key, set(STEP_KEYS) | BODY_KEYS)
            raise UserError(
                f"{where}: unknown key '{key}'{hint}; put extra request parameters under 'body:' "
                f"(known keys: {', '.join(sorted(set(STEP_KEYS) | BODY_KEYS))})"
            )
    if kind not in {"plain", "question"}:
        raise UserError(f"{where}: 'kind' must be 'plain' or 'question', not '{kind}'")
    if kind == "plain" and not raw.get("user"):
        raise UserError(f"{where} has no 'user' prompt; add user: 'Describe {{title}} ...'")
    if kind == "question":
        missing = [k for k in ("dialog_history", "context", "image_url") if k not in raw]
        if missing:
            raise UserError(f"{where} (a question step) needs templates: {', '.join(missing)}")
    endpoint = endpoint_of(where, raw)
    if endpoint != CHAT and kind == "question":
        raise UserError(f"{where}: a question step sends chat completions only; remove endpoint:")
    model = raw.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise UserError(f"{path}: no model; add model: gpt-4o-mini at the top or in step '{name}'")
    detail = raw.get("image_detail")
    if detail is not None and detail not in IMAGE_DETAILS:
        raise UserError(
            f"{where}: image_detail '{detail}' is not one of auto, low or high; "
            "use low (85 tokens an image) or remove it"
        )
    for key, low, high in (("image_max_side", 16, 16384), ("image_quality", 1, 100)):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not low <= value <= high):
            raise UserError(f"{where}: {key} must be a whole number from {low} to {high}")
    for key in ("where", "extract"):
        if raw.get(key) is not None:
            compile_jq(raw[key], f"{where}: {key}:")
    response_format = parse_response_format(where, name, raw.get("response_format"))
    # In the config's order: a set's order changes with each process's string hashing, and
    # requests.jsonl must be the same bytes on every run.
    body = {k: v for k, v in raw.items() if k in BODY_KEYS | EMBEDDING_KEYS}
    body.update(raw.get("body") or {})
    if body.get("stream"):
        raise UserError(f"{where}: the Batch API does not support stream: true; remove it")
    if endpoint != EMBEDDINGS:
        check_parameters(where, body, endpoint)
    provider = raw.get("provider", default_provider) or "openai"
    check_provider(f"{where}:", provider)
    check_base_url(where, raw.get("base_url"))
    if provider == "anthropic":
        check_anthropic_step(where, endpoint, body)
    return Step(
        name=name,
        model=model,
        system=raw.get("system"),
        user=raw.get("user"),
        is_multimodal=raw.get("is_multimodal", endpoint != EMBEDDINGS),
        image_key=raw.get("image_key", "image_url"),
        image_detail=raw.get("image_detail"),
        image_max_side=raw.get("image_max_side"),
        image_quality=raw.get("image_quality"),
        response_key=raw.get("response_key"),
        where=raw.get("where"),
        extract=raw.get("extract"),
        response_format=response_format,
        kind=kind,
        templates={k: raw[k] for k in ("dialog_history", "context", "image_url") if k in raw},
        body=body,
        context_window=context_window(model, context_windows),
        endpoint=endpoint,
        provider=provider,
    )
