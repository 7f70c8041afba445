"""One synchronous call per provider, through its official SDK (retries off: call.py decides),
and its answer as the common row its batch result line would make.

A `Wire` takes a request line as a chunk holds it (the pipeline's `{custom_id, url, body}`,
or Anthropic's `{custom_id, params}`) or as make_requests.py wrote it, sends it as the batch
would (the same shaping: anthropic_lines.shape, gemini_shape.shape) and gives back a `Reply`:

- OpenAI: the line's url and body (`client.post`), the row of br.batches.openai.outcome;
- Anthropic: `client.messages.create(**params)`, the row of anthropic_lines.outcome of a
  `succeeded` (or `errored`) result; a 529 (overloaded) is tried again like a 5xx;
- Gemini: `client.models.generate_content(model, contents, config)`, the row of
  gemini_shape.answer_row (the response's own wire JSON, as a batch's file holds it) or
  error_row (google.rpc.Status).

A rejected key (401) is no answer: it ends the run with one line naming the key's variable
(br.cli.run for OpenAI's and Anthropic's SDK errors, Gemini.calling for Gemini's).

The wait a 429 asks for is read from each provider's own signals: OpenAI's `retry-after(-ms)`
and `x-ratelimit-reset-*`; Anthropic's `retry-after` and `anthropic-ratelimit-*-reset` (RFC
3339); Gemini's RetryInfo `retryDelay` in the error's details (no header, FACTS §7).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from br.batches import anthropic_lines, gemini_shape
from br.batches.provider import failed
from br.batches.providers import line_identity
from br.config import Config

DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
Row = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """One HTTP call's outcome: its status (0: no answer), the row it stands for, and the
    seconds a 429 asks to wait (None: not said)."""

    status: int
    row: Row
    wait: float | None = None


class Wire(Protocol):
    def call(self, request: dict[str, Any]) -> Reply: ...


def seconds(value: str | None) -> float | None:
    """A duration: `1s`, `6m0s`, `20ms`, `17.5s`, or a bare number of seconds."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parts = DURATION.findall(value)
        return sum(float(n) * UNITS[u] for n, u in parts) if parts else None


def until(stamp: str | None) -> float | None:
    """Seconds from now to an RFC 3339 time (Anthropic's `-reset` headers)."""
    try:
        at = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max((at - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def longest(found: list[float | None]) -> float | None:
    told = [w for w in found if w is not None]
    return max(told) if told else None


def no_answer(message: str) -> Reply:
    return Reply(0, failed("connection_error", f"no answer: {message}", None, True))


# --------------------------------------------------------------------------- OpenAI


def waited(headers: Any, resets: list[float | None]) -> float | None:
    """The longest wait asked for: retry-after-ms, retry-after, the resets of used-up limits."""
    ms = seconds(headers.get("retry-after-ms"))
    after = seconds(headers.get("retry-after"))
    return longest([ms / 1000 if ms is not None else None, after, *resets])


def openai_wait(headers: Any) -> float | None:
    reset = [
        seconds(headers.get(f"x-ratelimit-reset-{k}"))
        if headers.get(f"x-ratelimit-remaining-{k}") == "0"
        else None
        for k in ("requests", "tokens")
    ]
    return waited(headers, reset)


class OpenAIWire:
    def __init__(self, config: Config, flex: bool) -> None:
        from br.batches.client import make_client

        self.client = make_client(config, max_retries=0)
        self.flex = flex

    def call(self, request: dict[str, Any]) -> Reply:
        import openai

        from br.batches.openai import outcome

        body = dict(request["body"])
        if self.flex:
            body["service_tier"] = "flex"
        path = str(request["url"]).removeprefix("/v1")
        line: dict[str, Any] = {"custom_id": request.get("custom_id"), "error": None}
        try:
            # Flex answers may take minutes (OpenAI suggests a 15-minute timeout).
            client = self.client.with_options(timeout=900.0 if self.flex else 600.0)
            answer = client.post(path, body=body, cast_to=object)
            return Reply(200, outcome({**line, "response": {"status_code": 200, "body": answer}}))
        except openai.AuthenticationError:
            raise  # a rejected key ends the run, in one line (br.cli.run words it)
        except openai.APIStatusError as e:
            error = e.body if isinstance(e.body, dict) else {"message": str(e.message)}
            response = {"status_code": e.status_code, "body": {"error": error}}
            row = outcome({**line, "response": response})
            return Reply(e.status_code, row, openai_wait(e.response.headers))
        except openai.APIConnectionError as e:
            return no_answer(str(e))


# --------------------------------------------------------------------------- Anthropic


def anthropic_wait(headers: Any) -> float | None:
    reset = [
        until(headers.get(f"anthropic-ratelimit-{k}-reset"))
        if headers.get(f"anthropic-ratelimit-{k}-remaining") == "0"
        else None
        for k in ("requests", "tokens", "input-tokens", "output-tokens")
    ]
    return waited(headers, reset)


class AnthropicWire:
    def __init__(self, config: Config) -> None:
        import inspect

        import anthropic

        from br.batches.anthropic import make_client

        self.client = make_client(config, max_retries=0)
        signature = inspect.signature(anthropic.resources.Messages.create)
        self.known = set(signature.parameters) - {"self", "extra_body", "extra_headers"}

    def call(self, request: dict[str, Any]) -> Reply:
        import anthropic

        params = (request if "params" in request else anthropic_lines.shape(request))["params"]
        # What the SDK's signature does not name goes as it is, in the body (as in a batch).
        named = {k: v for k, v in params.items() if k in self.known}
        extra = {k: v for k, v in params.items() if k not in self.known}
        try:
            message = self.client.messages.create(**named, extra_body=extra or None, timeout=600.0)
            result = {"type": "succeeded", "message": message.model_dump(mode="json")}
            return Reply(200, anthropic_lines.outcome(result))
        except anthropic.AuthenticationError:
            raise  # a rejected key ends the run, in one line (br.cli.run words it)
        except anthropic.APIStatusError as e:
            body = e.body if isinstance(e.body, dict) else {"error": {"message": str(e.message)}}
            row = anthropic_lines.outcome({"type": "errored", "error": body})
            row["error"]["status"] = e.status_code
            return Reply(e.status_code, row, anthropic_wait(e.response.headers))
        except anthropic.APIConnectionError as e:
            return no_answer(str(e))


# --------------------------------------------------------------------------- Gemini


def gemini_wait(body: Any) -> float | None:
    """RetryInfo's `retryDelay` (`"17s"`) among the details of an error body's Status."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("rpc.RetryInfo"):
            return seconds(str(detail.get("retryDelay") or ""))
    return None


def inline_bytes(value: Any) -> Any:
    """A shaped request with each `inline_data.data` as bytes: the SDK's Blob holds bytes and
    encodes them itself (a base64 string would be encoded twice)."""
    if isinstance(value, list):
        return [inline_bytes(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: inline_bytes(v) for k, v in value.items()}
    blob = out.get("inline_data")
    if isinstance(blob, dict) and isinstance(blob.get("data"), str):
        out["inline_data"] = {**blob, "data": base64.b64decode(blob["data"])}
    return out


class GeminiWire:
    def __init__(self, config: Config) -> None:
        from br.batches.gemini import Gemini

        self.gemini = Gemini(config)
        self.client = self.gemini.client(retries=False)

    def call(self, request: dict[str, Any]) -> Reply:
        from google.genai import errors, types

        from br.batches.gemini import transport_errors

        shaped = inline_bytes(gemini_shape.shape(request)["request"])
        config = dict(shaped.get("generation_config") or {})
        if shaped.get("system_instruction"):
            config["system_instruction"] = shaped["system_instruction"]
        model = str(line_identity(request)[2])  # a Gemini line's or the pipeline's
        try:
            with self.gemini.calling():
                response = self.client.models.generate_content(
                    model=model,
                    contents=shaped["contents"],
                    config=types.GenerateContentConfig(**config, should_return_http_response=True),
                )
            raw = response.sdk_http_response.body if response.sdk_http_response else None
            answer = json.loads(raw) if raw else response.model_dump(mode="json", by_alias=True)
            return Reply(200, gemini_shape.answer_row(answer))
        except errors.APIError as e:
            status = {"code": e.code, "status": e.status, "message": e.message}
            row = gemini_shape.error_row(status)
            return Reply(int(e.code or 0) or 500, row, gemini_wait(e.details))
        except (*transport_errors(), ConnectionError) as e:
            return no_answer(str(e))


def wire_for(config: Config, provider: str, mode: str) -> Wire:
    if provider == "anthropic":
        return AnthropicWire(config)
    if provider == "gemini":
        return GeminiWire(config)
    return OpenAIWire(config, flex=mode == "flex")
