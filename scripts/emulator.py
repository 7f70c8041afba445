#!/usr/bin/env python3
"""Local emulator of the OpenAI Files + Batches API (plus /v1/chat/completions).

A real HTTP server that the official ``openai`` SDK can talk to via ``OPENAI_BASE_URL``.
Behaviour follows ``/work/shared/reference/openai-batch-api/FACTS.md``; where the real API is
not documented the choice made here is marked ``UNVERIFIED`` in a comment.

Usage::

    python scripts/emulator.py --port 0 --state-dir /tmp/emu [--processing-seconds 1.0] ...

The first line printed on stdout is the base URL (``http://127.0.0.1:PORT/v1``).

Design notes
------------
* One ``threading.RLock`` guards all state.  Every state object is persisted as its own JSON
  file (atomic tmp + fsync + ``os.replace``) under ``--state-dir``; file contents live beside
  their metadata.  A restart reloads everything.
* Batch progress is a pure function of stored wall-clock timestamps: ``advance_all(now)``
  fires due transitions in time order (on every request and from a background ticker).
* Null-valued optional fields are *omitted* from Batch/File objects by default because the
  published OpenAPI schema types them as non-nullable (``type: string``/``integer``) and
  every returned object must validate against it.  The real API sends explicit ``null``s;
  ``--explicit-nulls`` reproduces that.  The SDK yields ``None`` in both cases.

Admin API (no auth, never subject to HTTP faults)
-------------------------------------------------
* ``GET /_emulator/faults`` -> current runtime settings; ``POST /_emulator/faults`` with a JSON
  object merges: ``request_error_rate``, ``http_error_rate``, ``http_error_kinds`` (subset of
  ``["429", "500", "drop", "drop_after"]``), ``http_error_routes`` (faults only on these
  routes, e.g. ``["POST /v1/batches"]``; empty: all), ``validating_seconds``,
  ``processing_seconds``, ``finalizing_seconds``, ``token_limit``, ``expire``, ``fail``,
  ``seed``, ``response_delay`` (``{"POST /v1/batches": seconds, ...}``: perform the call, then
  wait that long before answering, so a test can kill a client between the server's change and
  the client's record of it).  Timing, ``expire``, ``fail``, ``request_error_rate`` and
  ``seed`` are captured into a batch when it is created.
* ``GET /_emulator/stats`` -> ``{files_created, batches_created, requests_processed,
  http_faults_injected, calls: {"GET /v1/batches/{id}": n, ...}}``;
  ``POST /_emulator/reset_stats`` zeroes ``calls``.  ``GET /_emulator/health`` -> ok.

Deterministic answers: any message text containing ``EMULATOR_ERROR:<code>`` fails the request
(``context_length_exceeded`` -> 400, ``500`` -> 500, ``429`` -> 429, other codes -> 400).
Prompt tokens = ceil(text chars / 4) + 4 per message + 85 per image_url part;
completion tokens = ceil(len(content) / 4).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import io
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import string
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import python_multipart
from python_multipart.multipart import parse_options_header

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_BATCH_REQUESTS = 50_000
MAX_BATCH_FILE_BYTES = 209_715_200  # 200 MiB
MAX_REPORTED_ERRORS = 100
BATCH_FILE_TTL = 2_592_000  # 30 days
BATCH_WINDOW_SECONDS = 86_400  # completion_window "24h"
ORGANIZATION = "org-emulator"
HTTP_FAULT_KINDS = ("429", "500", "drop", "drop_after")
DEFAULT_HTTP_FAULT_KINDS = ["429", "500", "drop"]
MARKER_RE = re.compile(r"EMULATOR_ERROR:([A-Za-z0-9_.-]+)")
ACTIVE_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")
ENQUEUED_STATUSES = ("in_progress", "finalizing")
ID_ALPHABET = string.ascii_letters + string.digits


# --------------------------------------------------------------------------------------
# Errors and small helpers
# --------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered with OpenAI's error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_envelope(self.message, self.type, self.param, self.code)


def error_envelope(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, lines: list[bytes]) -> int:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    size = 0
    with open(tmp, "wb") as fh:
        for line in lines:
            fh.write(line)
            size += len(line)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return size


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}...{key[-4:]}"


# --------------------------------------------------------------------------------------
# Deterministic chat completion simulation
# --------------------------------------------------------------------------------------


def _message_texts(messages: Any) -> tuple[list[str], int, int]:
    """Return (text fragments, number of messages, number of image_url parts)."""
    texts: list[str] = []
    images = 0
    if not isinstance(messages, list):
        return texts, 0, 0
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "image_url":
                    images += 1
                elif isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return texts, len(messages), images


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Documented estimate, mirrored by the client side:

    ``ceil(total characters of all text content in messages / 4) + 4 per message
    + 85 per image_url part``.
    """
    texts, n_messages, n_images = _message_texts(body.get("messages"))
    chars = sum(len(t) for t in texts)
    return math.ceil(chars / 4) + 4 * n_messages + 85 * n_images


def completion_tokens_for(content: str) -> int:
    return math.ceil(len(content) / 4)


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            texts, _, _ = _message_texts([msg])
            return " ".join(texts)
    return ""


def _resolve_pointer(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for raw in ref.lstrip("#").split("/"):
        if not raw:
            continue
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(key, {})
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return {}
    return node


def example_for_schema(schema: Any, root: Any, name: str, h8: str, depth: int = 0) -> Any:
    """Build a deterministic JSON value that is valid against ``schema`` (common subset)."""
    if depth > 16 or not isinstance(schema, dict):
        return f"emulated {h8} {name}"
    if "$ref" in schema:
        return example_for_schema(_resolve_pointer(root, schema["$ref"]), root, name, h8, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_for_schema((non_null or options)[0], root, name, h8, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            if isinstance(sub, dict) and "$ref" in sub:
                sub = _resolve_pointer(root, sub["$ref"])
            if isinstance(sub, dict):
                merged.setdefault("properties", {}).update(sub.get("properties", {}))
                for k, v in sub.items():
                    if k != "properties":
                        merged.setdefault(k, v)
        return example_for_schema(merged, root, name, h8, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ is None:
        typ = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if typ == "object":
        props = schema.get("properties") or {}
        return {k: example_for_schema(v, root, k, h8, depth + 1) for k, v in props.items()}
    if typ == "array":
        count = max(1, int(schema.get("minItems", 0)))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items", {})
        return [example_for_schema(items, root, name, h8, depth + 1) for _ in range(count)]
    if typ in ("integer", "number"):
        value = int(h8[:2], 16) % 10
        low = schema.get("minimum")
        if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], int | float):
            low = math.floor(schema["exclusiveMinimum"]) + 1
        high = schema.get("maximum")
        if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], int | float):
            high = math.ceil(schema["exclusiveMaximum"]) - 1
        if low is not None and value < low:
            value = math.ceil(low)
        if high is not None and value > high:
            value = math.floor(high)
        return value
    if typ == "boolean":
        # About three in four are true, by the request's hash: a filter step keeps most records.
        return int(h8[-1], 16) % 4 != 0
    if typ == "null":
        return None
    text = f"emulated {h8} {name}"
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    if "minLength" in schema and len(text) < int(schema["minLength"]):
        text = text + "x" * (int(schema["minLength"]) - len(text))
    return text


def _marker_error(code: str) -> tuple[int, dict[str, Any]]:
    if code == "context_length_exceeded":
        return 400, error_envelope(
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in more tokens. Please reduce the length of the messages.",
            "invalid_request_error",
            "messages",
            "context_length_exceeded",
        )
    if code == "500":
        return 500, error_envelope(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        )
    if code == "429":
        return 429, error_envelope(
            "Rate limit reached for requests. Please try again later.",
            "requests",
            None,
            "rate_limit_exceeded",
        )
    return 400, error_envelope(f"Emulated error: {code}.", "invalid_request_error", None, code)


def request_failure(
    body: dict[str, Any], *, seed: int, batch_id: str, custom_id: str, error_rate: float
) -> str | None:
    """Decide deterministically whether a request fails and with which code.

    Markers (``EMULATOR_ERROR:<code>`` in any message text) win; otherwise a share
    ``error_rate`` of requests fail with 500 or 429, decided by hash(seed, batch, custom_id)
    so that a retry inside a NEW batch can succeed.
    """
    texts, _, _ = _message_texts(body.get("messages"))
    for text in texts:
        match = MARKER_RE.search(text)
        if match:
            return match.group(1)
    if error_rate > 0:
        digest = sha256_hex("request-error", seed, batch_id, custom_id)
        if int(digest[:12], 16) / float(16**12) < error_rate:
            return "500" if int(digest[12], 16) % 2 == 0 else "429"
    return None


def simulate_chat_completion(
    body: dict[str, Any], *, created: int, failure: str | None
) -> tuple[int, dict[str, Any]]:
    """Answer a chat completions body deterministically: (status code, JSON body)."""
    if failure is not None:
        return _marker_error(failure)
    digest = sha256_hex(canonical_json(body))
    h8 = digest[:8]
    model = str(body.get("model", ""))
    question = _last_user_text(body.get("messages"))[:60]
    answer = f"Emulated answer {h8}: {question}"
    response_format = body.get("response_format")
    content = answer
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            js = response_format.get("json_schema") or {}
            schema = js.get("schema") if isinstance(js, dict) else None
            value = example_for_schema(schema or {"type": "object"}, schema, "value", h8)
            content = json.dumps(value, ensure_ascii=False)
        elif response_format.get("type") == "json_object":
            content = json.dumps({"answer": answer}, ensure_ascii=False)
    prompt_tokens = estimate_prompt_tokens(body)
    completion_tokens = completion_tokens_for(content)
    return 200, {
        "id": f"chatcmpl-{digest[8:37]}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 0
    state_dir: Path = Path(".emulator-state")
    api_key: str | None = None
    validating_seconds: float = 0.1
    processing_seconds: float = 1.0
    finalizing_seconds: float = 0.1
    token_limit: int | None = None
    seed: int = 0
    request_error_rate: float = 0.0
    http_error_rate: float = 0.0
    http_error_kinds: list[str] = field(default_factory=lambda: list(DEFAULT_HTTP_FAULT_KINDS))
    upstream: str | None = None
    upstream_api_key: str = "emulator"
    upstream_concurrency: int = 4
    expire: bool = False
    fail: str | None = None
    explicit_nulls: bool = False
    verbose: bool = False


# --------------------------------------------------------------------------------------
# Upstream forwarding
# --------------------------------------------------------------------------------------


def post_upstream(base: str, api_key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST a chat completions body upstream; return (status, JSON body)."""
    url = base.rstrip("/") + "/chat/completions"
    data = json.dumps(body).encode("utf-8")
    last_error = ""
    for attempt in range(3):
        req = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = error_envelope(raw.decode("utf-8", "replace"), "server_error", None, None)
            return exc.code, payload
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = str(exc)
            time.sleep(0.2 * (attempt + 1))
    return 500, error_envelope(
        f"Upstream connection error: {last_error}", "server_error", None, "upstream_error"
    )


@dataclass
class UpstreamRun:
    """In-memory progress of one batch being executed against the upstream."""

    total: int
    results: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    stopped: bool = False
    done_at: float | None = None


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


class Emulator:
    """All emulator state; every public method must be called with ``self.lock`` held."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.root = config.state_dir
        self.files_dir = self.root / "files"
        self.batches_dir = self.root / "batches"
        self.tmp_dir = self.root / "tmp"
        for d in (self.files_dir, self.batches_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.active: set[str] = set()
        self.seq = 0
        self.settings: dict[str, Any] = {
            "request_error_rate": config.request_error_rate,
            "http_error_rate": config.http_error_rate,
            "http_error_kinds": list(config.http_error_kinds),
            "validating_seconds": config.validating_seconds,
            "processing_seconds": config.processing_seconds,
            "finalizing_seconds": config.finalizing_seconds,
            "token_limit": config.token_limit,
            "expire": config.expire,
            "fail": config.fail,
            "seed": config.seed,
            "response_delay": {},
            "http_error_routes": [],
        }
        self.rng = random.Random(config.seed)
        self.stats: dict[str, Any] = {
            "files_created": 0,
            "batches_created": 0,
            "requests_processed": 0,
            "http_faults_injected": 0,
            "calls": {},
        }
        self.upstream_runs: dict[str, UpstreamRun] = {}
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        if config.upstream:
            self.executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, config.upstream_concurrency), thread_name_prefix="upstream"
            )
        self._load()

    # ---- persistence -----------------------------------------------------------------

    def _load(self) -> None:
        for path in sorted(self.files_dir.glob("*.json")):
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            self.files[rec["id"]] = rec
            self.seq = max(self.seq, int(rec.get("_seq", 0)))
        for path in sorted(self.batches_dir.glob("batch_*.json")):
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            self.batches[rec["id"]] = rec
            self.seq = max(self.seq, int(rec.get("_seq", 0)))
            if rec["status"] in ACTIVE_STATUSES:
                self.active.add(rec["id"])
        for bid in list(self.active):
            b = self.batches[bid]
            if b.get("_upstream") and b["status"] in ("in_progress", "cancelling"):
                self._resume_upstream(b)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _file_meta_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.json"

    def file_data_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.data"

    def _save_file(self, rec: dict[str, Any]) -> None:
        atomic_write_json(self._file_meta_path(rec["id"]), rec)

    def _save_batch(self, b: dict[str, Any]) -> None:
        atomic_write_json(self.batches_dir / f"{b['id']}.json", b)

    def _requests_path(self, batch_id: str) -> Path:
        return self.batches_dir / f"{batch_id}.requests.jsonl"

    def _results_path(self, batch_id: str) -> Path:
        return self.batches_dir / f"{batch_id}.results.jsonl"

    # ---- stats ---------------------------------------------------------------------

    def count_call(self, key: str) -> None:
        calls = self.stats["calls"]
        calls[key] = calls.get(key, 0) + 1

    def pick_http_fault(self, route: str) -> str | None:
        routes = self.settings["http_error_routes"]
        if routes and route not in routes:
            return None
        rate = float(self.settings["http_error_rate"])
        kinds = list(self.settings["http_error_kinds"]) or DEFAULT_HTTP_FAULT_KINDS
        if rate <= 0 or self.rng.random() >= rate:
            return None
        self.stats["http_faults_injected"] += 1
        return self.rng.choice(kinds)

    def update_settings(self, patch: dict[str, Any]) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in patch.items():
            if key in ("request_error_rate", "http_error_rate"):
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise ApiError(400, f"'{key}' must be a number between 0 and 1.", param=key)
                if not 0 <= value <= 1:
                    raise ApiError(400, f"'{key}' must be a number between 0 and 1.", param=key)
                clean[key] = float(value)
            elif key in ("validating_seconds", "processing_seconds", "finalizing_seconds"):
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ApiError(400, f"'{key}' must be a non-negative number.", param=key)
                clean[key] = float(value)
            elif key == "http_error_kinds":
                if not isinstance(value, list) or not all(v in HTTP_FAULT_KINDS for v in value):
                    raise ApiError(
                        400, f"'http_error_kinds' must be a subset of {list(HTTP_FAULT_KINDS)}."
                    )
                clean[key] = list(value)
            elif key == "token_limit":
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    raise ApiError(400, "'token_limit' must be an integer or null.", param=key)
                clean[key] = value
            elif key == "expire":
                if not isinstance(value, bool):
                    raise ApiError(400, "'expire' must be a boolean.", param=key)
                clean[key] = value
            elif key == "fail":
                if value is not None and not isinstance(value, str):
                    raise ApiError(400, "'fail' must be null or an error code string.", param=key)
                clean[key] = value or None
            elif key == "http_error_routes":
                if not isinstance(value, list) or not all(_is_route(v) for v in value):
                    raise ApiError(
                        400, "'http_error_routes' must list routes like 'POST /v1/batches'."
                    )
                clean[key] = list(value)
            elif key == "response_delay":
                clean[key] = _response_delay(value)
            elif key == "seed":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ApiError(400, "'seed' must be an integer.", param=key)
                clean[key] = value
                self.rng = random.Random(value)
            else:
                raise ApiError(400, f"Unknown fault setting '{key}'.", param=key)
        self.settings.update(clean)
        return dict(self.settings)

    # ---- views ---------------------------------------------------------------------

    def _strip(self, obj: dict[str, Any], keep_null: tuple[str, ...] = ()) -> dict[str, Any]:
        out = {k: v for k, v in obj.items() if not k.startswith("_")}
        if not self.config.explicit_nulls:
            out = {k: v for k, v in out.items() if v is not None or k in keep_null}
        return out

    def file_view(self, rec: dict[str, Any]) -> dict[str, Any]:
        return self._strip(rec)

    def batch_view(self, b: dict[str, Any], now: float) -> dict[str, Any]:
        view = self._strip(b, keep_null=("metadata",))
        if b["status"] in ("in_progress", "cancelling") and b.get("_n") is not None:
            done, ok = self._progress(b, now)
            view["request_counts"] = {"total": b["_n"], "completed": ok, "failed": done - ok}
        return view

    # ---- files ---------------------------------------------------------------------

    def get_file(self, file_id: str, now: float) -> dict[str, Any]:
        rec = self.files.get(file_id)
        if rec is None or (rec.get("expires_at") is not None and rec["expires_at"] <= now):
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return rec

    def add_file(
        self,
        *,
        filename: str,
        purpose: str,
        size: int,
        source: Path | None,
        lines: list[bytes] | None,
        now: float,
        expires_at: int | None,
    ) -> dict[str, Any]:
        file_id = new_id("file-", 22)
        dest = self.file_data_path(file_id)
        if source is not None:
            os.replace(source, dest)
        else:
            size = atomic_write_bytes(dest, lines or [])
        rec: dict[str, Any] = {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": int(now),
            "expires_at": expires_at,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "_seq": self._next_seq(),
        }
        self.files[file_id] = rec
        self._save_file(rec)
        self.stats["files_created"] += 1
        return rec

    def delete_file(self, file_id: str, now: float) -> None:
        self.get_file(file_id, now)
        self.files.pop(file_id, None)
        for path in (self._file_meta_path(file_id), self.file_data_path(file_id)):
            with contextlib.suppress(OSError):
                path.unlink()

    def list_files(
        self, *, purpose: str | None, limit: int, order: str, after: str | None, now: float
    ) -> dict[str, Any]:
        items = [
            f
            for f in self.files.values()
            if (f.get("expires_at") is None or f["expires_at"] > now)
            and (purpose is None or f["purpose"] == purpose)
        ]
        items.sort(key=lambda f: f["_seq"], reverse=(order == "desc"))
        if after is not None:
            ids = [f["id"] for f in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        data = [self.file_view(f) for f in page]
        # first_id/last_id are required *strings* in ListFilesResponse: "" for an empty page.
        empty: str | None = None if self.config.explicit_nulls else ""
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else empty,
            "last_id": data[-1]["id"] if data else empty,
            "has_more": len(items) > limit,
        }

    # ---- batches: create / list / cancel -----------------------------------------------

    def create_batch(self, payload: dict[str, Any], now: float) -> dict[str, Any]:
        settings = self.settings
        batch_id = "batch_" + secrets.token_hex(16)
        created = int(now)
        b: dict[str, Any] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": payload["endpoint"],
            "model": None,
            "errors": None,
            "input_file_id": payload["input_file_id"],
            "completion_window": payload["completion_window"],
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": created,
            "in_progress_at": None,
            "expires_at": created + BATCH_WINDOW_SECONDS,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": None,
            "metadata": payload.get("metadata"),
            "_seq": self._next_seq(),
            "_t": {"created": now},
            # Settings that affect this batch are captured at creation.
            "_settings": {
                "validating_seconds": settings["validating_seconds"],
                "processing_seconds": settings["processing_seconds"],
                "finalizing_seconds": settings["finalizing_seconds"],
                "expire": settings["expire"],
                "fail": settings["fail"],
                "request_error_rate": settings["request_error_rate"],
                "seed": settings["seed"],
            },
            "_output_expires_after": (payload.get("output_expires_after") or {}).get("seconds"),
            "_n": None,
            "_flags": None,
            "_tokens": 0,
            "_k": None,
            "_upstream": False,
        }
        self.batches[batch_id] = b
        self.active.add(batch_id)
        self._save_batch(b)
        self.stats["batches_created"] += 1
        return b

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        b = self.batches.get(batch_id)
        if b is None:
            # UNVERIFIED: exact 404 text.
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return b

    def list_batches(self, *, limit: int, after: str | None, now: float) -> dict[str, Any]:
        # UNVERIFIED: newest first (as reported by users).
        items = sorted(self.batches.values(), key=lambda b: b["_seq"], reverse=True)
        if after is not None:
            ids = [b["id"] for b in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        data = [self.batch_view(b, now) for b in page]
        out: dict[str, Any] = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(items) > limit,
        }
        if not self.config.explicit_nulls:
            out = {k: v for k, v in out.items() if v is not None}
        return out

    def cancel_batch(self, batch_id: str, now: float) -> dict[str, Any]:
        b = self.get_batch(batch_id)
        status = b["status"]
        if status in ("cancelling", "cancelled"):
            return b
        if status not in ("validating", "in_progress", "finalizing"):
            raise ApiError(409, f"Cannot cancel a batch with status '{status}'.")
        if status == "in_progress":
            if b.get("_upstream"):
                run = self.upstream_runs.get(batch_id)
                if run is not None:
                    run.stopped = True
            else:
                b["_k"] = self._progress(b, now)[0]
        elif status == "finalizing":
            b["_k"] = b["_n"]
        else:
            b["_k"] = 0
        b["status"] = "cancelling"
        b["cancelling_at"] = int(now)
        b["_t"]["cancelling"] = now
        self._save_batch(b)
        return b

    # ---- batches: progress ---------------------------------------------------------------

    def _progress(self, b: dict[str, Any], now: float) -> tuple[int, int]:
        """(requests done, requests succeeded) at ``now`` for an in_progress/cancelling batch."""
        n = int(b.get("_n") or 0)
        if b.get("_upstream"):
            run = self.upstream_runs.get(b["id"])
            if run is None:
                return 0, 0
            done = len(run.results)
            ok = sum(1 for status, _ in run.results.values() if 200 <= status < 300)
            return done, ok
        flags: str = b.get("_flags") or ""
        if b.get("_k") is not None:
            k = int(b["_k"])
        else:
            st = b["_settings"]
            # With `expire` set, about half the requests are done when the batch expires.
            target = n // 2 if st["expire"] else n
            ps = float(st["processing_seconds"])
            started = b["_t"].get("in_progress", now)
            if ps <= 0 or now >= started + ps:
                frac = 1.0
            else:
                frac = max(0.0, min(1.0, (now - started) / ps))
            k = min(target, int(math.floor(target * frac)))
        return k, flags[:k].count("s")

    def _next_event(self, b: dict[str, Any]) -> float | None:
        st = b["_settings"]
        t = b["_t"]
        status = b["status"]
        if status == "validating":
            return t["created"] + st["validating_seconds"]
        if status == "in_progress":
            deadline = float(b["expires_at"])
            due = t["in_progress"] + st["processing_seconds"]
            if b.get("_upstream") and not st["expire"]:
                run = self.upstream_runs.get(b["id"])
                if run is None or run.done_at is None:
                    return deadline
                due = max(due, run.done_at)
            return min(due, deadline)
        if status == "finalizing":
            return t["finalizing"] + st["finalizing_seconds"]
        if status == "cancelling":
            # UNVERIFIED: real cancelling lasts up to 10 minutes; here `validating_seconds`.
            return t["cancelling"] + st["validating_seconds"]
        return None

    def advance_all(self, now: float) -> None:
        """Fire every due transition, earliest first, so restarts replay correctly."""
        while True:
            best: tuple[float, str] | None = None
            for bid in self.active:
                ev = self._next_event(self.batches[bid])
                if ev is not None and ev <= now and (best is None or ev < best[0]):
                    best = (ev, bid)
            if best is None:
                return
            ev, bid = best
            self._fire(self.batches[bid], ev)

    def _fire(self, b: dict[str, Any], ev: float) -> None:
        status = b["status"]
        if status == "validating":
            self._validate(b, ev)
        elif status == "in_progress":
            if b["_settings"]["expire"] or ev >= float(b["expires_at"]):
                if not b.get("_upstream"):
                    b["_k"] = self._progress(b, ev)[0]
                self._finish(b, "expired", ev)
            else:
                if not b.get("_upstream"):
                    b["_k"] = b["_n"]
                b["status"] = "finalizing"
                b["finalizing_at"] = int(ev)
                b["_t"]["finalizing"] = ev
                done, ok = self._progress(b, ev)
                b["request_counts"] = {"total": b["_n"], "completed": ok, "failed": done - ok}
                self._save_batch(b)
        elif status == "finalizing":
            self._finish(b, "completed", ev)
        elif status == "cancelling":
            self._finish(b, "cancelled", ev)
        else:  # pragma: no cover - defensive
            self.active.discard(b["id"])

    def _fail_batch(self, b: dict[str, Any], ev: float, errors: list[dict[str, Any]]) -> None:
        b["status"] = "failed"
        b["failed_at"] = int(ev)
        b["errors"] = {"object": "list", "data": errors[:MAX_REPORTED_ERRORS]}
        b["request_counts"] = {"total": 0, "completed": 0, "failed": 0}
        self.active.discard(b["id"])
        with contextlib.suppress(OSError):
            self._requests_path(b["id"]).unlink()
        self._save_batch(b)

    def _validate(self, b: dict[str, Any], ev: float) -> None:
        st = b["_settings"]
        if st["fail"]:
            err = {"code": st["fail"], "line": None, "param": None}
            err["message"] = f"Emulated batch failure: {st['fail']}."
            self._fail_batch(b, ev, [err])
            return
        file_id = b["input_file_id"]
        rec = self.files.get(file_id)
        if rec is None or (rec.get("expires_at") is not None and rec["expires_at"] <= ev):
            msg = (
                f"Cannot find file {file_id}, or organization {ORGANIZATION} "
                "does not have access to it."
            )
            self._fail_batch(
                b,
                ev,
                [{"code": "invalid_request", "line": None, "param": "file_id", "message": msg}],
            )
            return
        if rec["purpose"] != "batch":
            # UNVERIFIED: code/message for an input file with a purpose other than batch.
            msg = "The input file must be uploaded with purpose 'batch'."
            self._fail_batch(
                b,
                ev,
                [{"code": "invalid_request", "line": None, "param": "file_id", "message": msg}],
            )
            return
        if rec["bytes"] > MAX_BATCH_FILE_BYTES:
            # UNVERIFIED: code and message (a third party saw an HTTP 413 at upload instead).
            msg = (
                f"The batch input file is larger than the {MAX_BATCH_FILE_BYTES} maximum "
                f"({rec['bytes']} bytes)."
            )
            self._fail_batch(
                b, ev, [{"code": "file_too_large", "line": None, "param": None, "message": msg}]
            )
            return
        outcome = self._scan_input(b, self.file_data_path(file_id))
        if outcome is None:
            return
        count, flags, tokens, model = outcome
        limit = self.settings["token_limit"]
        if limit is not None:
            enqueued = sum(
                int(o.get("_tokens") or 0)
                for o in self.batches.values()
                if o["id"] != b["id"] and o["status"] in ENQUEUED_STATUSES and o["model"] == model
            )
            if enqueued + tokens > limit:
                # Checked at validating -> in_progress. UNVERIFIED: the real API may instead
                # reject at create time.
                msg = (
                    f"Enqueued token limit reached for {model} in organization {ORGANIZATION}. "
                    f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress "
                    "batches have been completed."
                )
                b["model"] = model
                self._fail_batch(
                    b,
                    ev,
                    [{"code": "token_limit_exceeded", "line": None, "param": None, "message": msg}],
                )
                return
        b.update(
            {
                "status": "in_progress",
                "in_progress_at": int(ev),
                "model": model,
                "request_counts": {"total": count, "completed": 0, "failed": 0},
                "_n": count,
                "_flags": flags,
                "_tokens": tokens,
                "_upstream": bool(self.config.upstream),
            }
        )
        b["_t"]["in_progress"] = ev
        self._save_batch(b)
        if b["_upstream"]:
            self._start_upstream(b)

    def _scan_input(self, b: dict[str, Any], path: Path) -> tuple[int, str, int, str | None] | None:
        """Validate every line; on success store the requests sidecar and return
        (count, success flags, estimated prompt tokens, model).  On failure fail the batch."""
        st = b["_settings"]
        endpoint = b["endpoint"]
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        model: str | None = None
        flags: list[str] = []
        tokens = 0
        count = 0
        sidecar = self._requests_path(b["id"])
        tmp = sidecar.with_name(f".{sidecar.name}.tmp")

        def problem(code: str, line: int | None, param: str | None, message: str) -> None:
            errors.append({"code": code, "line": line, "param": param, "message": message})

        with open(path, "rb") as src, open(tmp, "wb") as out:
            for lineno, raw in enumerate(src, start=1):
                if not raw.strip():
                    continue  # UNVERIFIED: blank lines are skipped.
                count += 1
                try:
                    req = json.loads(raw)
                except ValueError:
                    problem(
                        "invalid_json_line",
                        lineno,
                        None,
                        "This line is not parseable as valid JSON.",
                    )
                    continue
                if not isinstance(req, dict):
                    problem(
                        "invalid_json_line",
                        lineno,
                        None,
                        "This line is not parseable as valid JSON.",
                    )
                    continue
                missing = next(
                    (k for k in ("custom_id", "method", "url", "body") if k not in req), None
                )
                if missing is not None:
                    problem(
                        "missing_required_parameter",
                        lineno,
                        missing,
                        f"Missing required parameter: '{missing}'.",
                    )
                    continue
                custom_id, body = req["custom_id"], req["body"]
                if not isinstance(custom_id, str):
                    problem(
                        "invalid_type",
                        lineno,
                        "custom_id",
                        "Invalid type for 'custom_id': expected a string, but got "
                        f"{type_name(custom_id)} instead.",
                    )
                    continue
                if req["method"] != "POST":
                    # UNVERIFIED: code for a method other than POST.
                    problem("invalid_method", lineno, "method", "Only the POST method is allowed.")
                    continue
                if req["url"] != endpoint:
                    problem(
                        "invalid_url",
                        lineno,
                        "url",
                        "The URL provided for this request does not match the batch endpoint.",
                    )
                    continue
                if not isinstance(body, dict):
                    problem(
                        "invalid_type",
                        lineno,
                        "body",
                        f"Invalid type for 'body': expected an object, but got {type_name(body)}"
                        " instead.",
                    )
                    continue
                if body.get("stream") is True:
                    problem(
                        "streaming_unsupported",
                        lineno,
                        "body.stream",
                        "Chat Completions: Streaming is not supported in the Batch API.",
                    )
                    continue
                if "model" not in body:
                    problem("invalid_request", lineno, "body.model", "Model parameter is required.")
                    continue
                if endpoint == "/v1/chat/completions" and "messages" not in body:
                    problem(
                        "invalid_request",
                        lineno,
                        "body.messages",
                        "Messages parameter is required.",
                    )
                    continue
                if custom_id in seen:
                    # UNVERIFIED: Azure's code/message.
                    problem(
                        "duplicate_custom_id",
                        lineno,
                        "custom_id",
                        "The custom ID for this request is a duplicate of the custom ID in "
                        "another request.",
                    )
                    continue
                seen.add(custom_id)
                if model is None:
                    model = str(body["model"])
                elif body["model"] != model:
                    # UNVERIFIED: code seen in one third-party log; message invented.
                    problem(
                        "mismatched_model",
                        lineno,
                        "body.model",
                        f"The model '{body['model']}' does not match the model '{model}' used by "
                        "other requests in this file. Each input file can only include requests "
                        "to a single model.",
                    )
                    continue
                if endpoint != "/v1/chat/completions":
                    # The emulator only answers chat completions; other endpoints fail per
                    # request (see README of this module).
                    flags.append("f")
                else:
                    failure = request_failure(
                        body,
                        seed=st["seed"],
                        batch_id=b["id"],
                        custom_id=custom_id,
                        error_rate=st["request_error_rate"],
                    )
                    flags.append("f" if failure else "s")
                tokens += estimate_prompt_tokens(body)
                out.write(json.dumps(req, separators=(",", ":")).encode("utf-8") + b"\n")
        if count == 0:
            # UNVERIFIED: Azure's code/message.
            problem(
                "empty_file",
                None,
                None,
                "The input file is empty. Please ensure that the batch contains at least one "
                "request.",
            )
        elif count > MAX_BATCH_REQUESTS:
            # UNVERIFIED: code (Azure uses too_many_tasks).
            problem(
                "too_many_requests",
                None,
                None,
                f"The batch input file contains {count:,} requests; a batch may include up to "
                f"{MAX_BATCH_REQUESTS:,} requests.",
            )
        if errors:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if model is not None:
                b["model"] = model
            self._fail_batch(b, b["_t"]["created"] + st["validating_seconds"], errors)
            return None
        os.replace(tmp, sidecar)
        return count, "".join(flags), tokens, model

    def _iter_requests(self, batch_id: str) -> Iterator[dict[str, Any]]:
        path = self._requests_path(batch_id)
        if not path.exists():
            return
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.strip():
                    yield json.loads(raw)

    def _answer(self, b: dict[str, Any], index: int, req: dict[str, Any]) -> tuple[int, Any]:
        """Deterministic (non-upstream) answer to request ``index`` of batch ``b``."""
        st = b["_settings"]
        body = req["body"]
        if b["endpoint"] != "/v1/chat/completions":
            return 400, error_envelope(
                f"The emulator only implements /v1/chat/completions, not {b['endpoint']}.",
                "invalid_request_error",
                None,
                "unsupported_endpoint",
            )
        failure = request_failure(
            body,
            seed=st["seed"],
            batch_id=b["id"],
            custom_id=req["custom_id"],
            error_rate=st["request_error_rate"],
        )
        n = max(1, int(b["_n"] or 1))
        created = int(b["_t"]["in_progress"] + st["processing_seconds"] * index / n)
        return simulate_chat_completion(body, created=created, failure=failure)

    def _finish(self, b: dict[str, Any], status: str, ev: float) -> None:
        """Write output/error files and move ``b`` to a terminal status."""
        bid = b["id"]
        n = int(b.get("_n") or 0)
        out_lines: list[bytes] = []
        err_lines: list[bytes] = []
        completed = failed = 0
        input_tokens = output_tokens = 0
        run = self.upstream_runs.get(bid)
        if run is not None:
            run.stopped = True
        k = int(b["_k"]) if b.get("_k") is not None else n
        for index, req in enumerate(self._iter_requests(bid)):
            custom_id = req["custom_id"]
            line_id = "batch_req_" + sha256_hex("line", bid, custom_id)[:32]
            if b.get("_upstream"):
                result = run.results.get(custom_id) if run is not None else None
            else:
                result = self._answer(b, index, req) if index < k else None
            if result is None:
                if status == "expired":
                    error = {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion "
                        "window expired.",
                    }
                else:
                    # UNVERIFIED: other implementations use batch_cancelled.
                    error = {
                        "code": "batch_cancelled",
                        "message": "This request was not executed because the batch was cancelled.",
                    }
                line = {"id": line_id, "custom_id": custom_id, "response": None, "error": error}
                # UNVERIFIED: unexecuted (expired/cancelled) requests count as failed.
                failed += 1
                err_lines.append(_jsonl(line))
                continue
            status_code, body = result
            line = {
                "id": line_id,
                "custom_id": custom_id,
                "response": {
                    "status_code": status_code,
                    "request_id": "req_" + sha256_hex("request", bid, custom_id)[:32],
                    "body": body,
                },
                "error": None,
            }
            if 200 <= status_code < 300:
                completed += 1
                usage = body.get("usage") if isinstance(body, dict) else None
                if isinstance(usage, dict):
                    input_tokens += int(usage.get("prompt_tokens", 0) or 0)
                    output_tokens += int(usage.get("completion_tokens", 0) or 0)
                out_lines.append(_jsonl(line))
            else:
                failed += 1
                err_lines.append(_jsonl(line))
            self.stats["requests_processed"] += 0 if b.get("_upstream") else 1
        shuffler = random.Random(sha256_hex("shuffle", bid))
        shuffler.shuffle(out_lines)
        shuffler.shuffle(err_lines)
        ttl = b.get("_output_expires_after") or BATCH_FILE_TTL
        for lines, kind, key in (
            (out_lines, "output", "output_file_id"),
            (err_lines, "error", "error_file_id"),
        ):
            if lines:
                rec = self.add_file(
                    filename=f"{bid}_{kind}.jsonl",  # UNVERIFIED filename
                    purpose="batch_output",
                    size=0,
                    source=None,
                    lines=lines,
                    now=ev,
                    expires_at=int(ev) + int(ttl),
                )
                b[key] = rec["id"]
        b["status"] = status
        b[f"{status}_at"] = int(ev)
        b["request_counts"] = {"total": n, "completed": completed, "failed": failed}
        b["usage"] = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        b["_flags"] = None
        self.active.discard(bid)
        self.upstream_runs.pop(bid, None)
        self._save_batch(b)
        for path in (self._requests_path(bid), self._results_path(bid)):
            with contextlib.suppress(OSError):
                path.unlink()

    # ---- upstream ------------------------------------------------------------------------

    def _start_upstream(self, b: dict[str, Any]) -> None:
        run = UpstreamRun(total=int(b["_n"]))
        self.upstream_runs[b["id"]] = run
        self._submit_upstream(b, run)

    def _resume_upstream(self, b: dict[str, Any]) -> None:
        run = UpstreamRun(total=int(b["_n"] or 0))
        path = self._results_path(b["id"])
        if path.exists():
            with open(path, "rb") as fh:
                for raw in fh:
                    with contextlib.suppress(ValueError, KeyError):
                        item = json.loads(raw)
                        run.results[item["custom_id"]] = (int(item["status"]), item["body"])
        self.upstream_runs[b["id"]] = run
        if b["status"] == "in_progress":
            self._submit_upstream(b, run)
        else:
            run.stopped = True

    def _submit_upstream(self, b: dict[str, Any], run: UpstreamRun) -> None:
        assert self.executor is not None
        pending = [r for r in self._iter_requests(b["id"]) if r["custom_id"] not in run.results]
        if not pending:
            run.done_at = time.time()
            return
        for req in pending:
            self.executor.submit(self._upstream_task, b["id"], run, req)

    def _upstream_task(self, batch_id: str, run: UpstreamRun, req: dict[str, Any]) -> None:
        if run.stopped:
            return
        upstream = self.config.upstream or ""
        status, body = post_upstream(upstream, self.config.upstream_api_key, req["body"])
        with self.lock:
            if run.stopped and self.upstream_runs.get(batch_id) is not run:
                return
            b = self.batches.get(batch_id)
            if b is None or b["status"] not in ("in_progress", "cancelling"):
                return
            run.results[req["custom_id"]] = (status, body)
            self.stats["requests_processed"] += 1
            item = {"custom_id": req["custom_id"], "status": status, "body": body}
            with open(self._results_path(batch_id), "ab") as fh:
                fh.write(_jsonl(item))
            if len(run.results) >= run.total and run.done_at is None:
                run.done_at = time.time()


def _jsonl(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


# --------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    body: Any = None  # dict -> JSON; bytes -> raw; open binary file -> streamed
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Route = tuple[str, re.Pattern[str], str, Callable[..., Response]]


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected an integer, but got a string instead.",
            param=name,
            code="invalid_type",
        ) from None
    if value < low:
        raise ApiError(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, but "
            f"got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if value > high:
        raise ApiError(
            400,
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, but "
            f"got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def _str_param(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorServer
    server_version = "openai-emulator/1.0"
    # Headers and body go out in separate writes; without this, Nagle and delayed ACKs add
    # ~40 ms to every call.
    disable_nagle_algorithm = True

    # ---- plumbing ------------------------------------------------------------------------

    @property
    def emu(self) -> Emulator:
        return self.server.emulator

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.emu.config.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _iter_body(self, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """Yield the request body (Content-Length or chunked transfer encoding)."""
        self._body_consumed = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537).strip():
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(chunk_size, remaining))
                    if not data:
                        raise ConnectionError("client closed connection mid-body")
                    remaining -= len(data)
                    yield data
                self.rfile.readline(65537)
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(chunk_size, remaining))
            if not data:
                raise ConnectionError("client closed connection mid-body")
            remaining -= len(data)
            yield data

    def _read_body(self) -> bytes:
        return b"".join(self._iter_body())

    def _read_json(self) -> dict[str, Any]:
        raw = self._read_body()
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON.)",
            ) from None
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return payload

    def _drain(self) -> None:
        if getattr(self, "_body_consumed", False):
            return
        length = int(self.headers.get("Content-Length") or 0)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked or length <= 16 * 1024 * 1024:
            for _ in self._iter_body():
                pass
        else:
            self.close_connection = True

    def _send(self, resp: Response) -> None:
        self._drain()
        if isinstance(resp.body, io.BufferedIOBase):
            fh = resp.body
            try:
                size = os.fstat(fh.fileno()).st_size
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(size))
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                shutil.copyfileobj(fh, self.wfile, 1 << 16)
            finally:
                fh.close()
            return
        if isinstance(resp.body, bytes):
            data = resp.body
        else:
            data = json.dumps(resp.body, ensure_ascii=False).encode("utf-8")
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: ApiError) -> None:
        self._send(Response(err.status, err.body(), headers=err.headers))

    # ---- dispatch ------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._body_consumed = False
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query)
        try:
            if path.startswith("/_emulator/"):
                self._send(self._admin(method, path))
                return
            if path != "/v1" and not path.startswith("/v1/"):
                raise ApiError(404, f"Invalid URL ({method} {parts.path})")
            handler, params, template = self._match(method, path)
            with self.emu.lock:
                self.emu.count_call(f"{method} {template}")
                fault = self.emu.pick_http_fault(f"{method} {template}")
            if fault == "drop":
                self._drain()
                self.close_connection = True
                return
            if fault == "429":
                raise ApiError(
                    429,
                    "Rate limit reached for requests (emulated fault). Please try again later.",
                    type_="requests",
                    code="rate_limit_exceeded",
                    headers={"retry-after": "0.2", "retry-after-ms": "200"},
                )
            if fault == "500":
                raise ApiError(
                    500,
                    "The server had an error while processing your request. Sorry about that!",
                    type_="server_error",
                )
            self._check_auth()
            if handler is None:
                raise ApiError(404, f"Invalid URL ({method} {parts.path})")
            resp = handler(query=query, **params)
            with self.emu.lock:
                delay = float(self.emu.settings["response_delay"].get(f"{method} {template}", 0))
            if delay > 0:
                time.sleep(delay)  # the call has taken effect; only the answer is late
            if fault == "drop_after":
                self._drain()
                self.close_connection = True
                return
            self._send(resp)
        except ApiError as err:
            self._send_error(err)
        except (ConnectionError, BrokenPipeError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            with contextlib.suppress(Exception):
                self._send_error(
                    ApiError(500, f"Emulator internal error: {exc}", type_="server_error")
                )

    def _routes(self) -> list[Route]:
        return [
            ("POST", re.compile(r"/v1/files"), "/v1/files", self.h_create_file),
            ("GET", re.compile(r"/v1/files"), "/v1/files", self.h_list_files),
            ("GET", re.compile(r"/v1/files/(?P<file_id>[^/]+)"), "/v1/files/{id}", self.h_get_file),
            (
                "DELETE",
                re.compile(r"/v1/files/(?P<file_id>[^/]+)"),
                "/v1/files/{id}",
                self.h_delete_file,
            ),
            (
                "GET",
                re.compile(r"/v1/files/(?P<file_id>[^/]+)/content"),
                "/v1/files/{id}/content",
                self.h_file_content,
            ),
            ("POST", re.compile(r"/v1/batches"), "/v1/batches", self.h_create_batch),
            ("GET", re.compile(r"/v1/batches"), "/v1/batches", self.h_list_batches),
            (
                "GET",
                re.compile(r"/v1/batches/(?P<batch_id>[^/]+)"),
                "/v1/batches/{id}",
                self.h_get_batch,
            ),
            (
                "POST",
                re.compile(r"/v1/batches/(?P<batch_id>[^/]+)/cancel"),
                "/v1/batches/{id}/cancel",
                self.h_cancel_batch,
            ),
            (
                "POST",
                re.compile(r"/v1/chat/completions"),
                "/v1/chat/completions",
                self.h_chat_completions,
            ),
        ]

    def _match(
        self, method: str, path: str
    ) -> tuple[Callable[..., Response] | None, dict[str, str], str]:
        for route_method, pattern, template, handler in self._routes():
            m = pattern.fullmatch(path)
            if m and route_method == method:
                return handler, m.groupdict(), template
        return None, {}, path

    def _check_auth(self) -> None:
        header = self.headers.get("Authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        expected = self.emu.config.api_key
        if not key:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        if expected is not None and key != expected:
            raise ApiError(
                401, f"Incorrect API key provided: {mask_key(key)}.", code="invalid_api_key"
            )

    # ---- admin ---------------------------------------------------------------------------

    def _admin(self, method: str, path: str) -> Response:
        emu = self.emu
        if path == "/_emulator/faults" and method == "GET":
            with emu.lock:
                return Response(200, dict(emu.settings))
        if path == "/_emulator/faults" and method == "POST":
            patch = self._read_json()
            with emu.lock:
                return Response(200, emu.update_settings(patch))
        if path == "/_emulator/stats" and method == "GET":
            with emu.lock:
                return Response(200, json.loads(json.dumps(emu.stats)))
        if path == "/_emulator/reset_stats" and method == "POST":
            with emu.lock:
                emu.stats["calls"] = {}
                return Response(200, json.loads(json.dumps(emu.stats)))
        if path == "/_emulator/health" and method == "GET":
            return Response(200, {"status": "ok"})
        raise ApiError(404, f"Invalid URL ({method} {path})")

    # ---- files ---------------------------------------------------------------------------

    def h_create_file(self, query: dict[str, list[str]]) -> Response:
        emu = self.emu
        ctype, params = parse_options_header(self.headers.get("Content-Type", ""))
        if ctype != b"multipart/form-data" or b"boundary" not in params:
            raise ApiError(400, "Invalid Content-Type header: expected multipart/form-data.")
        fields: dict[str, str] = {}
        uploads: list[Any] = []

        def on_field(f: Any) -> None:
            name = (f.field_name or b"").decode("utf-8", "replace")
            fields[name] = (f.value or b"").decode("utf-8", "replace")

        def on_file(f: Any) -> None:
            uploads.append(f)

        parser = python_multipart.FormParser(
            "multipart/form-data",
            on_field,
            on_file,
            boundary=params[b"boundary"],
            config={
                "UPLOAD_DIR": str(emu.tmp_dir),
                "UPLOAD_DELETE_TMP": False,
                "MAX_MEMORY_FILE_SIZE": 1 << 20,
            },
        )
        staged = emu.tmp_dir / f"upload-{secrets.token_hex(8)}"
        try:
            try:
                for chunk in self._iter_body():
                    parser.write(chunk)
                parser.finalize()
            except python_multipart.exceptions.FormParserError as exc:
                raise ApiError(400, f"Could not parse multipart form: {exc}") from None
            upload = next((u for u in uploads if u.field_name == b"file"), None)
            purpose = fields.get("purpose")
            if upload is None:
                raise ApiError(
                    400,
                    "Missing required parameter: 'file'.",
                    param="file",
                    code="missing_required_parameter",
                )
            if purpose is None:
                raise ApiError(
                    400,
                    "Missing required parameter: 'purpose'.",
                    param="purpose",
                    code="missing_required_parameter",
                )
            if purpose not in UPLOAD_PURPOSES:
                allowed = ", ".join(f"'{p}'" for p in UPLOAD_PURPOSES)
                raise ApiError(
                    400,
                    f"Invalid value: '{purpose}'. Supported values are: {allowed}.",
                    param="purpose",
                    code="invalid_value",
                )
            filename = os.path.basename((upload.file_name or b"upload").decode("utf-8", "replace"))
            if purpose == "batch" and not filename.endswith(".jsonl"):
                raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl")
            expires_seconds = self._expires_after(fields)
            # Move the upload (already streamed to disk when large) to a staging path.
            if upload.in_memory:
                upload.file_object.seek(0)
                with open(staged, "wb") as fh:
                    shutil.copyfileobj(upload.file_object, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            else:
                upload.file_object.flush()
                os.fsync(upload.file_object.fileno())
                upload.file_object.close()
                os.replace(os.fsdecode(upload.actual_file_name), staged)
            now = time.time()
            if expires_seconds is not None:
                expires_at: int | None = int(now) + expires_seconds
            elif purpose == "batch":
                expires_at = int(now) + BATCH_FILE_TTL
            else:
                expires_at = None
            with emu.lock:
                rec = emu.add_file(
                    filename=filename,
                    purpose=purpose,
                    size=int(upload.size),
                    source=staged,
                    lines=None,
                    now=now,
                    expires_at=expires_at,
                )
                return Response(200, emu.file_view(rec))
        finally:
            for u in uploads:
                with contextlib.suppress(Exception):
                    u.file_object.close()
                name = getattr(u, "actual_file_name", None)
                if name:
                    with contextlib.suppress(OSError):
                        os.unlink(os.fsdecode(name))
            with contextlib.suppress(OSError):
                staged.unlink()

    @staticmethod
    def _expires_after(fields: dict[str, str]) -> int | None:
        anchor = fields.get("expires_after[anchor]")
        seconds = fields.get("expires_after[seconds]")
        if anchor is None and seconds is None:
            return None
        if anchor != "created_at":
            raise ApiError(
                400,
                f"Invalid value: '{anchor}'. Supported values are: 'created_at'.",
                param="expires_after.anchor",
                code="invalid_value",
            )
        try:
            value = int(seconds or "")
        except ValueError:
            raise ApiError(
                400,
                "Invalid type for 'expires_after.seconds': expected an integer.",
                param="expires_after.seconds",
                code="invalid_type",
            ) from None
        if not 3600 <= value <= 2_592_000:
            raise ApiError(
                400,
                "Invalid 'expires_after.seconds': expected a value between 3600 and 2592000, "
                f"but got {value} instead.",
                param="expires_after.seconds",
                code="invalid_value",
            )
        return value

    def h_list_files(self, query: dict[str, list[str]]) -> Response:
        limit = _int_param(query, "limit", 10_000, 1, 10_000)
        order = _str_param(query, "order") or "desc"
        if order not in ("asc", "desc"):
            raise ApiError(
                400,
                f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                param="order",
                code="invalid_value",
            )
        with self.emu.lock:
            self.emu.advance_all(time.time())
            return Response(
                200,
                self.emu.list_files(
                    purpose=_str_param(query, "purpose"),
                    limit=limit,
                    order=order,
                    after=_str_param(query, "after"),
                    now=time.time(),
                ),
            )

    def h_get_file(self, query: dict[str, list[str]], file_id: str) -> Response:
        with self.emu.lock:
            self.emu.advance_all(time.time())
            return Response(200, self.emu.file_view(self.emu.get_file(file_id, time.time())))

    def h_delete_file(self, query: dict[str, list[str]], file_id: str) -> Response:
        with self.emu.lock:
            self.emu.delete_file(file_id, time.time())
        return Response(200, {"id": file_id, "object": "file", "deleted": True})

    def h_file_content(self, query: dict[str, list[str]], file_id: str) -> Response:
        with self.emu.lock:
            self.emu.advance_all(time.time())
            self.emu.get_file(file_id, time.time())
            path = self.emu.file_data_path(file_id)
            # Open under the lock so a concurrent delete cannot pull the file away.
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        # UNVERIFIED: the real Content-Type; raw bytes as application/octet-stream.
        return Response(200, fh, content_type="application/octet-stream")

    # ---- batches -------------------------------------------------------------------------

    def h_create_batch(self, query: dict[str, list[str]]) -> Response:
        payload = self._read_json()
        input_file_id = payload.get("input_file_id")
        if input_file_id is None:
            raise ApiError(
                400,
                "Missing required parameter: 'input_file_id'.",
                param="input_file_id",
                code="missing_required_parameter",
            )
        if not isinstance(input_file_id, str):
            raise ApiError(
                400,
                "Invalid type for 'input_file_id': expected a string, but got "
                f"{type_name(input_file_id)} instead.",
                param="input_file_id",
                code="invalid_type",
            )
        endpoint = payload.get("endpoint")
        if endpoint not in BATCH_ENDPOINTS:
            supported = ", ".join(f"'{e}'" for e in BATCH_ENDPOINTS)
            raise ApiError(
                400,
                f"Invalid value: '{endpoint}'. Supported values are: {supported}.",
                param="endpoint",
                code="invalid_value",
            )
        window = payload.get("completion_window")
        if window != "24h":
            raise ApiError(
                400,
                f"Invalid value: '{window}'. Supported values are: '24h'.",
                param="completion_window",
                code="invalid_value",
            )
        _validate_metadata(payload.get("metadata"))
        _validate_output_expires_after(payload.get("output_expires_after"))
        with self.emu.lock:
            now = time.time()
            self.emu.advance_all(now)
            b = self.emu.create_batch(payload, now)
            return Response(200, self.emu.batch_view(b, now))

    def h_list_batches(self, query: dict[str, list[str]]) -> Response:
        limit = _int_param(query, "limit", 20, 1, 100)
        with self.emu.lock:
            now = time.time()
            self.emu.advance_all(now)
            return Response(
                200, self.emu.list_batches(limit=limit, after=_str_param(query, "after"), now=now)
            )

    def h_get_batch(self, query: dict[str, list[str]], batch_id: str) -> Response:
        with self.emu.lock:
            now = time.time()
            self.emu.advance_all(now)
            return Response(200, self.emu.batch_view(self.emu.get_batch(batch_id), now))

    def h_cancel_batch(self, query: dict[str, list[str]], batch_id: str) -> Response:
        self._read_body()
        with self.emu.lock:
            now = time.time()
            self.emu.advance_all(now)
            b = self.emu.cancel_batch(batch_id, now)
            return Response(200, self.emu.batch_view(b, now))

    # ---- chat completions ----------------------------------------------------------------

    def h_chat_completions(self, query: dict[str, list[str]]) -> Response:
        body = self._read_json()
        emu = self.emu
        if emu.config.upstream:
            status, payload = post_upstream(emu.config.upstream, emu.config.upstream_api_key, body)
            return Response(status, payload)
        if "model" not in body:
            raise ApiError(400, "you must provide a model parameter")
        if "messages" not in body:
            raise ApiError(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if body.get("stream") is True:
            raise ApiError(400, "The emulator does not support streaming.", param="stream")
        texts, _, _ = _message_texts(body.get("messages"))
        failure = next((m.group(1) for t in texts if (m := MARKER_RE.search(t))), None)
        status, payload = simulate_chat_completion(body, created=int(time.time()), failure=failure)
        with emu.lock:
            emu.stats["requests_processed"] += 1
        return Response(status, payload)


def _is_route(value: Any) -> bool:
    """A route as stats count it: ``"POST /v1/batches"``, ``"GET /v1/batches/{id}"``."""
    method, _, path = str(value).partition(" ")
    return isinstance(value, str) and method in ("GET", "POST", "DELETE") and path.startswith("/v1")


def _response_delay(value: Any) -> dict[str, float]:
    """Validate the ``response_delay`` setting: ``{"METHOD /v1/route": seconds >= 0}``."""
    message = "'response_delay' must map routes such as 'POST /v1/batches' to seconds >= 0."
    if not isinstance(value, dict):
        raise ApiError(400, message, param="response_delay")
    clean: dict[str, float] = {}
    for route, seconds in value.items():
        if not _is_route(route):
            raise ApiError(400, message, param="response_delay")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ApiError(400, message, param="response_delay")
        clean[route] = float(seconds)
    return clean


def _validate_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise ApiError(
            400,
            f"Invalid type for 'metadata': expected an object, but got {type_name(metadata)} "
            "instead.",
            param="metadata",
            code="invalid_type",
        )
    # UNVERIFIED: exact codes/messages for the size limits (OpenAI's usual wording).
    if len(metadata) > 16:
        raise ApiError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise ApiError(
                400,
                "Invalid 'metadata': string too long. Expected a key with maximum length 64, "
                f"but got a key with length {len(key)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(value, str):
            raise ApiError(
                400,
                f"Invalid type for 'metadata.{key}': expected a string, but got "
                f"{'an' if type_name(value)[0] in 'aeiou' else 'a'} {type_name(value)} instead.",
                param=f"metadata.{key}",
                code="invalid_type",
            )
        if len(value) > 512:
            raise ApiError(
                400,
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(value)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )


def _validate_output_expires_after(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ApiError(
            400,
            "Invalid type for 'output_expires_after': expected an object, but got "
            f"{type_name(value)} instead.",
            param="output_expires_after",
            code="invalid_type",
        )
    if value.get("anchor") != "created_at":
        raise ApiError(
            400,
            f"Invalid value: '{value.get('anchor')}'. Supported values are: 'created_at'.",
            param="output_expires_after.anchor",
            code="invalid_value",
        )
    seconds = value.get("seconds")
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not 3600 <= seconds <= 2_592_000
    ):
        raise ApiError(
            400,
            "Invalid 'output_expires_after.seconds': expected an integer between 3600 and "
            f"2592000, but got {seconds!r} instead.",
            param="output_expires_after.seconds",
            code="invalid_value",
        )


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description="Local emulator of the OpenAI Files + Batches API.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--api-key", default=None, help="only accept this bearer key")
    p.add_argument("--validating-seconds", type=float, default=0.1)
    p.add_argument("--processing-seconds", type=float, default=1.0)
    p.add_argument("--finalizing-seconds", type=float, default=0.1)
    p.add_argument("--token-limit", type=int, default=None, help="enqueued tokens per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--request-error-rate", type=float, default=0.0)
    p.add_argument("--http-error-rate", type=float, default=0.0)
    p.add_argument(
        "--http-error-kinds",
        default=",".join(DEFAULT_HTTP_FAULT_KINDS),
        help=f"comma-separated subset of {','.join(HTTP_FAULT_KINDS)}",
    )
    p.add_argument("--upstream", default=None, help="OpenAI-compatible base URL (…/v1)")
    p.add_argument("--upstream-api-key", default=os.environ.get("UPSTREAM_API_KEY", "emulator"))
    p.add_argument("--upstream-concurrency", type=int, default=4)
    p.add_argument("--expire", action="store_true", help="new batches expire")
    p.add_argument("--fail", default=None, metavar="CODE", help="new batches fail with CODE")
    p.add_argument(
        "--explicit-nulls",
        action="store_true",
        help="send null optional fields like the real API (not valid against the spec schema)",
    )
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.http_error_kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in HTTP_FAULT_KINDS]
    if bad:
        p.error(f"unknown --http-error-kinds: {bad}")
    for name in ("validating_seconds", "processing_seconds", "finalizing_seconds"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    return Config(
        host=a.host,
        port=a.port,
        state_dir=a.state_dir,
        api_key=a.api_key,
        validating_seconds=a.validating_seconds,
        processing_seconds=a.processing_seconds,
        finalizing_seconds=a.finalizing_seconds,
        token_limit=a.token_limit,
        seed=a.seed,
        request_error_rate=a.request_error_rate,
        http_error_rate=a.http_error_rate,
        http_error_kinds=kinds,
        upstream=a.upstream,
        upstream_api_key=a.upstream_api_key,
        upstream_concurrency=a.upstream_concurrency,
        expire=a.expire,
        fail=a.fail,
        explicit_nulls=a.explicit_nulls,
        verbose=a.verbose,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    emulator = Emulator(config)
    server = EmulatorServer((config.host, config.port), Handler)
    server.emulator = emulator
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ticker() -> None:
        while not stop.wait(0.05):
            try:
                with emulator.lock:
                    emulator.advance_all(time.time())
            except Exception:  # noqa: BLE001 - keep ticking
                traceback.print_exc(file=sys.stderr)

    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
    ).start()
    threading.Thread(target=ticker, name="ticker", daemon=True).start()
    host = config.host if config.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    print(f"http://{host}:{server.server_address[1]}/v1", flush=True)
    while not stop.wait(0.2):
        pass
    server.shutdown()
    server.server_close()
    if emulator.executor is not None:
        emulator.executor.shutdown(wait=False, cancel_futures=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
