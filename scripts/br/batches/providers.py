"""Which provider a step's batches go to: `provider_for(config, step)`, the one place every
command asks (run_batches, submit_batch, split_requests, batches, tidy, report).

`provider:` at the config's top level or in a step (config.py checks the name when the config
is read; default openai). Each provider is constructed with the config as its step reads it
(Config.for_step: `base_url:` only where it is meant for that provider); its key and base URL
are read on first use, so a rerun with nothing to do needs no key.
"""

from __future__ import annotations

from typing import Any

from br.batches import anthropic_lines
from br.batches.anthropic import Anthropic
from br.batches.gemini import Gemini
from br.batches.openai import OpenAI
from br.batches.provider import Provider
from br.cli import UserError
from br.config import ENDPOINT, Config
from br.prompts.images.identity import request_hash
from br.prompts.tokens import estimate_tokens

# name -> the class constructed as Cls(config). Gemini's chunk files keep the pipeline's lines:
# it shapes them into its own `{key, request}` lines as it uploads them (gemini.py).
PROVIDERS: dict[str, Any] = {"openai": OpenAI, "anthropic": Anthropic, "gemini": Gemini}


def provider_for(config: Config | None, step: str | None = None) -> Provider:
    """The Provider of `step` (or of the config's top level), constructed with the config."""
    name = config.provider(step) if config is not None else "openai"
    cls = PROVIDERS.get(name)
    if cls is None:
        raise UserError(f"provider: {name} is not available in this version")
    provider: Provider = cls(config.for_step(step) if config is not None else None)
    return provider


def reshapes(provider: Provider) -> bool:
    """Its chunk lines are its own, not the pipeline's (OpenAI's lines are the pipeline's)."""
    return bool(getattr(provider, "reshapes", False))


def line_identity(line: dict[str, Any]) -> tuple[Any, str, Any, str, int]:
    """(custom_id, request hash, model, endpoint, estimated input tokens) of a chunk line,
    whichever provider's it is: the pipeline's (OpenAI's) `{custom_id, url, body}`, or
    Anthropic's `{custom_id, params}` (Gemini's chunks hold the pipeline's lines)."""
    if "params" in line:
        cid, sha, model, tokens = anthropic_lines.identity(line)
        return cid, sha, model, anthropic_lines.ENDPOINT, tokens
    body = line.get("body") or {}
    cid = line.get("custom_id")
    return (
        cid,
        request_hash(line),
        body.get("model"),
        line.get("url") or ENDPOINT,
        (estimate_tokens(body)),
    )
