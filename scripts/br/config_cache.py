"""CONFIG as parsed, kept for a run's later scripts ($BR_CONFIG_CACHE: the step's config.json).

make points BR_CONFIG_CACHE at the step's config.json: CONFIG as parsed, kept as JSON with the
sha256 of the bytes it was parsed from. The stamps' process, first in a run, writes it
(write_if_changed.py, `keep`); the later scripts read the JSON while CONFIG's bytes are the
same, and so never import yaml (10 ms of each process). A config that holds an api_key, or
that JSON cannot hold exactly, is never kept: it is parsed from the YAML each time.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from br.cli import UserError
from br.records import decode_utf8

CACHE = "BR_CONFIG_CACHE"


def parsed(path: Path, raw: bytes, sha: str, keep: bool = False) -> Any:
    """The config's data: from $BR_CONFIG_CACHE when it was made from these bytes, else parsed
    from the YAML (and, with `keep`, kept there when JSON holds it exactly)."""
    cache = os.environ.get(CACHE)
    if cache:
        with contextlib.suppress(OSError, ValueError):
            with open(cache, "rb") as f:
                kept = json.loads(f.read())
            if isinstance(kept, dict) and kept.get("sha256") == sha and "data" in kept:
                return kept["data"]
    import yaml

    try:
        data = yaml.safe_load(decode_utf8(path, raw))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}")
    if cache and keep:
        save(Path(cache), sha, data)
    return data


def save(cache: Path, sha: str, data: Any) -> None:
    """Write the cache of `data`, unless it holds an api_key (never copied into build/) or
    JSON would give back something else (a date, a key that is not a string, NaN): then the
    YAML is parsed each time. Best effort: a cache that cannot be written only costs the
    parse."""
    from br.files import write_text

    if holds_key(data):
        return
    try:
        text = json.dumps({"sha256": sha, "data": data})
    except (TypeError, ValueError):
        return
    if json.loads(text)["data"] == data:
        with contextlib.suppress(OSError):
            write_text(cache, text + "\n")


def holds_key(value: Any) -> bool:
    """An `api_key` anywhere in the config (a mapping's key)."""
    if isinstance(value, dict):
        return "api_key" in value or any(holds_key(v) for v in value.values())
    return isinstance(value, list) and any(holds_key(v) for v in value)
