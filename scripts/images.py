"""`images.py stamp`: a stamp that changes when a local image the requests use changes.

Reads the step's image index (--cache: its images/ directory) and, with --preflight, its
preflight.json; writes a digest of every indexed file's current stat to -o (the Makefile's
images.stamp, a prerequisite of requests.jsonl). Run on every make; the file's bytes change
only when an image (or a failing URL to check again) does. br/prompts/images/cache.py
(`stamp`) has the rules; br/prompts/images/ explains how local images are sent.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import run

# isort: split

import argparse
import sys
from pathlib import Path

from br.files import write_text
from br.prompts.images.cache import stamp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stamp", help="write a stamp that changes when an indexed image changes")
    p.add_argument("--cache", required=True, type=Path, help="the step's images/ directory")
    p.add_argument("--preflight", type=Path, help="the step's preflight.json, if any")
    p.add_argument("-o", "--output", required=True, type=Path)
    args = parser.parse_args(argv)
    write_text(args.output, stamp(args.cache, args.preflight) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
