"""Submit one chunk: upload chunk_NNN.jsonl (purpose batch), create its batch, write batch_NNN.id.

Exactly once: the batch carries the chunk's sha256 in its metadata, and an existing batch with
that hash (not failed) is adopted instead of creating another, so a rerun after a crash, a
touched input or an edited script never pays twice. With a token budget (config token_budget,
or --token-budget) the script waits until the model's estimated tokens in flight leave room,
under a lock shared by parallel make jobs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batch_api import chunk_info, submit
from cli import note, run
from client import make_client
from config import load_config
from files import write_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("chunk", type=Path, help="chunk_NNN.jsonl")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--step", required=True)
    parser.add_argument("--token-budget", type=int, default=None, help="overrides the config's")
    parser.add_argument("--lock-dir", type=Path, default=Path("build/.locks"))
    parser.add_argument("-o", "--output", required=True, type=Path, help="batch_NNN.id")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    chunk = chunk_info(args.chunk)
    budget = args.token_budget or config.token_budget(chunk.model)
    client = make_client(config)
    batch = submit(client, chunk, args.step, budget=budget, lock_dir=args.lock_dir)
    write_text(args.output, batch.id + "\n")
    note(f"{args.output}: {batch.id} ({batch.status}, ~{chunk.tokens} input tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
