"""The wire of Gemini's Batch API and File API (docs/api-facts-gemini.md "Routes"), under
``/v1`` (the SDK's default) and ``/v1beta`` (the docs'), on the same port as OpenAI's API:

- ``POST /{v}/models/{model}:generateContent`` (one answer now: provider_live.py);
- ``POST /{v}/models/{model}:batchGenerateContent``; ``GET /{v}/batches``;
  ``GET|DELETE /{v}/batches/{id}``; ``POST /{v}/batches/{id}:cancel``;
- ``POST /upload/{v}/files`` (the resumable protocol: start, then chunks at the session URL);
  ``GET /{v}/files``, ``GET|DELETE /{v}/files/{id}``; ``GET /{v}/files/{id}:download`` and
  ``GET /download/{v}/files/{id}:download`` (``?alt=media``).

``/v1/batches`` and ``/v1/files`` are OpenAI's paths too: a request there is Gemini's when it
carries a Gemini key (``x-goog-api-key`` or ``?key=``), which no OpenAI client sends; every
other request keeps reaching OpenAI's routes unchanged.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from .exceptions import BodyTooLarge
from .gemini_batches import LIST_SIZE, MAX_INLINE_BYTES, GeminiBatches
from .gemini_files import MAX_FILE_BYTES
from .lifecycle import Emulator
from .provider_errors import GoogleError, ProviderError
from .provider_live import ProviderLive
from .provider_wire import Dialect, advanced, provider_route
from .routes import ALL_METHODS
from .wire import JsonAnswer, read_body, read_json, streamed

VERSIONS = ("v1", "v1beta")
UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def _key(headers: Headers, query: QueryParams) -> str:
    return headers.get("x-goog-api-key", "").strip() or query.get("key", "").strip()


class Google(Dialect):
    error_class = GoogleError

    def authenticate(self, request: Request, expected: str | None) -> None:
        if request.url.path.startswith("/upload/") and "upload_id" in request.query_params:
            return  # the session URL is the credential; the handler checks the session
        key = _key(request.headers, request.query_params)
        if not key:
            # UNVERIFIED: the answer to a call without any key.
            raise GoogleError(403, UNREGISTERED, "PERMISSION_DENIED")
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            message = "API key not valid. Please pass a valid API key."
            raise GoogleError(400, message, "INVALID_ARGUMENT", [info])

    def fault(self, kind: str) -> ProviderError:
        if kind == "429":  # observed without a Retry-After
            return GoogleError(429, "Resource has been exhausted (e.g. check quota).")
        return GoogleError(500, "An internal error has occurred (emulated fault).")


class GoogleRoute(Route):
    """A route that, on a path OpenAI also serves, takes only requests with a Gemini key."""

    def __init__(self, path: str, endpoint: Any, shared: bool) -> None:
        super().__init__(path, endpoint, methods=ALL_METHODS)
        self.shared = shared

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self.shared and scope["type"] == "http":
            headers = Headers(scope=scope)
            if not _key(headers, QueryParams(scope.get("query_string", b""))):
                return Match.NONE, {}
        return super().matches(scope)


def _version(request: Request) -> str:
    return next((p for p in request.url.path.split("/") if p in VERSIONS), "v1beta")


def _size(request: Request, name: str, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < low:
        raise GoogleError(400, f"Invalid value for {name}: {raw!r}.")
    return min(int(raw), high)


class Handlers:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.model = GeminiBatches(emu)
        self.files = self.model.files
        self.live = ProviderLive(emu)

    async def _run(self, fn: Callable[[float], Any]) -> Any:
        return await advanced(self.emu, self.model, fn)

    # ---- batches -----------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        model, _, method = request.path_params["model"].partition(":")
        if method == "generateContent":
            req = await read_json(request, MAX_INLINE_BYTES)
            return JsonAnswer(await self.live.content(model, req))
        if method != "batchGenerateContent":
            raise GoogleError(404, f"Method {method or 'generateContent'} is not emulated.")
        try:
            raw = await read_body(request, MAX_INLINE_BYTES)
        except BodyTooLarge:
            raise GoogleError(
                400, f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes."
            ) from None
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            raise GoogleError(400, "Invalid JSON payload received.") from None
        if not isinstance(payload, dict):
            raise GoogleError(400, "Invalid JSON payload received: expected an object.")
        m, name = self.model, f"models/{model}"
        return JsonAnswer(
            await self._run(lambda now: m.view(m.create(name, payload, len(raw), now)))
        )

    async def batch(self, request: Request) -> Response:
        ident, _, verb = request.path_params["id"].partition(":")
        m, name = self.model, f"batches/{ident}"
        if request.method == "POST" and verb == "cancel":
            await read_body(request, 1 << 16)
            await self._run(lambda now: m.cancel(name, now))
            return JsonAnswer({})
        if verb or request.method == "POST":
            raise GoogleError(404, f"Unknown method: {request.method} {request.url.path}")
        if request.method == "DELETE":
            await self._run(lambda now: m.delete(name))
            return JsonAnswer({})
        return JsonAnswer(await self._run(lambda now: m.view(m.get(name))))

    async def list_batches(self, request: Request) -> Response:
        size, token, m = (
            _size(request, "pageSize", LIST_SIZE),
            request.query_params.get("pageToken"),
            self.model,
        )

        def page(now: float) -> dict[str, Any]:
            items, after = m.page(size, token)
            out: dict[str, Any] = {"operations": [m.view(r) for r in items]}
            return {**out, "nextPageToken": after} if after else out

        return JsonAnswer(await self._run(page))

    # ---- files -------------------------------------------------------------------------

    async def file(self, request: Request) -> Response:
        ident, _, verb = request.path_params["id"].partition(":")
        files, root, version = self.files, str(request.base_url).rstrip("/"), _version(request)
        if verb == "download" and request.method == "GET":
            return await self.download(request)
        if verb:
            raise GoogleError(404, f"Unknown method: {request.method} {request.url.path}")
        if request.method == "DELETE":
            await self._run(lambda now: files.delete(ident, now))
            return JsonAnswer({})
        return JsonAnswer(
            await self._run(lambda now: files.view(files.get(ident, now), root, version))
        )

    async def list_files(self, request: Request) -> Response:
        size, token = _size(request, "pageSize", LIST_SIZE), request.query_params.get("pageToken")
        files, root, version = self.files, str(request.base_url).rstrip("/"), _version(request)

        def page(now: float) -> dict[str, Any]:
            items, after = files.page(size, token, now)
            out: dict[str, Any] = {"files": [files.view(r, root, version) for r in items]}
            return {**out, "nextPageToken": after} if after else out

        return JsonAnswer(await self._run(page))

    async def download(self, request: Request) -> Response:
        ident = request.path_params["id"].partition(":")[0]
        files = self.files
        fh = await self._run(lambda now: open(files.data_path(files.get(ident, now)), "rb"))  # noqa: SIM115
        return streamed(fh, "application/octet-stream")[0]

    # ---- uploads: the resumable protocol -----------------------------------------------

    async def upload(self, request: Request) -> Response:
        upload_id = request.query_params.get("upload_id")
        if upload_id is None:
            return await self._start(request)
        command = request.headers.get("x-goog-upload-command", "")
        files = self.files
        sess = await self._run(lambda now: files.session(upload_id))
        offset = request.headers.get("x-goog-upload-offset", "")
        if "upload" not in command or offset != str(sess["received"]):
            raise GoogleError(
                400, f"Upload command {command!r} at offset {offset!r} is not valid here."
            )
        limit = MAX_FILE_BYTES if sess["size"] is None else sess["size"]
        with open(files.staged(upload_id), "ab") as fh:
            async for chunk in request.stream():
                sess["received"] += len(chunk)
                if sess["received"] > limit:
                    await self._run(lambda now: files.drop_session(upload_id))
                    raise GoogleError(400, "The upload is larger than the size it declared.")
                await run_in_threadpool(fh.write, chunk)
        if "finalize" not in command:
            return Response(b"", headers={"x-goog-upload-status": "active"})
        if sess["size"] is not None and sess["received"] != sess["size"]:
            raise GoogleError(400, "The upload ended before the size it declared.")
        root, version = str(request.base_url).rstrip("/"), _version(request)
        view = await self._run(lambda now: files.view(files.finish(upload_id, now), root, version))
        return JsonAnswer({"file": view}, headers={"x-goog-upload-status": "final"})

    async def _start(self, request: Request) -> Response:
        protocol = request.headers.get("x-goog-upload-protocol", "")
        if protocol != "resumable" or request.headers.get("x-goog-upload-command") != "start":
            # UNVERIFIED: multipart uploads exist; the SDK uses only the resumable protocol.
            raise GoogleError(400, "The emulator takes resumable uploads only.")
        payload = await read_json(request, 1 << 20)
        meta = payload.get("file") if isinstance(payload.get("file"), dict) else {}
        declared = request.headers.get("x-goog-upload-header-content-length", "")
        size = int(declared) if declared.isdigit() else None
        mime = request.headers.get("x-goog-upload-header-content-type")
        files = self.files
        upload_id = await self._run(lambda now: files.start(meta, size, mime))
        url = f"{str(request.base_url).rstrip('/')}/upload/{_version(request)}/files"
        headers = {
            "x-goog-upload-url": f"{url}?upload_id={upload_id}&upload_protocol=resumable",
            "x-goog-upload-status": "active",
            "x-goog-upload-chunk-granularity": str(8 * 1024 * 1024),
        }
        return Response(b"", headers=headers)


def table(emu: Emulator) -> list[Route]:
    h, dialect = Handlers(emu), Google()
    paths: list[tuple[str, dict[str, Any]]] = [
        ("/{version}/models/{model}", {"POST": h.create}),
        ("/{version}/batches", {"GET": h.list_batches}),
        ("/{version}/batches/{id}", {"GET": h.batch, "POST": h.batch, "DELETE": h.batch}),
        ("/{version}/files", {"GET": h.list_files}),
        ("/{version}/files/{id}", {"GET": h.file, "DELETE": h.file}),
        ("/upload/{version}/files", {"POST": h.upload}),
        ("/download/{version}/files/{id}", {"GET": h.download}),
    ]
    out = []
    for template, methods in paths:
        endpoint = provider_route(emu, dialect, template, methods)
        for version in VERSIONS:
            path = template.replace("{version}", version)
            shared = version == "v1" and path.startswith(("/v1/batches", "/v1/files"))
            out.append(GoogleRoute(path, endpoint, shared))
    return out
