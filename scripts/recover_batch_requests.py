"""The original recover_batch_requests.py: resume the last interrupted send_batch_requests.py run.

    python scripts/recover_batch_requests.py

Reads BUILD/last_run.json (written by send_batch_requests.py; BUILD from the environment,
default build/) and reruns the same `make caption ...` command: batches already submitted are
picked up from the server, finished results are reused, and only what never ran is sent. If the
last run completed, it does nothing and sends nothing (the original resent the last request).
Exits with make's code.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import run

# isort: split

import argparse
import sys

from br.original import TARGET, load_state, run_make, state_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    state = load_state()
    variables = {str(k): str(v) for k, v in state["variables"].items()}
    shown = f"make {TARGET} STEP={variables.get('STEP')} INPUT={variables.get('INPUT')}"
    if state.get("status") == "completed":
        print(f"the last run ({shown}) completed; nothing to recover, nothing sent")
        return 0
    print(f"resuming the last run ({shown}) from {state_path()}", file=sys.stderr)
    return run_make(variables)


if __name__ == "__main__":
    sys.exit(run(main))
