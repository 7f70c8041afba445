"""JSON and JSONL records: the one serialisation of build files, and reading datasets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from cli import UserError


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


def request_hash(request: dict[str, Any]) -> str:
    """Identity of a request for reuse: its url and body, not its custom_id."""
    canonical = json.dumps(
        [request.get("url"), request.get("body")], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
