"""Print the steps of a config's `pipeline:` list, space-separated, for `make pipeline`.

Also where a pipeline's step is: `make pipeline` builds step k in BUILD/<name>/pipeline/NN-<step>
(not BUILD/<name>/<step>, make's default B), so `make report` and `make gallery` look there.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, run

# isort: split

import argparse
import sys
from pathlib import Path

from br.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    steps = config.data.get("pipeline")
    if not steps or not isinstance(steps, list):
        raise UserError(
            f"{args.config} has no pipeline: list; add pipeline: [step, ...] or set "
            'STEPS="step1 step2"'
        )
    for step in steps:
        config.step(str(step))  # an unknown step fails here, before anything is sent
    print(" ".join(map(str, steps)))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
