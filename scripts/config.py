"""The YAML config: top-level keys, and each step checked and parsed into a `Step`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cli import UserError

# Config keys that are not steps.
TOP_LEVEL_KEYS = {
    "model",
    "api_key",
    "base_url",
    "prices",
    "token_budget",
    "pipeline",
    "max_requests",
}
# Keys a step may hold besides chat-completions body parameters.
STEP_KEYS = {
    "system": str,
    "user": str,
    "is_multimodal": bool,
    "image_key": str,
    "image_detail": str,
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
}
# Chat-completions parameters a step may set directly (anything else goes under `body:`).
BODY_KEYS = {
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "verbosity",
    "logprobs",
    "top_logprobs",
    "service_tier",
}
ENDPOINT = "/v1/chat/completions"


@dataclass
class Step:
    name: str
    model: str
    system: str | None
    user: str | None
    is_multimodal: bool = True
    image_key: str = "image_url"
    image_detail: str | None = None
    response_key: str | None = None
    where: str | None = None
    extract: str | None = None
    response_format: dict[str, Any] | None = None
    kind: str = "plain"  # "question": the original tool's dialogue rounds
    templates: dict[str, str] = field(default_factory=dict)  # question: dialog_history, ...
    body: dict[str, Any] = field(default_factory=dict)

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
        return parse_step(self.path, name, raw, self.data.get("model"))

    def price(self, model: str) -> dict[str, float] | None:
        prices = self.data.get("prices") or {}
        return prices.get(model)

    def token_budget(self, model: str) -> int | None:
        budget = self.data.get("token_budget")
        if isinstance(budget, dict):
            budget = budget.get(model)
        return int(budget) if budget else None


def load_config(path: Path) -> Config:
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist; set CONFIG=path/to/config.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}")
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a YAML mapping with 'model' and one mapping per step")
    if "model" in data and not isinstance(data["model"], str):
        raise UserError(f"{path}: 'model' must be a string such as gpt-4o-mini")
    return Config(path, data)


def parse_step(path: Path, name: str, raw: dict[str, Any], default_model: Any) -> Step:
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
            raise UserError(
                f"{where}: unknown key '{key}'; put extra request parameters under 'body:' "
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
    model = raw.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise UserError(f"{path}: no model; add model: gpt-4o-mini at the top or in step '{name}'")
    body = {k: raw[k] for k in BODY_KEYS if k in raw}
    body.update(raw.get("body") or {})
    if body.get("stream"):
        raise UserError(f"{where}: the Batch API does not support stream: true; remove it")
    return Step(
        name=name,
        model=model,
        system=raw.get("system"),
        user=raw.get("user"),
        is_multimodal=raw.get("is_multimodal", True),
        image_key=raw.get("image_key", "image_url"),
        image_detail=raw.get("image_detail"),
        response_key=raw.get("response_key"),
        where=raw.get("where"),
        extract=raw.get("extract"),
        response_format=normalise_response_format(name, raw.get("response_format")),
        kind=kind,
        templates={k: raw[k] for k in ("dialog_history", "context", "image_url") if k in raw},
        body=body,
    )


def normalise_response_format(name: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accept OpenAI's full response_format or a bare JSON schema (wrapped as a strict schema)."""
    if value is None or value.get("type") in {"json_schema", "json_object", "text"}:
        return value
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
    return {"type": "json_schema", "json_schema": {"name": safe, "schema": value, "strict": True}}
