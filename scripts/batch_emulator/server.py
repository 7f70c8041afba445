"""Serving: Starlette on uvicorn (h11), with the API's 400 envelope for malformed HTTP, a read
timeout, the background ticker that moves batches along, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time
import traceback
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import admin, routes
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


def build_app(emu: Emulator) -> Starlette:
    async def not_found(request: Request) -> Response:
        return error_answer(InvalidUrl(request.method, request.url.path))

    async def internal(request: Request, exc: Exception) -> Response:
        traceback.print_exception(exc)
        return error_answer(ApiError(500, f"Emulator internal error: {exc}", type_="server_error"))

    catch_all = Route("/{path:path}", not_found, methods=routes.ALL_METHODS)
    return Starlette(
        routes=[*routes.table(emu), *admin.table(emu), catch_all],
        exception_handlers={Exception: internal},
    )


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
    sock = _listen(options)
    host = options.host if options.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    print(f"http://{host}:{sock.getsockname()[1]}/v1", flush=True)
    stop = threading.Event()
    ticker = threading.Thread(target=_ticker, args=(emu, stop), name="ticker", daemon=True)
    ticker.start()
    # uvicorn re-raises the signal it caught once it has shut down; these handlers make that
    # a no-op, so SIGTERM ends the process with status 0 (state is on disk already).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
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
