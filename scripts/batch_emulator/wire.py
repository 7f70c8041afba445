"""The HTTP layer's common parts: reading bodies within limits, JSON answers, the bearer key,
and the per-call wrapper every route goes through (count, inject a fault, authenticate,
delay, answer).

The model never sees a request; handlers here never decide a batch's fate.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .exceptions import ApiError, BadJson, BodyTooLarge, InvalidUrl, Unauthorized
from .lifecycle import Emulator

Handler = Callable[[Request], Awaitable[Response]]
CLOSE = "emulator.close"  # scope extension set by server.Protocol: drop the connection


def log(message: str) -> None:
    print(f"emulator: {message}", file=sys.stderr, flush=True)


class JsonAnswer(Response):
    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200, headers: Any = None) -> None:
        super().__init__(content, status_code, headers)

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False).encode("utf-8")


def error_answer(err: ApiError) -> JsonAnswer:
    return JsonAnswer(err.body(), err.status, err.headers)


class Dropped(Response):
    """No answer at all: the connection is closed, as a network fault would."""

    def __init__(self) -> None:
        super().__init__(b"", 500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        close = scope.get("extensions", {}).get(CLOSE)
        if close is None:  # not served by server.Protocol: the nearest thing is a 500
            await super().__call__(scope, receive, send)
            return
        close()
        while (await receive())["type"] != "http.disconnect":
            pass


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with a 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return bytes(body)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    raw = await read_body(request, limit)
    try:
        payload = json.loads(raw or b"{}")
    except ValueError:
        raise BadJson() from None
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return payload


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def mask_key(key: str) -> str:
    return "*" * len(key) if len(key) <= 8 else f"{key[:3]}...{key[-4:]}"


def check_key(request: Request, expected: str | None) -> None:
    """401 unless a bearer key is sent, and it is ``expected`` when one is set."""
    key = bearer(request)
    if not key:
        raise Unauthorized(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
        raise Unauthorized(f"Incorrect API key provided: {mask_key(key)}.")


async def in_model(emu: Emulator, fn: Callable[[float], Any]) -> Any:
    """Run ``fn(now)`` under the model's lock, after due transitions, off the event loop."""

    def call() -> Any:
        with emu.lock:
            return _run(emu, fn)

    # Fast path: a free lock is taken right here (a thread hop costs more than the call);
    # when the ticker or an upstream worker holds it, wait for it in a worker thread.
    if emu.lock.acquire(blocking=False):
        try:
            return _run(emu, fn)
        finally:
            emu.lock.release()
    return await run_in_threadpool(call)


def _run(emu: Emulator, fn: Callable[[float], Any]) -> Any:
    now = time.time()
    emu.advance_all(now)
    return fn(now)


def _fault_answer(fault: str) -> Response | None:
    if fault == "drop":
        return Dropped()
    if fault == "429":
        return error_answer(
            ApiError(
                429,
                "Rate limit reached for requests (emulated fault). Please try again later.",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": "0.2", "retry-after-ms": "200"},
            )
        )
    if fault == "500":
        return error_answer(
            ApiError(
                500,
                "The server had an error while processing your request. Sorry about that!",
                type_="server_error",
            )
        )
    return None


def api_route(emu: Emulator, template: str, methods: dict[str, Handler]) -> Handler:
    """The endpoint of one ``/v1`` path: every method it serves, through the common steps."""

    async def endpoint(request: Request) -> Response:
        method = request.method
        route = f"{method} {template}"
        try:
            with emu.stats_lock:
                emu.count_call(route)
                fault = emu.faults.http_fault(route)
            early = _fault_answer(fault) if fault else None
            if early is not None:
                return early
            check_key(request, emu.options.api_key)
            handler = methods.get(method)
            if handler is None:
                raise InvalidUrl(method, request.url.path)
            answer = await handler(request)
            delay = float(emu.faults.settings["response_delay"].get(route, 0))
            if delay > 0:
                await asyncio.sleep(delay)  # the call has taken effect; only the answer is late
            if fault == "drop_after":
                return Dropped()
            body = getattr(answer, "body", None)
            if isinstance(body, bytes):
                with emu.stats_lock:
                    emu.count_bytes(route, len(body))
            return answer
        except ApiError as err:
            return error_answer(err)
        except ClientDisconnect:
            log(f"client went away during {route}")
            return Dropped()
        except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving
            traceback.print_exc(file=sys.stderr)
            return error_answer(
                ApiError(500, f"Emulator internal error: {exc}", type_="server_error")
            )

    return endpoint


CHUNK = 1 << 20  # bytes per read of a download (each read is a thread hop)


def streamed(fh: Any, media_type: str) -> tuple[StreamingResponse, int]:
    """A download of an open file, read a chunk at a time and closed at the end, and its size."""
    size = fh.seek(0, os.SEEK_END)
    fh.seek(0)

    def chunks() -> Iterator[bytes]:
        with fh:
            while data := fh.read(CHUNK):
                yield data

    headers = {"content-length": str(size)}
    return StreamingResponse(chunks(), media_type=media_type, headers=headers), size
