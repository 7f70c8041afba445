"""The API's errors: each knows its HTTP status and renders OpenAI's error envelope.

docs/api-facts.md "Error envelope": ``{"error": {"message", "type", "param", "code"}}``, all four
always present.
"""

from __future__ import annotations

from typing import Any


def error_envelope(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


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


class MissingParameter(ApiError):
    def __init__(self, param: str) -> None:
        super().__init__(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )


class InvalidValue(ApiError):
    def __init__(self, param: str, value: Any, supported: tuple[str, ...] | list[str]) -> None:
        allowed = ", ".join(f"'{s}'" for s in supported)
        super().__init__(
            400,
            f"Invalid value: '{value}'. Supported values are: {allowed}.",
            param=param,
            code="invalid_value",
        )


class InvalidType(ApiError):
    def __init__(self, param: str, expected: str, value: Any) -> None:
        got = type_name(value)
        article = "an" if got[0] in "aeiou" else "a"
        super().__init__(
            400,
            f"Invalid type for '{param}': expected {expected}, but got {article} {got} instead.",
            param=param,
            code="invalid_type",
        )


class NotFound(ApiError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(404, message, param=param)


class InvalidUrl(ApiError):
    def __init__(self, method: str, path: str) -> None:
        super().__init__(404, f"Invalid URL ({method} {path})")


class BodyTooLarge(ApiError):
    """413, and the connection is closed: the rest of the body is never read."""

    def __init__(self, limit: int) -> None:
        # UNVERIFIED: OpenAI's text for an oversize request body; 413 as observed for a file.
        super().__init__(
            413,
            f"Request body too large: this endpoint accepts at most {limit:,} bytes.",
            code="request_too_large",
            headers={"connection": "close"},
        )


class BadJson(ApiError):
    def __init__(self) -> None:
        super().__init__(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        )


class Unauthorized(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, message, code="invalid_api_key")


def type_name(value: Any) -> str:
    """The JSON type of ``value``, as OpenAI's messages name it."""
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
