"""The original send_batch_requests.py command line, running `make caption` for one step.

    python scripts/send_batch_requests.py -i data/my.json -s caption -c configs/my.yaml

Runs `make caption INPUT=... CONFIG=... STEP=... DATA_KEY=... RESPONSE_KEY=... OUTPUT=...` in the
project root and writes the output file (default: the input file) when the step is done. The
make variables (never the key) are kept in BUILD/last_run.json, written before make starts and
marked completed or failed when it ends, so scripts/recover_batch_requests.py can resume an
interrupted run. Rerunning resumes too: nothing paid for is sent twice. Exits with make's code.
BUILD (the build root, default build/) is read from the environment.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, UserError, note, run

# isort: split

import sys
from pathlib import Path

from br.config import load_config
from br.original import absolute, build_root, run_make


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("-i", "--input_file", required=True, help="the dataset (.json or .jsonl)")
    parser.add_argument("-s", "--step", required=True, help="the config step to run")
    parser.add_argument("-c", "--config", required=True, help="the YAML config")
    parser.add_argument("-o", "--output_file", help="where to write the result (default: input)")
    parser.add_argument("-r", "--response_key", help="default: the step's response_key")
    parser.add_argument("-d", "--data_key", default="image_path", help="field or jq expression")
    args = parser.parse_args(argv)

    if not Path(args.input_file).is_file():
        raise UserError(f"input file {args.input_file} does not exist")
    config = load_config(Path(args.config))
    step = config.step(args.step)
    top = config.data.get("response_key")
    response_key = args.response_key or step.response_key or (top if isinstance(top, str) else "")
    if not response_key:
        raise UserError(
            f"no response key for step '{step.name}': pass -r KEY or add response_key: to the step"
        )
    variables = {
        "INPUT": absolute(args.input_file, "input"),
        "CONFIG": absolute(args.config, "config"),
        "STEP": args.step,
        "DATA_KEY": args.data_key,
        "RESPONSE_KEY": response_key,
        "OUTPUT": absolute(args.output_file or args.input_file, "output"),
        "BUILD": str(build_root()),
    }
    if not args.output_file:
        note(
            f"no -o given: the result overwrites the input file {variables['OUTPUT']} when the "
            "step is done (as the original tool did); pass -o OUT to keep the input as it is"
        )
    return run_make(variables)


if __name__ == "__main__":
    sys.exit(run(main))
