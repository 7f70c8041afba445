"""The ``/v1`` routes, one table: parse a request, call the model, shape the answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import answers, facts, uploads, validation
from .exceptions import ApiError, InvalidValue, MissingParameter
from .lifecycle import Emulator
from .ratelimits import Limits, check_flex, request_tokens
from .wire import JsonAnswer, api_route, in_model, read_json, streamed

# Every method reaches the endpoint, which answers the API's 404 for those a path lacks.
ALL_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]


def int_param(request: Request, name: str, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected an integer, but got a string instead.",
            param=name,
            code="invalid_type",
        ) from None
    if not low <= value <= high:
        below = value < low
        raise ApiError(
            400,
            f"Invalid '{name}': integer {'below minimum' if below else 'above maximum'} value. "
            f"Expected a value {'>=' if below else '<='} {low if below else high}, but got "
            f"{value} instead.",
            param=name,
            code="integer_below_min_value" if below else "integer_above_max_value",
        )
    return value


class Files:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    async def create(self, request: Request) -> Response:
        return JsonAnswer(await uploads.create_file(request, self.emu))

    async def list(self, request: Request) -> Response:
        refused = self.emu.faults.listing_refused("file")
        if refused is not None:
            raise refused
        limit = int_param(request, "limit", facts.FILE_LIST_LIMIT)
        order = request.query_params.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise InvalidValue("order", order, ("asc", "desc"))
        purpose = request.query_params.get("purpose")
        after = request.query_params.get("after")
        return JsonAnswer(
            await in_model(
                self.emu,
                lambda now: self.emu.store.list_files(
                    purpose=purpose, limit=limit, order=order, after=after, now=now
                ),
            )
        )

    async def get(self, request: Request) -> Response:
        file_id = request.path_params["id"]
        store = self.emu.store
        return JsonAnswer(
            await in_model(self.emu, lambda now: store.file_view(store.get_file(file_id, now)))
        )

    async def delete(self, request: Request) -> Response:
        file_id = request.path_params["id"]
        await in_model(self.emu, lambda now: self.emu.store.delete_file(file_id, now))
        return JsonAnswer({"id": file_id, "object": "file", "deleted": True})

    async def content(self, request: Request) -> Response:
        file_id = request.path_params["id"]
        store = self.emu.store

        def open_it(now: float) -> Any:
            store.get_file(file_id, now)
            # Opened under the lock so a concurrent delete cannot pull the file away.
            return store.open_data(file_id)

        fh = await in_model(self.emu, open_it)
        # UNVERIFIED: the real Content-Type; raw bytes as application/octet-stream.
        response, size = streamed(fh, "application/octet-stream")
        with self.emu.stats_lock:
            self.emu.count_bytes("GET /v1/files/{id}/content", size)
        return response


class Batches:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    async def create(self, request: Request) -> Response:
        payload = await read_json(request, facts.MAX_JSON_BODY)
        validation.create_batch_payload(payload)
        emu = self.emu
        return JsonAnswer(
            await in_model(emu, lambda now: emu.batch_view(emu.create_batch(payload, now), now))
        )

    async def list(self, request: Request) -> Response:
        refused = self.emu.faults.listing_refused("batch")
        if refused is not None:
            raise refused
        limit = int_param(request, "limit", facts.BATCH_LIST_LIMIT)
        after = request.query_params.get("after")
        emu = self.emu
        return JsonAnswer(
            await in_model(emu, lambda now: emu.list_batches(limit=limit, after=after, now=now))
        )

    async def get(self, request: Request) -> Response:
        batch_id = request.path_params["id"]
        emu = self.emu
        return JsonAnswer(
            await in_model(emu, lambda now: emu.batch_view(emu.store.get_batch(batch_id), now))
        )

    async def cancel(self, request: Request) -> Response:
        batch_id = request.path_params["id"]
        await read_json(request, facts.MAX_JSON_BODY)
        emu = self.emu
        return JsonAnswer(
            await in_model(emu, lambda now: emu.batch_view(emu.cancel_batch(batch_id, now), now))
        )


class Live:
    """The model endpoints called directly (not in a batch): with the latency, the per-minute
    limits and the flex tier of ratelimits.py (all off by default)."""

    def __init__(self, emu: Emulator, endpoint: str, limits: Limits) -> None:
        self.emu = emu
        self.endpoint = endpoint
        self.limits = limits

    async def create(self, request: Request) -> Response:
        body = await read_json(request, facts.MAX_MODEL_BODY)
        upstream = self.emu.upstream
        if upstream is not None:
            status, payload = await run_in_threadpool(upstream.call, self.endpoint, body)
            return JsonAnswer(payload, status)
        if "model" not in body:
            raise ApiError(400, "you must provide a model parameter")
        required = {"/v1/chat/completions": "messages", "/v1/embeddings": "input"}
        if self.endpoint in required and required[self.endpoint] not in body:
            raise MissingParameter(required[self.endpoint])
        if body.get("stream") is True:
            raise ApiError(400, "The emulator does not support streaming.", param="stream")
        endpoint = self.endpoint
        settings = self.emu.faults.settings
        flex = body.get("service_tier") == "flex"
        self.emu.tally("live_calls")
        try:
            rate = float(settings["flex_unavailable_rate"])
            with self.emu.stats_lock:
                unavailable = flex and rate > 0 and self.emu.faults.rng.random() < rate
            check_flex(body, endpoint, unavailable)
            headers: dict[str, str] = {}
            if settings["rpm_limit"] is not None or settings["tpm_limit"] is not None:
                tokens = request_tokens(answers.prompt_tokens(endpoint, body), body)
                rpm, tpm = settings["rpm_limit"], settings["tpm_limit"]
                window = float(settings["rate_window_seconds"]) or 60.0
                headers = self.limits.admit(str(body["model"]), tokens, rpm, tpm, window=window)
        except ApiError as e:
            if e.status == 429:
                self.emu.tally("live_rate_limited")
            raise
        delay = float(settings["live_seconds"]) + (float(settings["flex_seconds"]) if flex else 0)
        if delay:
            await asyncio.sleep(delay)
        status, payload = await run_in_threadpool(
            lambda: answers.answer(endpoint, body, created=int(time.time()))
        )
        if flex and "service_tier" in payload:
            payload["service_tier"] = "flex"
        self.emu.tally("requests_processed")
        return JsonAnswer(payload, status, headers or None)


def table(emu: Emulator) -> list[Route]:
    files, batches = Files(emu), Batches(emu)
    limits = Limits()  # one rolling minute per model, whichever endpoint is called
    live = {e: Live(emu, e, limits) for e in facts.ANSWERED_ENDPOINTS}
    paths: list[tuple[str, dict[str, Any]]] = [
        ("/v1/files", {"POST": files.create, "GET": files.list}),
        ("/v1/files/{id}", {"GET": files.get, "DELETE": files.delete}),
        ("/v1/files/{id}/content", {"GET": files.content}),
        ("/v1/batches", {"POST": batches.create, "GET": batches.list}),
        ("/v1/batches/{id}", {"GET": batches.get}),
        ("/v1/batches/{id}/cancel", {"POST": batches.cancel}),
        *((endpoint, {"POST": handler.create}) for endpoint, handler in live.items()),
    ]
    return [
        Route(path, api_route(emu, path, methods), methods=ALL_METHODS) for path, methods in paths
    ]
