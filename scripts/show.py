"""Print where a merged dataset is and its first few records (for `make demo`)."""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import run

# isort: split

import argparse
import itertools
import json
import sys
from pathlib import Path

from br.records import iter_records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("merged", type=Path)
    parser.add_argument("-n", type=int, default=3, help="records to show")
    args = parser.parse_args(argv)
    records = list(iter_records(args.merged))
    print(f"\nmerged dataset: {args.merged} ({len(records)} records); the first {args.n}:")
    for record in itertools.islice(records, args.n):
        print(json.dumps(record, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
