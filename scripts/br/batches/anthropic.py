"""Anthropic's Message Batches behind the provider seam (provider.py), through the official
`anthropic` SDK. Facts from ../shared/reference/anthropic-message-batches/FACTS.md (section in
brackets); the lines themselves (shape, custom_id, results) are anthropic_lines.py's.

- No files: the requests travel inline in the create [§2]. `upload` is local: the "file id"
  is the chunk's path and sha256, and `create` reads that file back (refusing one whose bytes
  changed). `make tidy` has nothing to delete.
- Statuses [§4.1] map onto the common words: `in_progress` -> in_progress, `canceling` ->
  cancelling, `ended` -> completed, or cancelled when a cancel was initiated (its results are
  partial). Expiry is per request (`expired` lines, sent again), never a batch status.
- No batch metadata [§3.1]: a batch cannot carry our label. A create that got no answer is
  found by `holds`: a batch made since, with as many requests, whose results (readable once it
  ends [§4.1]) hold exactly our chunk's custom_ids, which name each request's hash
  (anthropic_lines.py). submission.py waits for such a candidate to end rather than create a
  second batch meanwhile. A run with no record at all (build/ and the machine state deleted,
  or another machine) reads the list once for such a batch before creating (recall.py): an
  ended one is adopted when its results hold exactly the chunk's custom_ids; a running one of
  the same size that this machine did not make stops the run with one line.
- Keys as the SDK reads them [§1.1]: ANTHROPIC_API_KEY (environment, then .env), and
  ANTHROPIC_BASE_URL, else the base_url: meant for the step (Config.base_url), with the same
  warning as OpenAI's when it is not Anthropic's host. Creates go out without the SDK's
  retries: submission.once decides.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

from br import cli
from br.batches import anthropic_lines
from br.batches.client import load_env
from br.batches.provider import (
    Batch,
    Counts,
    Label,
    Limits,
    NotFound,
    Refused,
    SDKClient,
    Unlistable,
    Upload,
    local_bytes,
)
from br.cli import UserError, note
from br.config import Config
from br.limits import MAX_EMBEDDING_INPUTS
from br.records import iter_jsonl

MAX_REQUESTS = 100_000  # requests per batch [§3.2]
MAX_BATCH_BYTES = 256_000_000  # "256 MB" per batch [§3.2] (MB read as 10^6 bytes: the safer)
HOST = "api.anthropic.com"
KEY = "ANTHROPIC_API_KEY"
STATUS = {"in_progress": "in_progress", "canceling": "cancelling", "ended": "completed"}


def make_client(config: Config | None, max_retries: int = 5) -> Any:
    """The Anthropic client: the key from ANTHROPIC_API_KEY (environment, then .env), the base
    URL from ANTHROPIC_BASE_URL, else the config's base_url:."""
    import anthropic

    from_environment = bool(os.environ.get(KEY))
    dotenv = load_env()
    key = os.environ.get(KEY)
    cli.KEY_NAME = KEY
    cli.KEY_SOURCE, cli.KEY_FILE = ("environment", None) if from_environment else (".env", dotenv)
    if not key:
        raise UserError(
            f"{KEY} is not set: export {KEY}=sk-ant-... (or put it in .env) for provider: anthropic"
        )
    base_url = os.environ.get("ANTHROPIC_BASE_URL") or (config.data if config else {}).get(
        "base_url"
    )
    host = urlparse(str(base_url)).hostname
    if base_url and not os.environ.get("ANTHROPIC_BASE_URL") and host != HOST:
        note(
            f"warning: {config.path if config else 'the config'} sets base_url: your API key is "
            f"sent to {host}, not {HOST}; remove base_url: unless you trust that host"
        )
    return anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=max_retries)


def local_id(path: Path, sha: str) -> str:
    """The 'file id' of a chunk kept locally: its path and the sha256 of its bytes."""
    return f"{path.resolve()}#{sha}"


class Anthropic(SDKClient):
    """The Provider of Anthropic's Message Batches (and of servers that speak it)."""

    name = "anthropic"  # as `provider:` names it
    sdk = "anthropic"
    limits = Limits(MAX_REQUESTS, MAX_BATCH_BYTES, MAX_EMBEDDING_INPUTS)
    reshapes = True  # chunk lines are Anthropic's, not the pipeline's
    keeps_files = False  # nothing on the server for make tidy to delete
    labels = False  # no metadata: a lost create is found by its results (`holds`)
    recall = 29 * 86400  # results are kept 29 days [§4.1]: an earlier run's batch (recall.py)

    def __init__(self, config: Any = None, client: Any = None) -> None:
        super().__init__(config, client)
        # For recall (holds): the chunk last asked about with its custom_ids, read once for
        # all its candidates; and each ended batch's first result custom_id, read once a run.
        self.asked: tuple[str, set[Any]] = ("", set())
        self.firsts: dict[str, Any] = {}

    def make_client(self) -> Any:
        return make_client(self.config)

    def shape(self, request: dict[str, Any]) -> dict[str, Any]:
        return anthropic_lines.shape(request)

    def upload(self, path: Path, filename: str) -> str:
        return local_id(path, hashlib.sha256(path.read_bytes()).hexdigest())

    def requests(self, file_id: str) -> list[dict[str, Any]]:
        """The lines of a chunk kept locally (`upload`), checked to be the bytes uploaded."""
        return list(iter_jsonl(local_bytes(file_id)[0]))

    def label_fields(self, label: Label) -> dict[str, str]:
        return {}  # nothing is sent: Message Batches have no metadata

    def create(self, file_id: str, endpoint: str, label: Label) -> Batch:
        import anthropic

        requests = self.requests(file_id)
        try:
            made = self.bare.messages.batches.create(requests=requests)
        except (anthropic.BadRequestError, anthropic.RequestTooLargeError) as e:
            raise Refused(e.message) from e
        # The label is not on the server; the batch just made is this identity's.
        return batch_of(made, key=(label.sha, label.attempt))

    def holds(self, batch: Batch, file_id: str | None) -> bool | None:
        """Is this batch the one a create of `file_id` made? None: cannot tell until it ends."""
        if not file_id:
            return False
        if self.asked[0] != file_id:  # every candidate is asked about one chunk in turn
            self.asked = (file_id, {r.get("custom_id") for r in self.requests(file_id)})
        ids = self.asked[1]
        if batch.request_counts is None or batch.request_counts.total != len(ids):
            return False
        if batch.status not in ("completed", "cancelled"):
            return None
        # A stranger of the chunk's size is a candidate for every chunk: its first result
        # line, read once a run, tells the other chunks it is not theirs without a call.
        firsts = self.firsts
        if batch.id in firsts and firsts[batch.id] not in ids:
            return False
        found = set()
        with contextlib.closing(self.result_rows(batch)) as rows:
            for cid, _ in rows:
                firsts.setdefault(batch.id, cid)
                if cid not in ids:
                    return False  # another job's: read no further
                found.add(cid)
        return found == ids

    def uploads(self) -> Iterator[Upload]:
        raise Unlistable("Message Batches keep no files")

    def pages(self, size: int = 100) -> Iterator[list[Batch]]:
        for page in self.client.messages.batches.list(limit=size).iter_pages():
            yield [batch_of(b) for b in page.data]

    def retrieve(self, batch_id: str) -> Batch:
        with not_found():
            return batch_of(self.client.messages.batches.retrieve(batch_id))

    def results_url(self, batch: Batch) -> str:
        """Where an ended batch's results are [§5.1]: its results_url resolved as a URL
        reference against the base URL (a server may give a path), else, when a server gives
        none, the documented route. One on another host than the base URL is not followed:
        the key goes only where base_url says (the documented route there serves them)."""
        base = str(self.client.base_url).rstrip("/") + "/"
        route = urljoin(base, f"v1/messages/batches/{batch.id}/results")
        found = urljoin(base, batch.output_file_id) if batch.output_file_id else route
        return found if urlparse(found).netloc == urlparse(base).netloc else route

    def result_rows(self, batch: Batch) -> Iterator[tuple[str | None, dict[str, Any]]]:
        """The result lines, fetched through the client from results_url (the SDK's own
        `results()` asks for the batch again and gives up when a server leaves results_url
        null; under a base URL with a path it would append an absolute path to it)."""
        from anthropic._decoders.jsonl import JSONLDecoder  # what the SDK's results() returns
        from anthropic.types.messages import MessageBatchIndividualResponse

        with not_found():
            lines = self.client.get(
                self.results_url(batch),
                cast_to=JSONLDecoder[MessageBatchIndividualResponse],
                options={"headers": {"Accept": "application/binary"}},
                stream=True,
            )
            try:
                for line in lines:
                    data = line.to_dict()
                    yield data.get("custom_id"), anthropic_lines.outcome(data.get("result") or {})
            finally:
                lines.close()  # read no further than asked (holds stops at a stranger's line)

    def results_kept(self, batch: Batch) -> bool:
        """Results are kept 29 days after the batch was made [§4.1]. Taken as kept: a results
        route that then answers 404 makes the chunk's results lost (ended.lost)."""
        return True

    def cancel(self, batch_id: str) -> Batch:
        return batch_of(self.cancelled(lambda client: client.messages.batches.cancel(batch_id)))

    def delete_file(self, file_id: str) -> None:
        return None  # no files (keeps_files)

    def download(self, file_id: str) -> bytes:
        raise UserError(
            "an earlier Anthropic batch's chunk file is gone, and Message Batches cannot give "
            "its requests back; rerun with the chunk file restored, or RESEND=1"
        )

    def describe(self, batch_id: str, nones: bool = True) -> dict[str, Any]:
        with not_found():
            batch = self.client.messages.batches.retrieve(batch_id)
        return dict(batch.model_dump(mode="json", exclude_none=not nones))

    def listing(self, limit: int) -> Iterator[dict[str, Any]]:
        pages = self.client.messages.batches.list(limit=min(limit, 100))
        for batch in itertools.islice(pages, limit):
            yield batch.model_dump(mode="json")


def batch_of(b: Any, key: tuple[str, int] | None = None) -> Batch:
    """The common Batch of a MessageBatch [§4]."""
    counts = b.request_counts
    failed = counts.errored + counts.canceled + counts.expired
    total = counts.processing + counts.succeeded + failed
    status = STATUS.get(b.processing_status, b.processing_status)
    if status == "completed" and b.cancel_initiated_at is not None:
        status = "cancelled"  # ended after a cancel: partial results
    created = b.created_at.timestamp()
    return Batch(
        id=b.id,
        status=status,
        created_at=created,
        expires_at=b.expires_at.timestamp() if b.expires_at else None,
        in_progress_at=created,
        request_counts=Counts(total, counts.succeeded, failed),
        output_file_id=b.results_url or None,
        key=key,
    )


@contextlib.contextmanager
def not_found() -> Iterator[None]:
    import anthropic

    try:
        yield
    except anthropic.NotFoundError as e:
        raise NotFound(e.message) from e
