"""Which provider a step's batches go to: `provider_for(config, step)`, the one place every
command asks (run_batches, submit_batch, split_requests, batches, tidy, report).

`provider:` at the config's top level or in a step (config.py checks the name when the config
is read; default openai). Each provider is constructed with the config as its step reads it
(Config.for_step: `base_url:` only where it is meant for that provider); its key and base URL
are read on first use, so a rerun with nothing to do needs no key.
"""

from __future__ import annotations

import importlib
from typing import Any

from br.batches.provider import Provider
from br.cli import UserError
from br.config import ENDPOINT, Config
from br.prompts.images.identity import request_hash
from br.prompts.tokens import estimate_tokens

# name -> (module, class) constructed as Cls(config); a process loads only the ones it uses.
PROVIDERS = {
    "openai": ("br.batches.openai", "OpenAI"),
    "anthropic": ("br.batches.anthropic", "Anthropic"),
    "gemini": ("br.batches.gemini", "Gemini"),
}


def provider_for(config: Config | None, step: str | None = None) -> Provider:
    """The Provider of `step` (or of the config's top level), constructed with the config."""
    return provider_named(config, config.provider(step) if config is not None else "openai", step)


def provider_named(config: Config | None, name: str, step: str | None = None) -> Provider:
    """The Provider called `name` (as `provider:` names it), constructed with the config as
    that provider reads it for `step` (another provider than the step's: an old one whose
    batches are still collected, told only a top-level `base_url:` that is its own)."""
    where = PROVIDERS.get(name)
    if where is None:
        raise UserError(f"provider: {name} is not available in this version")
    cls = getattr(importlib.import_module(where[0]), where[1])
    provider: Provider = cls(told(config, name, step) if config is not None else None)
    return provider


def told(config: Config, name: str, step: str | None) -> Config:
    """The config with only the `base_url:` meant for provider `name` (Config.for_step)."""
    for where in (step, None):
        if config.provider(where) == name:
            return config.for_step(where)
    return Config(config.path, {k: v for k, v in config.data.items() if k != "base_url"})


def reshapes(provider: Provider) -> bool:
    """Its chunk lines are its own, not the pipeline's (OpenAI's lines are the pipeline's)."""
    return bool(getattr(provider, "reshapes", False))


def line_identity(line: dict[str, Any], text: str | None = None) -> tuple[Any, str, Any, str, int]:
    """(custom_id, request hash, model, endpoint, estimated input tokens) of a chunk line
    (`text`: its JSON, when known), whichever provider's it is: the pipeline's (OpenAI's)
    `{custom_id, url, body}`, Anthropic's `{custom_id, params}` or Gemini's `{key, request}`."""
    if "params" in line:
        from br.batches import anthropic_lines

        cid, sha, model, tokens = anthropic_lines.identity(line)
        return cid, sha, model, anthropic_lines.ENDPOINT, tokens
    if "request" in line and "key" in line:
        from br.batches import gemini_shape

        if gemini_shape.is_line(line):
            key, sha, model, tokens = gemini_shape.identity(line)
            return key, sha, model, gemini_shape.ENDPOINT, tokens
    body = line.get("body") or {}
    cid = line.get("custom_id")
    return (
        cid,
        request_hash(line, text),
        body.get("model"),
        line.get("url") or ENDPOINT,
        (estimate_tokens(body)),
    )
