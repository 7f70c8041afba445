"""The per-call steps of the Anthropic and Gemini routes, as ``wire.api_route`` does them for
OpenAI's: count the call, inject an HTTP fault, authenticate, answer, delay, drop after.

What differs by provider is a ``Dialect``: how a key is presented and checked, how an error
is rendered (each provider's own envelope) and which headers every answer carries.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .exceptions import ApiError
from .lifecycle import Emulator
from .provider_errors import ProviderError
from .wire import Dropped, JsonAnswer, in_model, log

Handler = Callable[[Request], Awaitable[Response]]


class Dialect:
    """One provider's wire conventions; subclasses fill these in."""

    error_class: type[ProviderError] = ProviderError

    def authenticate(self, request: Request, expected: str | None) -> None:
        raise NotImplementedError

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Any:
        """A ProviderError of this dialect for ``status``."""
        return self.error_class(status, message, headers=headers)

    def headers(self) -> dict[str, str]:
        """Headers every answer carries."""
        return {}

    def render(self, err: ProviderError, headers: dict[str, str]) -> Response:
        return JsonAnswer(err.body(), err.status, {**err.headers, **headers})

    def fault(self, kind: str) -> ProviderError:
        if kind == "429":
            message = "Rate limit reached (emulated fault). Please try again later."
            return self.error(429, message, {"retry-after": "0.2", "retry-after-ms": "200"})
        return self.error(500, "Internal server error (emulated fault).")


def provider_route(
    emu: Emulator, dialect: Dialect, template: str, methods: dict[str, Handler]
) -> Handler:
    """The endpoint of one path: every method it serves, through the common steps."""

    async def endpoint(request: Request) -> Response:
        route = f"{request.method} {template}"
        headers = dialect.headers()
        try:
            with emu.stats_lock:
                emu.count_call(route)
                fault = emu.faults.http_fault(route)
            if fault == "drop":
                return Dropped()
            if fault in ("429", "500"):
                return dialect.render(dialect.fault(fault), headers)
            dialect.authenticate(request, emu.options.api_key)
            handler = methods.get(request.method)
            if handler is None:
                raise dialect.error(404, f"Not found: {request.method} {request.url.path}")
            answer = await handler(request)
            delay = float(emu.faults.settings["response_delay"].get(route, 0))
            if delay > 0:
                await asyncio.sleep(delay)
            if fault == "drop_after":
                return Dropped()
            answer.headers.update(headers)
            body = getattr(answer, "body", None)
            if isinstance(body, bytes):
                with emu.stats_lock:
                    emu.count_bytes(route, len(body))
            return answer
        except ProviderError as err:
            return dialect.render(err, headers)
        except ApiError as err:  # a shared helper's error (a body over the limit, bad JSON)
            return dialect.render(dialect.error(err.status, err.message, err.headers), headers)
        except ClientDisconnect:
            log(f"client went away during {route}")
            return Dropped()
        except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving
            traceback.print_exc(file=sys.stderr)
            return dialect.render(dialect.error(500, f"Emulator internal error: {exc}"), headers)

    return endpoint


async def advanced(emu: Emulator, model: Any, fn: Callable[[float], Any]) -> Any:
    """`fn(now)` on the event loop's model thread, after a provider's batches have moved on to
    `now` (their `advance`): what every Anthropic and Gemini route reads or changes."""

    def step(now: float) -> Any:
        model.advance(now)
        return fn(now)

    return await in_model(emu, step)
