"""Serving: Starlette on uvicorn (h11), with the API's 400 envelope for malformed HTTP, a read
timeout, the background ticker that moves batches along, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import threading
import time
import traceback
from typing import Any
from urllib.parse import urlsplit

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import admin, anthropic_routes, gemini_routes, routes
from .exceptions import ApiError, InvalidUrl, error_envelope
from .lifecycle import Emulator
from .options import Options, parse_args
from .wire import CLOSE, error_answer, log

MALFORMED = error_envelope(
    "We could not parse your HTTP request: it is malformed (a bad Content-Length, chunk size "
    "or header).",
    "invalid_request_error",
    None,
    None,
)


class Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the API's envelope on a 400 and a read timeout.

    ``read_timeout`` closes a connection whose client went silent part-way through a
    request (headers or body); one waiting for its answer, or idle between requests (uvicorn's
    keep-alive timeout), is left alone.
    """

    read_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._silence: asyncio.TimerHandle | None = None
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[CLOSE] = self._drop
            await inner(scope, receive, send)

        self.app = app

    def _drop(self) -> None:
        self.transport.close()

    def _arm(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
        self._silence = self.loop.call_later(self.read_timeout, self._on_silence)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._silence is not None:
            self._silence.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._arm()
        super().data_received(data)

    def _on_silence(self) -> None:
        cycle = self.cycle
        mid_body = cycle is not None and cycle.more_body and not cycle.response_complete
        mid_head = cycle is None and self.conn.their_state is h11.IDLE
        if mid_body or mid_head:
            log(f"closed a connection silent for {self.read_timeout:g} s in mid-request")
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        body = json.dumps(MALFORMED).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass
        self.transport.close()


# A Host header (or an Origin's host part): a name or bracketed IPv6 address, and a port.
HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::[0-9]{1,5})?")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def host_name(value: str) -> str | None:
    """`127.0.0.1` of `127.0.0.1:8000`, `[::1]` of `[::1]:8000`; None when it is not a host."""
    match = HOST.fullmatch(value.strip().lower())
    return match.group(1) if match else None


def as_host(address: str) -> str:
    """An address as a Host header names it: IPv6 in brackets."""
    address = address.strip("[]").lower()
    return f"[{address}]" if ":" in address else address


class HostGuard:
    """Every route, /_emulator/* included, answers only requests addressed to this emulator.

    A web page reaches a server on 127.0.0.1 by DNS rebinding (its own name now resolves to
    127.0.0.1, and its requests carry that name in Host), or posts to it across sites (with
    its Origin). Both are refused before any route: Host must name the address served on,
    localhost, 127.0.0.1, [::1] or an --allow-host name, and so must an Origin when one is
    sent (the SDK sends none).
    """

    def __init__(self, app: ASGIApp, options: Options) -> None:
        self.app = app
        names = [options.host, *options.allow_hosts]
        self.names = {*LOOPBACK_NAMES, *map(as_host, names)}

    def allowed(self, host: str | None) -> bool:
        return "*" in self.names or (host is not None and host_name(host) in self.names)

    def refusal(self, headers: Headers) -> ApiError | None:
        host, origin = headers.get("host"), headers.get("origin")
        if not self.allowed(host):
            return ApiError(
                400,
                f"The Host header {host!r} does not name this emulator; it answers "
                f"{', '.join(sorted(self.names))} (start it with --allow-host NAME for more).",
                code="invalid_host",
            )
        if origin is not None and not self.allowed(urlsplit(origin).netloc):
            return ApiError(
                403,
                f"A page of {origin!r} may not call this emulator: it answers pages of "
                f"{', '.join(sorted(self.names))} only.",
                code="cross_origin_request",
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self.refusal(Headers(scope=scope)) if scope["type"] == "http" else None
        if refused is not None:
            log(f"refused {scope['method']} {scope['path']}: {refused.message}")
            await error_answer(refused)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_app(emu: Emulator) -> ASGIApp:
    async def not_found(request: Request) -> Response:
        return error_answer(InvalidUrl(request.method, request.url.path))

    async def internal(request: Request, exc: Exception) -> Response:
        traceback.print_exception(exc)
        return error_answer(ApiError(500, f"Emulator internal error: {exc}", type_="server_error"))

    catch_all = Route("/{path:path}", not_found, methods=routes.ALL_METHODS)
    app = Starlette(
        routes=[
            *gemini_routes.table(emu),
            *anthropic_routes.table(emu),
            *routes.table(emu),
            *admin.table(emu),
            catch_all,
        ],
        exception_handlers={Exception: internal},
    )
    return HostGuard(app, emu.options)


def _ticker(emu: Emulator, stop: threading.Event) -> None:
    while not stop.wait(0.05):
        try:
            with emu.lock:
                emu.advance_all(time.time())
        except Exception:  # noqa: BLE001 - keep ticking
            traceback.print_exc()


def _listen(options: Options) -> socket.socket:
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    # proto IPPROTO_TCP, so asyncio sets TCP_NODELAY on each connection (headers and body go
    # out in separate writes; with Nagle and delayed ACKs each call would wait ~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((options.host, options.port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def serve(options: Options) -> int:
    options.state_dir.mkdir(parents=True, exist_ok=True)
    emu = Emulator(options)
    Protocol.read_timeout = options.read_timeout
    config = uvicorn.Config(
        build_app(emu),
        http=Protocol,
        lifespan="off",
        log_level="info" if options.verbose else "warning",
        access_log=options.verbose,
        timeout_keep_alive=60,
        timeout_graceful_shutdown=2,
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)

    # A signal before uvicorn installs its own handlers (the URL is printed first, so a caller
    # may stop us at once) must still stop it; and uvicorn re-raises the signal it caught once it
    # has shut down: this handler serves both, so SIGTERM ends the process with status 0 (state
    # is on disk already).
    def stop_serving(signum: int, frame: object) -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_serving)
    sock = _listen(options)
    host = as_host(options.host) if options.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    print(f"http://{host}:{sock.getsockname()[1]}/v1", flush=True)
    stop = threading.Event()
    ticker = threading.Thread(target=_ticker, args=(emu, stop), name="ticker", daemon=True)
    ticker.start()
    try:
        server.run(sockets=[sock])
    finally:
        stop.set()
        ticker.join(5)
        if emu.upstream is not None:
            emu.upstream.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve(parse_args(argv))
