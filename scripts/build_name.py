"""The build directory name of an input, and its format: `make` reads both at parse time.

`news-3f2a9c1e json` for data/news.json: the readable stem (characters Make cannot take in a
target become `_`) and the first 8 hex digits of the sha256 of the input's absolute path, so
a/news.json, b/news.json and news.jsonl never share a step directory. The input's content is
tracked separately (requests.params holds its sha256), because mtimes are not identity.
Standard library only: it runs before the virtual environment exists.
"""

import hashlib
import os
import re
import sys


def name_of(path: str) -> tuple[str, str]:
    """(directory name, "json" or "jsonl") of an input path, relative to the current folder."""
    stem, ext = os.path.splitext(os.path.basename(path))
    readable = re.sub(r"[^A-Za-z0-9._+-]", "_", stem)[:40] or "input"
    digest = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{readable}-{digest[:8]}", "jsonl" if ext.lower() in (".jsonl", ".ndjson") else "json"


def main() -> int:
    print(" ".join(name_of(sys.argv[1] if len(sys.argv) > 1 else "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
