"""The errors of the Anthropic and Gemini APIs, each rendering its own provider's envelope.

Anthropic (docs/api-facts-anthropic.md "Errors"): ``{"type": "error", "error": {"type",
"message"}, "request_id"}``, the type named by the HTTP status. Gemini
(docs/api-facts-gemini.md "Errors"): google.rpc.Status in JSON, ``{"error": {"code",
"message", "status"}}``. The model raises these; the wire renders them.
"""

from __future__ import annotations

from typing import Any

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ProviderError(Exception):
    """An HTTP error of one provider's API: its status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        raise NotImplementedError


class AnthropicError(ProviderError):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.type = type_ or ANTHROPIC_TYPES.get(status, "invalid_request_error")

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        return anthropic_envelope(self.type, self.message, request_id)


def anthropic_envelope(type_: str, message: str, request_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "error": {"type": type_, "message": message}}
    if request_id is not None:
        out["request_id"] = request_id
    return out


class GoogleError(ProviderError):
    def __init__(
        self,
        status: int,
        message: str,
        rpc_status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.rpc_status = rpc_status or GOOGLE_STATUSES.get(status, "UNKNOWN")
        self.details = details

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.status,
            "message": self.message,
            "status": self.rpc_status,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}
