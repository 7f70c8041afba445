"""What the pipeline scripts share: errors, atomic files, JSON(L), config, client, hashing.

Every script turns a `UserError` into one line on stderr and a non-zero exit (see `run`), writes
its outputs whole or not at all (`atomic_output`), and rewrites a file only when its bytes change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

# Config keys that are not steps.
TOP_LEVEL_KEYS = {
    "model",
    "api_key",
    "base_url",
    "prices",
    "token_budget",
    "pipeline",
    "max_requests",
}
# Keys a step may hold besides chat-completions body parameters.
STEP_KEYS = {
    "system": str,
    "user": str,
    "is_multimodal": bool,
    "image_key": str,
    "image_detail": str,
    "response_key": str,
    "model": str,
    "where": str,
    "extract": str,
    "response_format": dict,
    "body": dict,
    "kind": str,
    "dialog_history": str,
    "context": str,
    "image_url": str,
}
# Chat-completions parameters a step may set directly (anything else goes under `body:`).
BODY_KEYS = {
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "verbosity",
    "logprobs",
    "top_logprobs",
    "service_tier",
}
ENDPOINT = "/v1/chat/completions"
# Statuses in which a batch still holds enqueued tokens.
IN_FLIGHT = {"validating", "in_progress", "finalizing", "cancelling"}
# Metadata keys that identify our batches (deterministic, so a rerun can find them).
META_STEP = "br_step"
META_CHUNK = "br_chunk_sha256"
META_TOKENS = "br_est_tokens"
META_MODEL = "br_model"


UMASK = os.umask(0o022)
os.umask(UMASK)


def _interrupted(signum: int, frame: Any) -> None:
    """Ctrl+C, even while a script is still importing: one line, no traceback."""
    print("interrupted: rerun the same make command to resume.", file=sys.stderr)
    sys.exit(130)


signal.signal(signal.SIGINT, _interrupted)


class UserError(Exception):
    """A mistake the user can fix: reported as one line, never a traceback."""


# --------------------------------------------------------------------------- running scripts


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call a script's main, turning expected failures into one line on stderr."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same make command to resume.", file=sys.stderr)
        return 130
    except Exception as e:
        # openai is only imported by scripts that call the API; small ones stay fast.
        openai = sys.modules.get("openai")
        if openai is None:
            raise
        if isinstance(e, openai.AuthenticationError):
            print(
                "error: the API rejected the key (401). Set a valid key: export "
                "OPENAI_API_KEY=... or put OPENAI_API_KEY=... in .env.",
                file=sys.stderr,
            )
            return 2
        if isinstance(e, openai.APIConnectionError):
            print(
                f"error: cannot reach the API ({type(e).__name__}); check OPENAI_BASE_URL or "
                "the network, then rerun make to resume.",
                file=sys.stderr,
            )
            return 3
        if isinstance(e, openai.APIStatusError):
            print(
                f"error: the API answered {e.status_code} ({e.message}); rerun make to resume.",
                file=sys.stderr,
            )
            return 3
        raise


def step_arguments(parser: Any) -> None:
    """The arguments every per-step script takes, named as the Makefile's variables."""
    parser.add_argument("--input", required=True, type=Path, help="dataset (.json list or .jsonl)")
    parser.add_argument("--config", required=True, type=Path, help="the YAML config")
    parser.add_argument("--step", required=True, help="the config's step")
    parser.add_argument("--data-key", default="image_path", help="field or jq expression")


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write `path` whole or not at all, and leave it untouched if the bytes did not change.

    The temporary file sits beside the target with a unique name, so parallel make jobs
    never share one; it is fsynced before `os.replace`, and unlinked on any failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; build files are as shareable as any
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        commit(Path(tmp), path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def commit(tmp: Path, path: Path) -> bool:
    """Move a finished, fsynced temporary file onto `path` unless the bytes are the same."""
    if path.exists() and same_bytes(tmp, path):
        os.unlink(tmp)
        return False
    os.replace(tmp, path)
    return True


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def write_text(path: Path, text: str) -> None:
    with atomic_output(path) as f:
        f.write(text)


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    n = 0
    with atomic_output(path) as f:
        for row in rows:
            f.write(dumps(row) + "\n")
            n += 1
    return n


def dumps(obj: Any) -> str:
    """The one JSON serialisation used for build files (stable, compact, readable UTF-8)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def iter_jsonl(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(
                        f"{path}:{n}: not valid JSON ({e.msg}); fix or remove that line"
                    )


def is_jsonl(path: Path) -> bool:
    return Path(path).suffix.lower() in {".jsonl", ".ndjson"}


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a dataset: a JSON list of objects, or JSONL (streamed line by line)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input file {path} does not exist; set INPUT=path/to/data.json")
    if is_jsonl(path):
        records: Iterable[Any] = iter_jsonl(path)
    else:
        try:
            with open(path, encoding="utf-8") as f:
                records = json.load(f)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path} is not valid JSON (line {e.lineno}: {e.msg}); "
                "give a JSON list of objects, or JSONL with a .jsonl name"
            )
        if not isinstance(records, list):
            raise UserError(f"{path} must hold a JSON list of objects (or be JSONL named .jsonl)")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise UserError(f"{path}: record {i} is a {type(record).__name__}, not an object")
        yield record


class RecordWriter:
    """Writes records in the input's own format: a JSON list (one record a line) or JSONL."""

    def __init__(self, f: IO[str], jsonl: bool) -> None:
        self.f, self.jsonl, self.n = f, jsonl, 0
        if not jsonl:
            f.write("[")

    def write(self, record: dict[str, Any]) -> None:
        if self.jsonl:
            self.f.write(dumps(record) + "\n")
        else:
            self.f.write(("\n" if self.n == 0 else ",\n") + dumps(record))
        self.n += 1

    def close(self) -> None:
        if not self.jsonl:
            self.f.write("\n]\n" if self.n else "]\n")


# --------------------------------------------------------------------------- hashing, tokens


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def request_hash(request: dict[str, Any]) -> str:
    """Identity of a request for reuse: its url and body, not its custom_id."""
    canonical = json.dumps(
        [request.get("url"), request.get("body")], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def estimate_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens: 4 per message, a token per 4 characters of text, 85 an image.

    The same rule the emulator applies; real tokenizers differ, so a budget should keep a margin.
    """
    chars, images, messages = 0, 0, body.get("messages") or []
    for message in messages:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                chars += len(part.get("text") or "")
            elif part.get("type") == "image_url":
                images += 1
    return math.ceil(chars / 4) + 4 * len(messages) + 85 * images


# --------------------------------------------------------------------------- config


@dataclass
class Step:
    name: str
    model: str
    system: str | None
    user: str | None
    is_multimodal: bool = True
    image_key: str = "image_url"
    image_detail: str | None = None
    response_key: str | None = None
    where: str | None = None
    extract: str | None = None
    response_format: dict[str, Any] | None = None
    kind: str = "plain"  # "question": the original tool's dialogue rounds
    templates: dict[str, str] = field(default_factory=dict)  # question: dialog_history, ...
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema responses must match, if the step asks for structured output."""
        if not self.response_format:
            return None
        return self.response_format.get("json_schema", {}).get("schema")


@dataclass
class Config:
    path: Path
    data: dict[str, Any]

    @property
    def steps(self) -> list[str]:
        return [k for k, v in self.data.items() if k not in TOP_LEVEL_KEYS and isinstance(v, dict)]

    def step(self, name: str) -> Step:
        if not name:
            raise UserError(f"no step given; set STEP to one of: {', '.join(self.steps)}")
        raw = self.data.get(name)
        if name in TOP_LEVEL_KEYS or not isinstance(raw, dict):
            raise UserError(
                f"{self.path} has no step '{name}'; steps there: {', '.join(self.steps) or 'none'}"
            )
        return parse_step(self.path, name, raw, self.data.get("model"))

    def price(self, model: str) -> dict[str, float] | None:
        prices = self.data.get("prices") or {}
        return prices.get(model)

    def token_budget(self, model: str) -> int | None:
        budget = self.data.get("token_budget")
        if isinstance(budget, dict):
            budget = budget.get(model)
        return int(budget) if budget else None


def load_config(path: Path) -> Config:
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist; set CONFIG=path/to/config.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}")
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a YAML mapping with 'model' and one mapping per step")
    if "model" in data and not isinstance(data["model"], str):
        raise UserError(f"{path}: 'model' must be a string such as gpt-4o-mini")
    return Config(path, data)


def parse_step(path: Path, name: str, raw: dict[str, Any], default_model: Any) -> Step:
    where = f"{path}: step '{name}'"
    kind = raw.get("kind") or ("question" if name == "question" else "plain")
    for key, value in raw.items():
        if key in STEP_KEYS:
            want = STEP_KEYS[key]
            if not isinstance(value, want):
                raise UserError(
                    f"{where}: '{key}' must be a {want.__name__}, not {type(value).__name__}"
                )
        elif key not in BODY_KEYS:
            raise UserError(
                f"{where}: unknown key '{key}'; put extra request parameters under 'body:' "
                f"(known keys: {', '.join(sorted(set(STEP_KEYS) | BODY_KEYS))})"
            )
    if kind not in {"plain", "question"}:
        raise UserError(f"{where}: 'kind' must be 'plain' or 'question', not '{kind}'")
    if kind == "plain" and not raw.get("user"):
        raise UserError(f"{where} has no 'user' prompt; add user: 'Describe {{title}} ...'")
    if kind == "question":
        missing = [k for k in ("dialog_history", "context", "image_url") if k not in raw]
        if missing:
            raise UserError(f"{where} (a question step) needs templates: {', '.join(missing)}")
    model = raw.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise UserError(f"{path}: no model; add model: gpt-4o-mini at the top or in step '{name}'")
    body = {k: raw[k] for k in BODY_KEYS if k in raw}
    body.update(raw.get("body") or {})
    if body.get("stream"):
        raise UserError(f"{where}: the Batch API does not support stream: true; remove it")
    return Step(
        name=name,
        model=model,
        system=raw.get("system"),
        user=raw.get("user"),
        is_multimodal=raw.get("is_multimodal", True),
        image_key=raw.get("image_key", "image_url"),
        image_detail=raw.get("image_detail"),
        response_key=raw.get("response_key"),
        where=raw.get("where"),
        extract=raw.get("extract"),
        response_format=normalise_response_format(name, raw.get("response_format")),
        kind=kind,
        templates={k: raw[k] for k in ("dialog_history", "context", "image_url") if k in raw},
        body=body,
    )


def normalise_response_format(name: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accept OpenAI's full response_format or a bare JSON schema (wrapped as a strict schema)."""
    if value is None or value.get("type") in {"json_schema", "json_object", "text"}:
        return value
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
    return {"type": "json_schema", "json_schema": {"name": safe, "schema": value, "strict": True}}


# --------------------------------------------------------------------------- the API client


def make_client(
    config: Config | None = None, max_retries: int = 5, api_key: str | None = None
) -> Any:
    """The OpenAI client. The key is `api_key` if given, else OPENAI_API_KEY (environment, then
    .env), else the config's api_key (with a warning); the base URL comes from OPENAI_BASE_URL,
    else the config."""
    import openai
    from dotenv import load_dotenv

    load_dotenv(override=False)
    data = config.data if config else {}
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key and data.get("api_key"):
        note(
            f"warning: using the api_key from {config.path if config else 'the config'}; "
            "prefer OPENAI_API_KEY in the environment or .env, and keep keys out of configs"
        )
        key = str(data["api_key"])
    base_url = os.environ.get("OPENAI_BASE_URL") or data.get("base_url")
    if not key:
        raise UserError(
            "OPENAI_API_KEY is not set: export OPENAI_API_KEY=sk-... (or put it in .env); "
            "to try the tool without a key, run 'make demo'"
        )
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=max_retries)


def chunk_name(path: Path) -> str:
    """`chunk_007.jsonl` -> `007`."""
    return Path(path).stem.split("_", 1)[-1]
