"""Faults and server variances: the settings tests change at run time, and the decisions
drawn from them (which HTTP call fails, which request in a batch fails).

Settings start from the command line and change through ``POST /_emulator/faults``. Those
that shape a batch (timings, ``expire``, ``fail``, ``request_error_rate``, ``seed``,
``never_end``, ``bare_error_lines``) are captured into it when it is created.
"""

from __future__ import annotations

import random
import re
from typing import Any

from .exceptions import ApiError
from .store import sha256_hex

HTTP_FAULT_KINDS = ("429", "500", "drop", "drop_after")
DEFAULT_HTTP_FAULT_KINDS = ["429", "500", "drop"]
LISTING_STATUSES = (404, 405, 501)
MARKER_RE = re.compile(r"EMULATOR_ERROR:([A-Za-z0-9_.-]+)")
BATCH_SETTINGS = (
    "validating_seconds",
    "processing_seconds",
    "finalizing_seconds",
    "expire",
    "fail",
    "request_error_rate",
    "seed",
    "never_end",
    "bare_error_lines",
)
# live_seconds / flex_seconds: how long a synchronous model call takes (a flex one: both);
# flex_unavailable_rate: a share of flex calls answered 429 "Resource Unavailable";
# rpm_limit / tpm_limit: requests and tokens per minute per model (ratelimits.py), over a
# rolling rate_window_seconds (60; shorter for tests).
SECONDS = (
    "validating_seconds",
    "processing_seconds",
    "finalizing_seconds",
    "live_seconds",
    "flex_seconds",
    "rate_window_seconds",
)
RATES = ("request_error_rate", "http_error_rate", "flex_unavailable_rate")
PER_MINUTE = ("rpm_limit", "tpm_limit")
# Server variances (docs/api-facts.md "Servers that vary"): on/off switches.
SWITCHES = (
    "expire",
    "no_file_listing",
    "no_batch_listing",
    "drop_metadata",
    "bare_error_lines",
    "never_end",
    "no_output_on_cancel",
    "relative_results_url",
    "no_results_url",
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_route(value: Any) -> bool:
    """A route as stats count it: ``"POST /v1/batches"``, ``"GET /v1/batches/{id}"``."""
    if not isinstance(value, str):
        return False
    method, _, path = value.partition(" ")
    # Gemini's routes are named by template: "GET /{version}/batches/{id}", "POST /upload/...".
    prefixes = ("/v1", "/{version}/", "/upload/{version}/", "/download/{version}/")
    return method in ("GET", "POST", "DELETE") and path.startswith(prefixes)


def _response_delay(value: Any) -> dict[str, float]:
    message = "'response_delay' must map routes such as 'POST /v1/batches' to seconds >= 0."
    if not isinstance(value, dict) or not all(
        is_route(route) and _number(seconds) and seconds >= 0 for route, seconds in value.items()
    ):
        raise ApiError(400, message, param="response_delay")
    return {route: float(seconds) for route, seconds in value.items()}


def _clean(key: str, value: Any) -> Any:
    """The validated value of one setting, or ApiError naming what is wrong."""
    if key in RATES:
        if not _number(value) or not 0 <= value <= 1:
            raise ApiError(400, f"'{key}' must be a number between 0 and 1.", param=key)
        return float(value)
    if key in SECONDS:
        if not _number(value) or value < 0:
            raise ApiError(400, f"'{key}' must be a non-negative number.", param=key)
        return float(value)
    if key in SWITCHES:
        if not isinstance(value, bool):
            raise ApiError(400, f"'{key}' must be a boolean.", param=key)
        return value
    if key == "http_error_kinds":
        if not isinstance(value, list) or not all(v in HTTP_FAULT_KINDS for v in value):
            raise ApiError(400, f"'http_error_kinds' must be a subset of {list(HTTP_FAULT_KINDS)}.")
        return list(value)
    if key == "listing_status":
        if value not in LISTING_STATUSES or isinstance(value, bool):
            raise ApiError(400, f"'listing_status' must be one of {list(LISTING_STATUSES)}.")
        return value
    if key == "token_limit" or key in PER_MINUTE:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ApiError(400, "'token_limit' must be an integer or null.", param=key)
        return value
    if key == "fail":
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "'fail' must be null or an error code string.", param=key)
        return value or None
    if key == "http_error_routes":
        if not isinstance(value, list) or not all(is_route(v) for v in value):
            raise ApiError(400, "'http_error_routes' must list routes like 'POST /v1/batches'.")
        return list(value)
    if key == "response_delay":
        return _response_delay(value)
    if key == "seed":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ApiError(400, "'seed' must be an integer.", param=key)
        return value
    raise ApiError(400, f"Unknown fault setting '{key}'.", param=key)


class Faults:
    """The current settings and the random draws made from them."""

    def __init__(self, initial: dict[str, Any]) -> None:
        self.settings: dict[str, Any] = {
            "request_error_rate": 0.0,
            "http_error_rate": 0.0,
            "http_error_kinds": list(DEFAULT_HTTP_FAULT_KINDS),
            "validating_seconds": 0.1,
            "processing_seconds": 1.0,
            "finalizing_seconds": 0.1,
            "token_limit": None,
            "fail": None,
            "seed": 0,
            "response_delay": {},
            "http_error_routes": [],
            "listing_status": 405,
            "live_seconds": 0.0,
            "flex_seconds": 0.0,
            "flex_unavailable_rate": 0.0,
            "rpm_limit": None,
            "rate_window_seconds": 60.0,
            "tpm_limit": None,
            **dict.fromkeys(SWITCHES, False),
        }
        self.update(initial)
        self.injected = 0

    def update(self, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge ``patch`` (all or nothing) and return the settings now in force."""
        clean = {key: _clean(key, value) for key, value in patch.items()}
        self.settings.update(clean)
        if "seed" in clean or not hasattr(self, "rng"):
            self.rng = random.Random(self.settings["seed"])
        return dict(self.settings)

    def for_batch(self) -> dict[str, Any]:
        """The settings a new batch keeps for its whole life."""
        return {key: self.settings[key] for key in BATCH_SETTINGS}

    def http_fault(self, route: str) -> str | None:
        """Which fault, if any, to inject into this call (``"429"``, ``"drop"``, ...)."""
        routes = self.settings["http_error_routes"]
        if routes and route not in routes:
            return None
        rate = float(self.settings["http_error_rate"])
        if rate <= 0 or self.rng.random() >= rate:
            return None
        self.injected += 1
        return self.rng.choice(list(self.settings["http_error_kinds"]) or DEFAULT_HTTP_FAULT_KINDS)

    def listing_refused(self, what: str) -> ApiError | None:
        """The answer of a server without ``GET /v1/files`` or ``GET /v1/batches``."""
        if not self.settings[f"no_{what}_listing"]:
            return None
        status = int(self.settings["listing_status"])
        return ApiError(
            status,
            f"Listing {what}s is not supported by this server (emulated variance).",
            code="unsupported_endpoint",
        )


def marker_failure(texts: list[str]) -> str | None:
    """The code of an ``EMULATOR_ERROR:<code>`` marker in any text, for tests."""
    for text in texts:
        match = MARKER_RE.search(text)
        if match:
            return match.group(1)
    return None


def random_failure(settings: dict[str, Any], batch_id: str, custom_id: str) -> str | None:
    """A share ``request_error_rate`` of requests fail with 500 or 429, decided by
    hash(seed, batch, custom_id) so that a retry inside a NEW batch can succeed."""
    rate = float(settings["request_error_rate"])
    if rate <= 0:
        return None
    digest = sha256_hex("request-error", settings["seed"], batch_id, custom_id)
    if int(digest[:12], 16) / float(16**12) < rate:
        return "500" if int(digest[12], 16) % 2 == 0 else "429"
    return None
