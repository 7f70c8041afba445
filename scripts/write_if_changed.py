"""Write a small file (a parameter stamp, or a copy of another file) only if its bytes change.

Make tracks time, not content: a stamp holding the variables that shape an output (STEP,
DATA_KEY, RESPONSE_KEY, ...) keeps its mtime while they stay the same, so Make rebuilds only
when one of them really changed. `--from FILE` copies a file instead (make caption OUTPUT=...).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from cli import UserError, run
from files import atomic_output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", type=Path)
    parser.add_argument("lines", nargs="*", help="lines of the stamp, e.g. DATA_KEY=image_path")
    parser.add_argument("--from", dest="source", type=Path, help="copy this file instead")
    args = parser.parse_args(argv)
    if args.source:
        if not args.source.exists():
            raise UserError(f"{args.source} does not exist; run the step first")
        with open(args.source, "rb") as src, atomic_output(args.target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        print(f"wrote {args.target}", file=sys.stderr)
    else:
        with atomic_output(args.target) as f:
            f.writelines(line + "\n" for line in args.lines)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
