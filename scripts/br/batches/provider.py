"""The seam between the engine and a provider's Batch API: one narrow interface, and its types.

The engine (engine.py), exactly-once (submission.py, ledger.py, machine.py) and the polling
schedule (polling.py) are written once, above this seam, in these words only. A provider
(openai.py is the first) does what is its own below it:

- `shape` a request line, and say its batch `limits`;
- submit: `upload` a chunk's requests, then `create` its batch, labelled (`Label`) so that a
  rerun can recognise it (OpenAI: metadata, which `label_fields` gives for the ledger; a
  provider without labels gives None back in `Batch.key`: its recovery rests on the ledger);
- find an earlier submission: `uploads` and `pages` list the account newest first, for the
  walk back to an unanswered upload or create (submission.py decides what matches);
- poll: `retrieve` one batch, or read a page of the list (`pages`);
- read an ended batch's result lines as the common row (`result_rows`, `results_kept`);
- show the account (`make status`, `make check`) in the provider's own JSON: `listing`,
  `describe`;
- `cancel` a batch; tidy: `delete_file` (a batch's files are in `Batch`); `download` an input
  file back (an earlier batch's requests, when its chunk file is gone).

What the provider answers is named here, not in its SDK's words: `NotFound`, `Refused`,
`Unlistable`, and `trouble()` for an error worth retrying (busy, or unclear whether it went
through). Any other error (a rejected key, say) goes up to `br.cli.run` untouched, which
words the SDK's errors.

Statuses are the common vocabulary below (OpenAI's words; another provider maps onto them).
The common row, one per request: {outcome: succeeded | failed, response, error: {code,
message, status} | None, retryable, usage} (plus cut_short when it stopped at its cap).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from br.cli import UserError

# Batch statuses: those that still hold enqueued tokens, and the ends.
IN_FLIGHT = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
GONE = frozenset({"failed", "cancelled", "cancelling", "expired"})  # cannot hold a chunk's rows
TOKEN_LIMIT = "token_limit_exceeded"  # a batch refused for the account's enqueued tokens
UNKNOWN = "unknown_error"  # a failed request of unknown cause: retried at most once


# UserErrors, so one the caller does not expect still ends the run with one line.
class NotFound(UserError):
    """The server has no such batch or file (another server or account, or deleted)."""


class Refused(UserError):
    """The server refused the call and made nothing (a create it rejects, a cancel too late)."""


class Unlistable(UserError):
    """The server does not offer this listing (the batch list, or the file list)."""


@dataclass(frozen=True)
class Trouble:
    """An error worth trying again: `unclear` when the call may have gone through (a dropped
    connection, a 5xx), else the server was busy and made nothing (a 429)."""

    unclear: bool
    retry_after: float | None = None


@dataclass(frozen=True)
class Counts:
    total: int = 0
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Problem:
    """Why a batch failed as a whole (validation, the enqueued-token limit)."""

    code: str
    message: str
    line: int | None = None


@dataclass(frozen=True)
class Batch:
    """A batch as the engine sees it. `key` is the (chunk sha256, attempt) its label says."""

    id: str
    status: str
    created_at: float
    expires_at: float | None = None
    in_progress_at: float | None = None
    request_counts: Counts | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    key: tuple[str, int] | None = None
    problems: tuple[Problem, ...] = ()

    @property
    def left_results(self) -> bool:
        return bool(self.output_file_id or self.error_file_id)

    @property
    def files(self) -> list[str]:
        """Its files on the server: input, output, errors (what `make tidy` deletes)."""
        return [f for f in (self.input_file_id, self.output_file_id, self.error_file_id) if f]


@dataclass(frozen=True)
class Upload:
    id: str
    filename: str
    bytes: int
    created_at: float
    usable: bool = True


@dataclass(frozen=True)
class Label:
    """What a batch carries so a rerun (or another machine) recognises it as ours."""

    step: str
    sha: str
    attempt: int
    model: str
    tokens: int
    chunk: str


@dataclass(frozen=True)
class Limits:
    max_requests: int
    max_file_bytes: int
    max_embedding_inputs: int

    def check(self, max_requests: int, max_bytes: int) -> None:
        """MAX_REQUESTS and MAX_BYTES within what this provider takes in one batch: one line."""
        if not 1 <= max_requests <= self.max_requests:
            raise UserError(f"MAX_REQUESTS must be 1 to {self.max_requests}, not {max_requests}")
        if not 1 <= max_bytes <= self.max_file_bytes:
            raise UserError(
                f"MAX_BYTES must be 1 to {self.max_file_bytes} (the most this provider takes in "
                f"one batch), not {max_bytes}"
            )


def local_bytes(file_id: str) -> tuple[Path, bytes]:
    """The bytes of a chunk sent from here rather than uploaded (Anthropic's, Gemini's inline),
    named by its 'file id' `<path>#<sha256>`, checked to be the bytes it was made with."""
    path, _, sha = file_id.rpartition("#")
    try:
        data = Path(path).read_bytes()
    except OSError:
        data = b""
    if hashlib.sha256(data).hexdigest() != sha:
        raise UserError(f"{path} changed or is gone since it was prepared; rerun make")
    return Path(path), data


class SDKClient:
    """A provider's SDK client, made on first use from the config (so a rerun with nothing to
    do needs no key), and `bare`, the same client without the SDK's retries, for the calls that
    pay (uploads and creates: submission.once decides when to try again). A subclass says how
    its client is made (`make_client`), and `sdk` names the SDK's module."""

    sdk = "openai"

    def __init__(self, config: Any = None, client: Any = None) -> None:
        self.config, self._client, self._bare = config, client, None

    def make_client(self) -> Any:
        raise NotImplementedError

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.make_client()
        return self._client

    @property
    def bare(self) -> Any:
        if self._bare is None:
            self._bare = self.client.with_options(max_retries=0)
        return self._bare

    @property
    def where(self) -> str:
        return str(self.client.base_url)

    def cancelled(self, cancel: Callable[[Any], Any]) -> Any:
        """`cancel(client)`'s answer; a refusal (400, 409: the batch ended meanwhile) is final,
        Refused after one call: the SDK would retry a 409 five times, for seconds. Only trouble
        (`trouble`) is tried again, with the SDK's retries."""
        sdk = importlib.import_module(self.sdk)
        try:
            try:
                return cancel(self.bare)
            except Exception as e:
                if self.trouble(e) is None:
                    raise
            return cancel(self.client)
        except (sdk.BadRequestError, sdk.ConflictError) as e:
            raise Refused(e.message) from e

    def trouble(self, error: Exception) -> Trouble | None:
        """A 429 (nothing was made), or a dropped connection or a 5xx (unclear): the SDK's own
        exception classes, which the openai and anthropic SDKs name alike."""
        sdk = importlib.import_module(self.sdk)
        if isinstance(error, sdk.RateLimitError):
            return Trouble(unclear=False, retry_after=retry_after(error))
        if isinstance(error, (sdk.APIConnectionError, sdk.InternalServerError)):
            return Trouble(unclear=True, retry_after=retry_after(error))
        return None


def retry_after(e: Exception) -> float | None:
    """The seconds an error's `retry-after` header asks for (at most a minute), if any."""
    response = getattr(e, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None


class Provider(Protocol):
    where: str  # the API's base URL: the machine-wide state (machine.py) is kept per URL
    limits: Limits

    def shape(self, request: dict[str, Any]) -> dict[str, Any]: ...
    def upload(self, path: Path, filename: str) -> str: ...
    def create(self, file_id: str, endpoint: str, label: Label) -> Batch: ...
    def label_fields(self, label: Label) -> dict[str, str]: ...
    def uploads(self) -> Iterator[Upload]: ...
    def pages(self, size: int = 100) -> Iterator[list[Batch]]: ...
    def retrieve(self, batch_id: str) -> Batch: ...
    def result_rows(self, batch: Batch) -> Iterator[tuple[str | None, dict[str, Any]]]: ...
    def results_kept(self, batch: Batch) -> bool: ...
    def cancel(self, batch_id: str) -> Batch: ...
    def delete_file(self, file_id: str) -> None: ...
    def download(self, file_id: str) -> bytes: ...
    def describe(self, batch_id: str, nones: bool = True) -> dict[str, Any]: ...
    def listing(self, limit: int) -> Iterator[dict[str, Any]]: ...
    def trouble(self, error: Exception) -> Trouble | None: ...


def failed(code: str, message: str, status: int | None, retryable: bool) -> dict[str, Any]:
    """The common row of a request that failed."""
    return {
        "outcome": "failed",
        "response": None,
        "error": {"code": str(code), "message": message, "status": status},
        "retryable": retryable,
        "usage": None,
    }


def collect(
    provider: Provider, batch: Batch, wanted: set[str], attempt: int, tried: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """custom_id -> result row for the requests of `wanted` that this ended batch holds.

    A request the batch has no line for failed retryably (`no_result`); one of unknown cause
    (`tried` says how often it already failed so) is retried once, then final. A success
    beats any other line for the same request.
    """
    rows: dict[str, dict[str, Any]] = {}
    for cid, row in provider.result_rows(batch):
        if cid in wanted and (cid not in rows or rows[cid]["outcome"] != "succeeded"):
            rows[cid] = {**row, "batch_id": batch.id, "attempts": attempt + 1}
    for cid in wanted - rows.keys():
        message = f"batch {batch.id} ended {batch.status} without a line for this request"
        rows[cid] = {**failed("no_result", message, None, True), "batch_id": batch.id}
        rows[cid]["attempts"] = attempt + 1
    for cid, row in rows.items():
        if row["error"] and row["error"]["code"] == UNKNOWN and tried.get(cid, 0) >= 1:
            row["retryable"] = False
    return rows
