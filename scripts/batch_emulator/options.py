"""The command line: every option of ``scripts/emulator.py``, checked, as one Options value."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from .faults import DEFAULT_HTTP_FAULT_KINDS, HTTP_FAULT_KINDS, LISTING_STATUSES
from .upstream import KEY_VARIABLE

VARIANCES = {
    "no_file_listing": "GET /v1/files answers --listing-status (a server without file listing)",
    "no_batch_listing": "GET /v1/batches answers --listing-status (no batch listing)",
    "drop_metadata": "batches are stored and returned without their metadata",
    "bare_error_lines": "request failures written as {response: null, error: {type: "
    "request_failed, message: 'Error code: N - ...'}}, without status or code",
    "never_end": "new batches stay in_progress forever",
    "no_output_on_cancel": "a cancelled batch gets no output or error file",
    "relative_results_url": "Anthropic's results_url is a path (/v1/messages/batches/{id}/"
    "results) to resolve against the base URL",
    "no_results_url": "Anthropic's results_url stays null once a batch ended",
}


@dataclass
class Options:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    allow_hosts: list[str] = field(default_factory=list)  # more Host names to answer ("*": any)
    api_key: str | None = None
    admin_token: str | None = None
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
    listing_status: int = 405
    variances: dict[str, bool] = field(default_factory=dict)
    explicit_nulls: bool = False
    read_timeout: float = 30.0
    verbose: bool = False
    live: dict[str, Any] = field(default_factory=dict)  # live_seconds, rpm_limit, ... (faults.py)

    def settings(self) -> dict[str, Any]:
        """The initial fault settings (``POST /_emulator/faults`` changes them later)."""
        return {
            "request_error_rate": self.request_error_rate,
            "http_error_rate": self.http_error_rate,
            "http_error_kinds": list(self.http_error_kinds),
            "validating_seconds": self.validating_seconds,
            "processing_seconds": self.processing_seconds,
            "finalizing_seconds": self.finalizing_seconds,
            "token_limit": self.token_limit,
            "expire": self.expire,
            "fail": self.fail,
            "seed": self.seed,
            "listing_status": self.listing_status,
            **self.variances,
            **self.live,
        }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line: what is wrong (argparse's default adds a usage block)."""
        print(f"emulator.py: {message}", file=sys.stderr)
        sys.exit(2)


LIVE_SECONDS = ("live_seconds", "flex_seconds")
LIVE_SETTINGS = (*LIVE_SECONDS, "flex_unavailable_rate", "rpm_limit", "tpm_limit")


def _parser() -> _Parser:
    p = _Parser(description="Local emulator of the OpenAI Files + Batches API.")
    p.add_argument("--host", default="127.0.0.1", help="the address to serve on")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header names NAME (repeatable; * for any); "
        "by default only --host, localhost, 127.0.0.1 and [::1]",
    )
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--api-key", default=None, help="only accept this bearer key")
    p.add_argument("--admin-token", default=None, help="bearer for /_emulator/* (default: the key)")
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
    p.add_argument("--upstream-api-key", default=None, help=f"refused: set {KEY_VARIABLE} instead")
    p.add_argument("--upstream-concurrency", type=int, default=4)
    p.add_argument(
        "--allow-open-relay",
        action="store_true",
        help="allow --upstream without --api-key (anyone who can connect uses the upstream)",
    )
    p.add_argument("--expire", action="store_true", help="new batches expire")
    p.add_argument("--fail", default=None, metavar="CODE", help="new batches fail with CODE")
    for name, text in VARIANCES.items():
        p.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=text)
    p.add_argument(
        "--listing-status",
        type=int,
        default=405,
        choices=LISTING_STATUSES,
        help="the status of a refused listing (default 405)",
    )
    p.add_argument(
        "--explicit-nulls",
        action="store_true",
        help="send null optional fields like the real API (not valid against the spec schema)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=30.0,
        help="seconds a client may stay silent while sending a request (default 30)",
    )
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    # The synchronous endpoints: latency, per-minute limits per model, and the flex tier.
    p.add_argument("--live-seconds", type=float, default=0.0, help="each live model call")
    p.add_argument("--flex-seconds", type=float, default=0.0, help="more for a flex call")
    p.add_argument("--flex-unavailable-rate", type=float, default=0.0, help="flex 429 share")
    p.add_argument("--rpm-limit", type=int, default=None, help="requests per minute per model")
    p.add_argument("--tpm-limit", type=int, default=None, help="tokens per minute per model")
    return p


def is_loopback(host: str) -> bool:
    """Whether an address to serve on is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or "" (every address)


def parse_args(argv: list[str] | None = None) -> Options:
    p = _parser()
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.http_error_kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in HTTP_FAULT_KINDS]
    if bad:
        p.error(f"unknown --http-error-kinds: {bad}; choose from {list(HTTP_FAULT_KINDS)}")
    for name in ("validating_seconds", "processing_seconds", "finalizing_seconds", *LIVE_SECONDS):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("request_error_rate", "http_error_rate", "flex_unavailable_rate"):
        if not 0 <= getattr(a, name) <= 1:
            p.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    for name in ("rpm_limit", "tpm_limit"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.read_timeout <= 0:
        p.error("--read-timeout must be > 0")
    if a.upstream_api_key is not None:
        p.error(
            f"--upstream-api-key would show the key in the process list; set {KEY_VARIABLE} "
            "in the environment instead"
        )
    if not is_loopback(a.host) and not a.api_key:
        p.error(
            f"--host {a.host} serves the network, and without --api-key anyone there could use "
            "the emulator and its admin endpoint; set --api-key KEY (or serve on 127.0.0.1)"
        )
    if a.upstream and not a.api_key and not a.allow_open_relay:
        p.error(
            "--upstream without --api-key would forward anyone's calls with the upstream key; "
            "set --api-key KEY, or pass --allow-open-relay if that is what you want"
        )
    return Options(
        state_dir=a.state_dir,
        host=a.host,
        port=a.port,
        allow_hosts=[h.strip().lower() for h in a.allow_host if h.strip()],
        api_key=a.api_key,
        admin_token=a.admin_token,
        validating_seconds=a.validating_seconds,
        processing_seconds=a.processing_seconds,
        finalizing_seconds=a.finalizing_seconds,
        token_limit=a.token_limit,
        seed=a.seed,
        request_error_rate=a.request_error_rate,
        http_error_rate=a.http_error_rate,
        http_error_kinds=kinds,
        upstream=a.upstream,
        upstream_api_key=os.environ.get(KEY_VARIABLE, "emulator"),
        upstream_concurrency=a.upstream_concurrency,
        expire=a.expire,
        fail=a.fail,
        listing_status=a.listing_status,
        variances={name: bool(getattr(a, name)) for name in VARIANCES},
        explicit_nulls=a.explicit_nulls,
        read_timeout=a.read_timeout,
        verbose=a.verbose,
        live={name: getattr(a, name) for name in LIVE_SETTINGS},
    )
