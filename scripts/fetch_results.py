"""Wait for a chunk's batch and write results_NNN.jsonl: one final outcome per request.

Polls with backoff (a progress bar, or plain lines in logs), downloads the output and error
files, and matches lines to requests by custom_id. Retryable failures (429, 5xx, expired or
cancelled before they ran) go again in follow-up batches (retry_NNN_K.jsonl / .id), up to
--retries times, found-or-created exactly once like the first batch; permanent failures (4xx
such as context_length_exceeded) are recorded with their reason. A batch failed on the
enqueued-token limit is recreated once in-flight batches drain. A batch that failed validation
stops the run with its errors; one cancelled outside the run stops it once, and the rerun
sends what it did not finish. The results are also kept in answers/, keyed by the chunk's
hash, so later runs reuse them. A rerun after a crash re-derives everything from the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from batch_api import chunk_info, file_lines, in_flight_tokens, next_poll, submit, wait
from cli import UserError, note, run
from client import make_client
from config import load_config
from files import chunk_name, sha256_file, write_jsonl, write_text
from records import iter_jsonl, request_hash

RETRYABLE_STATUS = {408, 409, 429}


def outcome(line: dict[str, Any]) -> dict[str, Any]:
    """A result row from one output or error line, tolerating what servers vary on."""
    response, error = line.get("response"), line.get("error")
    if response:
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        if isinstance(body, str):  # some implementations send the body as a JSON string
            try:
                body = json.loads(body)
            except json.JSONDecodeError:
                body = {"error": {"message": body}}
        body = body or {}
        if status == 200:
            message = (body.get("choices") or [{}])[0].get("message") or {}
            if message.get("content") is None:
                reason = message.get("refusal") or "the response has no content"
                return failed("refusal", str(reason), 200, retryable=False)
            return {
                "outcome": "succeeded",
                "response": message["content"],
                "error": None,
                "retryable": False,
                "usage": body.get("usage"),
            }
        err = body.get("error") or {}
        retryable = status in RETRYABLE_STATUS or status >= 500
        code = err.get("code") or err.get("type") or f"http_{status}"
        return failed(code, err.get("message") or "", status, retryable)
    err = error or {}
    # Non-HTTP failures (batch_expired, batch_cancelled, or codeless lines) never ran: retry.
    return failed(err.get("code") or "unknown_error", err.get("message") or "", None, True)


def failed(code: str, message: str, status: int | None, retryable: bool) -> dict[str, Any]:
    return {
        "outcome": "failed",
        "response": None,
        "error": {"code": str(code), "message": message, "status": status},
        "retryable": retryable,
        "usage": None,
    }


def collect(client: Any, batch: Any, wanted: set[str]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        for line in file_lines(client, file_id):
            cid = line.get("custom_id")
            if cid in wanted and (cid not in rows or rows[cid]["outcome"] != "succeeded"):
                rows[cid] = {**outcome(line), "batch_id": batch.id}
    for cid in wanted - rows.keys():
        message = f"batch {batch.id} ended {batch.status} without a line for this request"
        rows[cid] = {**failed("no_result", message, None, True), "batch_id": batch.id}
    return rows


class Fetcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config = load_config(args.config)
        self.client = make_client(self.config)
        self.out = args.output.parent
        self.nnn = chunk_name(args.chunk)
        self.alone = 0  # token-limit failures with nothing else in flight

    def budget(self, model: str) -> int | None:
        return self.args.token_budget or self.config.token_budget(model)

    def settle(self, batch: Any, id_file: Path, chunk: Path, attempt: int) -> Any:
        """Wait for a batch to end; recreate it after a token-limit failure; stop on others."""
        label = f"{self.out.name}/{chunk.stem}"
        while True:
            batch = wait(self.client, batch.id, label)
            if batch.status == "failed":
                errors = batch.errors.data if batch.errors and batch.errors.data else []
                if not any(e.code == "token_limit_exceeded" for e in errors):
                    id_file.unlink(missing_ok=True)  # so a rerun, after a fix, submits afresh
                    raise UserError(validation_message(batch, errors, chunk))
                batch = self.after_token_limit(batch, chunk, attempt)
                write_text(id_file, batch.id + "\n")
                continue
            if batch.status == "cancelled":
                # One line per acknowledged batch: the chunk's first batch and its retries.
                ack = self.out / f"batch_{self.nnn}.cancelled"
                told = ack.read_text().split() if ack.exists() else []
                if batch.id not in told:
                    write_text(ack, "".join(f"{b}\n" for b in [*told, batch.id]))
                    counts = batch.request_counts
                    done = counts.completed if counts else 0
                    raise UserError(
                        f"batch {batch.id} ({chunk.name}) was cancelled outside this run with "
                        f"{done} request(s) done; rerun make to send the rest"
                    )
            return batch

    def after_token_limit(self, batch: Any, chunk: Path, attempt: int) -> Any:
        """Recreate a batch that failed on the enqueued-token limit, once others have drained."""
        info = chunk_info(chunk)
        count, _ = in_flight_tokens(self.client, info.model, exclude=batch.id)
        if count == 0:
            # Nothing of ours holds tokens: this chunk alone may be over the limit (or another
            # client's batches are). Try a few times before saying so.
            self.alone += 1
            if self.alone > 3:
                raise UserError(
                    f"{chunk.name} (~{info.tokens} tokens) keeps failing on the enqueued-token "
                    "limit with nothing else of ours in flight; lower MAX_REQUESTS so chunks are "
                    "smaller, or wait for other batches on the account, then rerun make"
                )
            time.sleep(next_poll(batch))
        note(f"{chunk.name}: enqueued-token limit reached; waiting for {count} batch(es) to drain")
        while count:
            time.sleep(next_poll(batch))
            now, _ = in_flight_tokens(self.client, info.model, exclude=batch.id)
            if now < count:
                break
        return submit(
            self.client, info, self.args.step, attempt, self.budget(info.model), self.args.lock_dir
        )

    def fetch(self) -> list[dict[str, Any]]:
        # Only custom_id -> hash stays in memory (in chunk order); a retry re-reads the chunk.
        hashes = {r["custom_id"]: request_hash(r) for r in iter_jsonl(self.args.chunk)}
        rows: dict[str, dict[str, Any]] = {}
        id_file, chunk = self.args.batch_id, self.args.chunk
        batch_id = id_file.read_text().strip()
        if not batch_id:
            raise UserError(f"{id_file} is empty; delete it and rerun make to resubmit")
        import openai

        try:
            batch = self.client.batches.retrieve(batch_id)
        except openai.NotFoundError:
            raise UserError(
                f"{id_file} names {batch_id}, which this server does not have (another "
                "OPENAI_BASE_URL or account?); point at the right one, or delete the file to "
                "resubmit"
            )
        attempt, wanted = 0, set(hashes)
        while True:
            batch = self.settle(batch, id_file, chunk, attempt)
            for cid, row in collect(self.client, batch, wanted).items():
                rows[cid] = {**row, "attempts": attempt + 1}
            wanted = {cid for cid, row in rows.items() if row["outcome"] != "succeeded"}
            wanted = {cid for cid in wanted if rows[cid]["retryable"]}
            if not wanted or attempt >= self.args.retries:
                break
            attempt += 1
            chunk = self.out / f"retry_{self.nnn}_{attempt}.jsonl"
            write_jsonl(chunk, (r for r in iter_jsonl(self.args.chunk) if r["custom_id"] in wanted))
            id_file = chunk.with_suffix(".id")
            note(f"{chunk.name}: retrying {len(wanted)} request(s), attempt {attempt + 1}")
            info = chunk_info(chunk)
            batch = submit(
                self.client,
                info,
                self.args.step,
                attempt,
                self.budget(info.model),
                self.args.lock_dir,
            )
            write_text(id_file, batch.id + "\n")
        return [{"custom_id": cid, "hash": sha, **rows[cid]} for cid, sha in hashes.items()]


def validation_message(batch: Any, errors: list[Any], chunk: Path) -> str:
    shown = "; ".join(
        f"line {e.line if e.line is not None else '-'}: {e.code}: {e.message}" for e in errors[:10]
    )
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return (
        f"batch {batch.id} for {chunk.name} failed validation: {shown or 'no reason given'}{more}; "
        "fix the input or config and rerun make"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("batch_id", type=Path, help="batch_NNN.id")
    parser.add_argument("--chunk", required=True, type=Path, help="chunk_NNN.jsonl")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--step", required=True)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--token-budget", type=int, default=None)
    parser.add_argument("--lock-dir", type=Path, default=Path("build/.locks"))
    parser.add_argument("--answers", required=True, type=Path, help="answers/ directory")
    parser.add_argument("-o", "--output", required=True, type=Path, help="results_NNN.jsonl")
    args = parser.parse_args(argv)
    if args.retries < 0:
        raise UserError(f"RETRIES must be 0 or more, not {args.retries}")

    rows = Fetcher(args).fetch()
    write_results(rows, args.output, args.answers, sha256_file(args.chunk))
    bad = sum(r["outcome"] != "succeeded" for r in rows)
    note(f"{args.output}: {len(rows) - bad} succeeded, {bad} failed")
    return 0


def write_results(rows: list[dict[str, Any]], results: Path, answers: Path, sha: str) -> None:
    """Write the rows into answers/ first (a cache keyed by the chunk's content, which outlives
    re-splits), then hard-link them to results_NNN.jsonl (a copy where links fail). In that
    order, a crash between the two leaves the results file missing, so make refetches."""
    kept = answers / f"{sha[:32]}.jsonl"
    write_jsonl(kept, rows)
    tmp = results.parent / f".{results.name}.{os.getpid()}.tmp"
    try:
        os.link(kept, tmp)
    except OSError:
        write_jsonl(tmp, rows)
    os.utime(tmp)  # the answers may be older, identical bytes; make must see a fresh target
    os.replace(tmp, results)


if __name__ == "__main__":
    sys.exit(run(main))
