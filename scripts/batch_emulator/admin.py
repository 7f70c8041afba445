"""The admin endpoint, ``/_emulator/*``, outside ``/v1`` and never subject to HTTP faults.

``GET/POST faults`` (read / merge the settings), ``GET stats``, ``POST reset_stats``,
``POST seed``, ``GET health``. A POST must be ``Content-Type: application/json`` (so no web
page can post to it: a cross-site form or ``text/plain`` post is refused before anything is
read), and when ``--api-key`` (or ``--admin-token``) is set, every call but health must
carry it as a bearer key. Like every route, it answers only requests whose Host (and Origin,
if any) names this emulator (server.HostGuard): no page of another site reaches it, even by
DNS rebinding.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import facts
from .exceptions import ApiError, InvalidUrl, Unauthorized
from .lifecycle import Emulator
from .seed import seed
from .wire import JsonAnswer, bearer, error_answer, in_model, read_json


def _check(request: Request, emu: Emulator) -> None:
    if request.method == "POST":
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise ApiError(
                415,
                "The admin endpoint takes only 'Content-Type: application/json' posts.",
                code="unsupported_media_type",
            )
    token = emu.options.admin_token or emu.options.api_key
    if token is not None and not hmac.compare_digest(bearer(request).encode(), token.encode()):
        raise Unauthorized(
            "The admin endpoint needs the emulator's --admin-token (or --api-key) as a bearer key."
        )


async def _faults(request: Request, emu: Emulator) -> Any:
    if request.method == "GET":
        return dict(emu.faults.settings)
    patch = await read_json(request, facts.MAX_JSON_BODY)

    def update(now: float) -> Any:
        with emu.stats_lock:
            return emu.faults.update(patch)

    return await in_model(emu, update)


async def _stats(request: Request, emu: Emulator) -> Any:
    with emu.stats_lock:
        return emu.stats_view()


async def _reset_stats(request: Request, emu: Emulator) -> Any:
    await read_json(request, facts.MAX_JSON_BODY)
    with emu.stats_lock:
        return emu.reset_stats()


async def _seed(request: Request, emu: Emulator) -> Any:
    payload = await read_json(request, facts.MAX_JSON_BODY)
    return await in_model(emu, lambda now: seed(emu, payload, now))


async def _health(request: Request, emu: Emulator) -> Any:
    return {"status": "ok"}


ACTIONS = {
    ("GET", "faults"): _faults,
    ("POST", "faults"): _faults,
    ("GET", "stats"): _stats,
    ("POST", "reset_stats"): _reset_stats,
    ("POST", "seed"): _seed,
    ("GET", "health"): _health,
}


def table(emu: Emulator) -> list[Route]:
    async def endpoint(request: Request) -> Response:
        name = request.path_params["name"]
        action = ACTIONS.get((request.method, name))
        try:
            if action is None:
                raise InvalidUrl(request.method, request.url.path)
            if action is not _health:
                _check(request, emu)
            return JsonAnswer(await action(request, emu))
        except ApiError as err:
            return error_answer(err)

    methods = ["GET", "POST", "DELETE", "PUT", "PATCH"]
    return [Route("/_emulator/{name}", endpoint, methods=methods)]
