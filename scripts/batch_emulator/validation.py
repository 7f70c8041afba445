"""Request validation: a create-batch body (answered at once with a 400), and a batch's input
file line by line (a failed batch with ``errors.data``), as docs/api-facts.md "Validation
failures" records them. Codes marked UNVERIFIED there are marked so here too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import answers, embeddings, facts
from .exceptions import ApiError, InvalidType, InvalidValue, MissingParameter, type_name

REQUIRED_LINE_KEYS = ("custom_id", "method", "url", "body")


def create_batch_payload(payload: dict[str, Any]) -> None:
    """ApiError (400) for what the API refuses synchronously; the rest fails validation."""
    input_file_id = payload.get("input_file_id")
    if input_file_id is None:
        raise MissingParameter("input_file_id")
    if not isinstance(input_file_id, str):
        raise InvalidType("input_file_id", "a string", input_file_id)
    endpoint = payload.get("endpoint")
    if endpoint not in facts.BATCH_ENDPOINTS:
        raise InvalidValue("endpoint", endpoint, facts.BATCH_ENDPOINTS)
    window = payload.get("completion_window")
    if window != "24h":
        raise InvalidValue("completion_window", window, ("24h",))
    metadata(payload.get("metadata"))
    expires_after(payload.get("output_expires_after"), "output_expires_after")


def metadata(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidType("metadata", "an object", value)
    # UNVERIFIED: exact codes/messages for the size limits (OpenAI's usual wording).
    if len(value) > facts.METADATA_MAX_PAIRS:
        raise ApiError(
            400,
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{facts.METADATA_MAX_PAIRS} properties, but got an object with {len(value)} "
            "properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > facts.METADATA_MAX_KEY:
            raise ApiError(
                400,
                f"Invalid 'metadata': string too long. Expected a key with maximum length "
                f"{facts.METADATA_MAX_KEY}, but got a key with length {len(key)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(item, str):
            raise InvalidType(f"metadata.{key}", "a string", item)
        if len(item) > facts.METADATA_MAX_VALUE:
            raise ApiError(
                400,
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length {facts.METADATA_MAX_VALUE}, but got a string with length {len(item)} "
                "instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )


def expires_after(value: Any, name: str) -> int | None:
    """The seconds of an ``{anchor: "created_at", seconds}`` object, or ApiError."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidType(name, "an object", value)
    if value.get("anchor") != "created_at":
        raise InvalidValue(f"{name}.anchor", value.get("anchor"), ("created_at",))
    seconds = value.get("seconds")
    low, high = facts.EXPIRES_AFTER_RANGE
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not low <= seconds <= high:
        raise ApiError(
            400,
            f"Invalid '{name}.seconds': expected an integer between {low} and {high}, but got "
            f"{seconds!r} instead.",
            param=f"{name}.seconds",
            code="invalid_value",
        )
    return seconds


@dataclass
class Scan:
    """What validating an input file found."""

    count: int = 0
    model: str | None = None
    tokens: int = 0
    flags: list[str] = field(default_factory=list)  # "s"/"f": does request i succeed
    errors: list[dict[str, Any]] = field(default_factory=list)
    embedding_inputs: int = 0

    def problem(self, code: str, line: int | None, param: str | None, message: str) -> None:
        self.errors.append({"code": code, "line": line, "param": param, "message": message})


def _line_problem(req: Any, endpoint: str) -> tuple[str, str | None, str] | None:
    """(code, param, message) for a line the batch refuses, before uniqueness and models."""
    if not isinstance(req, dict):
        return "invalid_json_line", None, "This line is not parseable as valid JSON."
    missing = next((k for k in REQUIRED_LINE_KEYS if k not in req), None)
    if missing is not None:
        return "missing_required_parameter", missing, f"Missing required parameter: '{missing}'."
    custom_id, body = req["custom_id"], req["body"]
    if not isinstance(custom_id, str):
        got = type_name(custom_id)
        message = f"Invalid type for 'custom_id': expected a string, but got {got} instead."
        return "invalid_type", "custom_id", message
    if req["method"] != "POST":
        # UNVERIFIED: code for a method other than POST.
        return "invalid_method", "method", "Only the POST method is allowed."
    if req["url"] != endpoint:
        message = "The URL provided for this request does not match the batch endpoint."
        return "invalid_url", "url", message
    if not isinstance(body, dict):
        message = f"Invalid type for 'body': expected an object, but got {type_name(body)} instead."
        return "invalid_type", "body", message
    if body.get("stream") is True:
        message = "Chat Completions: Streaming is not supported in the Batch API."
        return "streaming_unsupported", "body.stream", message
    if "model" not in body:
        return "invalid_request", "body.model", "Model parameter is required."
    if endpoint == "/v1/chat/completions" and "messages" not in body:
        return "invalid_request", "body.messages", "Messages parameter is required."
    # UNVERIFIED: message; the spec makes `input` required for embeddings.
    if endpoint == "/v1/embeddings" and "input" not in body:
        return "invalid_request", "body.input", "Input parameter is required."
    return None


def scan_input(
    src: BinaryIO,
    endpoint: str,
    out_path: Path,
    predict: Callable[[dict[str, Any]], bool],
) -> Scan:
    """Validate every line of ``src``; write the valid requests to ``out_path``.

    ``predict(request)`` says whether a valid request will succeed (the progress counts show
    it before the batch ends).
    """
    scan = Scan()
    seen: set[str] = set()
    with open(out_path, "wb") as out:
        for lineno, raw in enumerate(src, start=1):
            if not raw.strip():
                continue  # UNVERIFIED: blank lines are skipped.
            scan.count += 1
            try:
                req = json.loads(raw)
            except ValueError:
                req = None
            found = _line_problem(req, endpoint)
            if found is not None:
                scan.problem(found[0], lineno, found[1], found[2])
                continue
            assert isinstance(req, dict)
            custom_id, body = req["custom_id"], req["body"]
            if custom_id in seen:
                # UNVERIFIED: Azure's code/message.
                scan.problem(
                    "duplicate_custom_id",
                    lineno,
                    "custom_id",
                    "The custom ID for this request is a duplicate of the custom ID in "
                    "another request.",
                )
                continue
            seen.add(custom_id)
            if scan.model is None:
                scan.model = str(body["model"])
            elif body["model"] != scan.model:
                # UNVERIFIED: code seen in one third-party log; message invented.
                scan.problem(
                    "mismatched_model",
                    lineno,
                    "body.model",
                    f"The model '{body['model']}' does not match the model '{scan.model}' used "
                    "by other requests in this file. Each input file can only include requests "
                    "to a single model.",
                )
                continue
            if endpoint == "/v1/embeddings":
                scan.embedding_inputs += embeddings.count_inputs(body)
            scan.flags.append("s" if predict(req) else "f")
            scan.tokens += answers.prompt_tokens(endpoint, body)
            out.write(json.dumps(req, separators=(",", ":")).encode("utf-8") + b"\n")
    _file_limits(scan)
    return scan


def _file_limits(scan: Scan) -> None:
    if scan.count == 0:
        # UNVERIFIED: Azure's code/message.
        scan.problem(
            "empty_file",
            None,
            None,
            "The input file is empty. Please ensure that the batch contains at least one request.",
        )
    elif scan.count > facts.MAX_BATCH_REQUESTS:
        # UNVERIFIED: code (Azure uses too_many_tasks).
        scan.problem(
            "too_many_requests",
            None,
            None,
            f"The batch input file contains {scan.count:,} requests; a batch may include up to "
            f"{facts.MAX_BATCH_REQUESTS:,} requests.",
        )
    if scan.embedding_inputs > facts.MAX_EMBEDDING_INPUTS:
        # UNVERIFIED: code and message; the limit is the spec's.
        scan.problem(
            "too_many_embedding_inputs",
            None,
            None,
            f"The batch holds {scan.embedding_inputs:,} embedding inputs; /v1/embeddings batches "
            f"may hold at most {facts.MAX_EMBEDDING_INPUTS:,} embedding inputs across all "
            "requests.",
        )
