"""Running a script: one line on stderr for a user's mistake, never a traceback.

Every script's main goes through `run`, which turns a `UserError` (and the API's
authentication, connection and status errors) into one line and a non-zero exit; Ctrl+C, even
while a script still imports, says how to resume.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _interrupted(signum: int, frame: Any) -> None:
    """Ctrl+C, even while a script is still importing: one line, no traceback."""
    print("interrupted: rerun the same make command to resume.", file=sys.stderr)
    sys.exit(130)


signal.signal(signal.SIGINT, _interrupted)


class UserError(Exception):
    """A mistake the user can fix: reported as one line, never a traceback."""


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call a script's main, turning expected failures into one line on stderr."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same make command to resume.", file=sys.stderr)
        return 130
    except Exception as e:
        # openai is only imported by scripts that call the API; small ones stay fast.
        openai = sys.modules.get("openai")
        if openai is None:
            raise
        if isinstance(e, openai.AuthenticationError):
            print(
                "error: the API rejected the key (401). Set a valid key: export "
                "OPENAI_API_KEY=... or put OPENAI_API_KEY=... in .env.",
                file=sys.stderr,
            )
            return 2
        if isinstance(e, openai.APIConnectionError):
            print(
                f"error: cannot reach the API ({type(e).__name__}); check OPENAI_BASE_URL or "
                "the network, then rerun make to resume.",
                file=sys.stderr,
            )
            return 3
        if isinstance(e, openai.APIStatusError):
            print(
                f"error: the API answered {e.status_code} ({e.message}); rerun make to resume.",
                file=sys.stderr,
            )
            return 3
        raise


def step_arguments(parser: Any) -> None:
    """The arguments every per-step script takes, named as the Makefile's variables."""
    parser.add_argument("--input", required=True, type=Path, help="dataset (.json list or .jsonl)")
    parser.add_argument("--config", required=True, type=Path, help="the YAML config")
    parser.add_argument("--step", required=True, help="the config's step")
    parser.add_argument("--data-key", default="image_path", help="field or jq expression")


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
