"""The build directory name of an input, and its format: `make` reads both at parse time.

`news-3f2a9c1e json` for data/news.json: the readable stem (characters Make cannot take in a
target become `_`) and the first 8 hex digits of the sha256 of the input's absolute path, so
a/news.json, b/news.json and news.jsonl never share a step directory. The input's content is
tracked separately (requests.params holds its sha256), because mtimes are not identity.
Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import sys

from br.names import name_of


def main() -> int:
    print(" ".join(name_of(sys.argv[1] if len(sys.argv) > 1 else "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
