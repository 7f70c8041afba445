"""Print the steps of a config's `pipeline:` list, space-separated, for `make pipeline`.

Also where a pipeline's step is: `make pipeline` builds step k in BUILD/<name>/pipeline/NN-<step>
(not BUILD/<name>/<step>, make's default B), so `make report` and `make gallery` look there.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from cli import UserError, note, run

# isort: split

import argparse
import sys
from pathlib import Path

from config import load_config


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


def step_dir(directory: Path) -> Path:
    """The step's build directory; when it does not exist, the one `make pipeline` made for the
    same step (BUILD/<name>/pipeline/NN-<step>) if there is exactly one; if there are several
    (the step ran twice), one line naming the B= of each. Else `directory`, as it is."""
    if directory.exists():
        return directory
    step = directory.name
    found = sorted(
        p
        for p in (directory.parent / "pipeline").glob(f"*-{step}")
        if p.name.split("-", 1)[0].isdigit() and p.name.split("-", 1)[1] == step and p.is_dir()
    )
    if len(found) > 1:
        choices = " or ".join(f"B={p}" for p in found)
        raise UserError(
            f"{directory} does not exist, and make pipeline ran step '{step}' {len(found)} "
            f"times; say which: {choices}"
        )
    if found:
        note(f"using {found[0]}: make pipeline ran step '{step}' there (there is no {directory})")
        return found[0]
    return directory


def moved(path: Path, directory: Path, found: Path) -> Path:
    """A file the Makefile named in the step's directory, in the directory found instead."""
    return found / path.name if path.parent == directory else path


def no_step(directory: Path) -> str:
    return (
        f"{directory} does not exist; run make caption STEP={directory.name} (or make pipeline) "
        "first, or set B to the step's build directory"
    )


if __name__ == "__main__":
    sys.exit(run(main))
