"""The wire of Anthropic's Message Batches API (docs/api-facts-anthropic.md "Routes"):
``/v1/messages/batches`` create and list, ``/{id}`` retrieve and delete, ``/{id}/cancel``,
``/{id}/results`` (JSONL), on the same port as OpenAI's API; and ``/v1/messages``, one Message
answered now (provider_live.py).

A key comes as ``x-api-key`` (SDKs before 2.x, the docs' curl) or as ``Authorization: Bearer``
(SDK 2.x); ``anthropic-version`` must be one of the two versions in use. Every answer carries a
``request-id`` header, repeated as ``request_id`` in error bodies.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .anthropic_batches import LIST_LIMIT, MAX_BODY_BYTES, MessageBatches
from .anthropic_messages import VERSIONS
from .lifecycle import Emulator
from .provider_errors import AnthropicError, ProviderError
from .provider_live import ProviderLive
from .provider_wire import Dialect, advanced, provider_route
from .routes import ALL_METHODS
from .store import ID_ALPHABET
from .wire import JsonAnswer, bearer, read_json, streamed

MAX_MESSAGE_BYTES = 32_000_000  # the Messages API's request size limit (32 MB)


class Anthropic(Dialect):
    error_class = AnthropicError

    def authenticate(self, request: Request, expected: str | None) -> None:
        key = request.headers.get("x-api-key", "").strip() or bearer(request)
        if not key:
            # UNVERIFIED: the exact text (the type and status are documented).
            raise AnthropicError(401, "x-api-key header is required")
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            raise AnthropicError(401, "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        # UNVERIFIED: the answer to a missing or unknown version (a 400 is the plausible one).
        if not version:
            raise AnthropicError(400, "anthropic-version: header is required")
        if version not in VERSIONS:
            raise AnthropicError(
                400, f"anthropic-version: invalid version '{version}' (use {' or '.join(VERSIONS)})"
            )

    def headers(self) -> dict[str, str]:
        return {"request-id": "req_011C" + "".join(secrets.choice(ID_ALPHABET) for _ in range(20))}

    def render(self, err: ProviderError, headers: dict[str, str]) -> Response:
        return JsonAnswer(err.body(headers["request-id"]), err.status, {**err.headers, **headers})

    def fault(self, kind: str) -> ProviderError:
        if kind == "429":
            message = "Number of requests has exceeded your rate limit (emulated fault)."
            return AnthropicError(429, message, headers={"retry-after": "1"})
        return AnthropicError(500, "Internal server error (emulated fault)")


def _int_param(request: Request, name: str, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise AnthropicError(400, f"{name}: Input should be between {low} and {high}")
    return int(raw)


class Handlers:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.model = MessageBatches(emu)
        self.live = ProviderLive(emu)

    async def _run(self, fn: Callable[[float], Any]) -> Any:
        return await advanced(self.emu, self.model, fn)

    def _root(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def create(self, request: Request) -> Response:
        payload = await read_json(request, MAX_BODY_BYTES)
        version = request.headers["anthropic-version"]
        root, model = self._root(request), self.model
        return JsonAnswer(
            await self._run(lambda now: model.view(model.create(payload, version, now), root))
        )

    async def message(self, request: Request) -> Response:
        """`POST /v1/messages`: one Message, answered now (provider_live.py)."""
        params = await read_json(request, MAX_MESSAGE_BYTES)
        body, headers = await self.live.message(params, request.headers["anthropic-version"])
        return JsonAnswer(body, headers=headers)

    async def retrieve(self, request: Request) -> Response:
        batch_id, root, model = request.path_params["id"], self._root(request), self.model
        return JsonAnswer(await self._run(lambda now: model.view(model.get(batch_id), root)))

    async def list(self, request: Request) -> Response:
        limit = _int_param(request, "limit", LIST_LIMIT)
        after = request.query_params.get("after_id")
        before = request.query_params.get("before_id")
        root, model = self._root(request), self.model

        def page(now: float) -> dict[str, Any]:
            items, more = model.page(limit, after, before)
            data = [model.view(r, root) for r in items]
            first = data[0]["id"] if data else None
            return {
                "data": data,
                "has_more": more,
                "first_id": first,
                "last_id": data and data[-1]["id"] or None,
            }

        return JsonAnswer(await self._run(page))

    async def cancel(self, request: Request) -> Response:
        batch_id, root, model = request.path_params["id"], self._root(request), self.model
        return JsonAnswer(
            await self._run(lambda now: model.view(model.cancel(batch_id, now), root))
        )

    async def delete(self, request: Request) -> Response:
        batch_id, model = request.path_params["id"], self.model
        return JsonAnswer(await self._run(lambda now: model.delete(batch_id)))

    async def results(self, request: Request) -> Response:
        batch_id, model = request.path_params["id"], self.model
        fh = await self._run(lambda now: open(model.results_path(batch_id), "rb"))  # noqa: SIM115
        # UNVERIFIED: the Content-Type; the SDK asks for application/binary.
        return streamed(fh, "application/binary")[0]


def table(emu: Emulator) -> list[Route]:
    h, dialect = Handlers(emu), Anthropic()
    paths: list[tuple[str, dict[str, Any]]] = [
        ("/v1/messages", {"POST": h.message}),
        ("/v1/messages/batches", {"POST": h.create, "GET": h.list}),
        ("/v1/messages/batches/{id}", {"GET": h.retrieve, "DELETE": h.delete}),
        ("/v1/messages/batches/{id}/cancel", {"POST": h.cancel}),
        ("/v1/messages/batches/{id}/results", {"GET": h.results}),
    ]
    return [
        Route(path, provider_route(emu, dialect, path, methods), methods=ALL_METHODS)
        for path, methods in paths
    ]
