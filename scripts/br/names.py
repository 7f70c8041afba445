"""The build directory of an input (`name_of`), light on purpose: scripts/build_name.py prints it
for make at parse time, on every make, so it loads three standard modules and nothing else
(br/layout.py, the owner of every other name, re-exports it)."""

from __future__ import annotations

import hashlib
import os
import re


def name_of(path: str) -> tuple[str, str]:
    """(directory name, "json" or "jsonl") of an input path, relative to the current folder."""
    stem, ext = os.path.splitext(os.path.basename(path))
    readable = re.sub(r"[^A-Za-z0-9._+-]", "_", stem)[:40] or "input"
    digest = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{readable}-{digest[:8]}", "jsonl" if ext.lower() in (".jsonl", ".ndjson") else "json"
