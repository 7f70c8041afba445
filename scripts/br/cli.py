"""Running a script: one line on stderr for a user's mistake, never a traceback.

Every script's main goes through `run`, which turns a `UserError` (and the API's
authentication, connection and status errors) into one line and a non-zero exit; Ctrl+C, even
while a script still imports, says how to resume.
"""

from __future__ import annotations

import _signal  # loaded with the interpreter; `signal` would import enum first
import sys


def _interrupted(signum: int, frame: object) -> None:
    """Ctrl+C, even while a script is still importing: one line, no traceback."""
    print("interrupted: rerun the same make command to resume.", file=sys.stderr)
    sys.exit(130)


# Before any other import, here and in every script (each imports cli first): a Ctrl+C while
# the rest loads is this one line too.
_signal.signal(_signal.SIGINT, _interrupted)

import gc  # noqa: E402

# A script makes a few dicts per record and keeps almost none: the cyclic collector, run every
# 700 allocations by default, walks the SDK's thousands of classes for nothing (about 5% of a
# run's CPU). Cycles are still collected, a hundred times less often.
gc.set_threshold(70_000, 20, 20)

import argparse  # noqa: E402
import errno  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


class UserError(Exception):
    """A mistake the user can fix: reported as one line, never a traceback."""


# Where the API key came from, set by client.make_client, so a 401 names the right place:
# "argument", "environment", ".env" (with the file in KEY_FILE) or "config" (the config's path).
KEY_SOURCE: str | None = None
KEY_FILE: str | None = None
KEY_NAME = "OPENAI_API_KEY"  # the variable the provider's key comes from (ANTHROPIC_API_KEY, ...)

# Errors of the disk, not of the program: one line naming the path.
DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full; free some space",
    errno.EDQUOT: "the disk quota is exceeded; free some space",
    errno.EROFS: "the file system is read-only; set BUILD to a writable directory",
    errno.EACCES: "permission denied; make it writable or set BUILD to a directory you own",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one line for a bad argument (`MAX_REQUESTS=abc`), not usage and a line."""

    def error(self, message: str) -> Any:  # argparse declares NoReturn
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def key_advice() -> str:
    """What to do about a rejected key, naming where the key came from (never the key)."""
    if KEY_SOURCE == "config":
        return (
            f"the api_key in {KEY_FILE} was rejected (401); fix it there, or delete it and set "
            f"{KEY_NAME} in the environment or .env"
        )
    if KEY_SOURCE == ".env":
        return f"the {KEY_NAME} in {KEY_FILE} was rejected (401); put a valid key there"
    if KEY_SOURCE == "argument":
        return "the api_key passed to the function was rejected (401); pass a valid key"
    return (
        f"the {KEY_NAME} in the environment was rejected (401); export a valid key: "
        f"export {KEY_NAME}=..."
    )


def disk_error(e: OSError) -> str | None:
    """One line for a full, read-only or unwritable disk; None for other errors."""
    advice = DISK_ERRNOS.get(e.errno or 0)
    if advice is None:
        return None
    where = e.filename if e.filename is not None else "a file"
    return f"cannot write {where}: {e.strerror}; {advice}"


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
    except OSError as e:
        line = disk_error(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    except Exception as e:
        sqlite3 = sys.modules.get("sqlite3")
        if sqlite3 is not None and isinstance(e, sqlite3.OperationalError):
            # A temporary index (merge, digests) on a full or read-only disk.
            text = str(e)
            if any(w in text for w in ("full", "readonly", "read-only", "disk I/O", "unable")):
                print(f"error: a temporary index failed: {text}; free disk space", file=sys.stderr)
                return 2
        # The SDKs are only imported by scripts that call the API; small ones stay fast.
        for name in ("anthropic", "openai"):
            sdk = sys.modules.get(name)
            code = api_error(e, sdk) if sdk is not None else None
            if code is not None:
                return code
        raise


def api_error(e: Exception, sdk: Any) -> int | None:
    """One line for an SDK's (openai's, anthropic's) authentication, connection or status
    error, and the exit code; None for another error."""
    if isinstance(e, sdk.AuthenticationError):
        print(f"error: {key_advice()}", file=sys.stderr)
        return 2
    if isinstance(e, sdk.APIConnectionError):
        where = KEY_NAME.replace("_API_KEY", "_BASE_URL")
        print(
            f"error: cannot reach the API ({type(e).__name__}); check {where} or the network, "
            "then rerun make to resume.",
            file=sys.stderr,
        )
        return 3
    if isinstance(e, sdk.APIStatusError):
        print(
            f"error: the API answered {e.status_code} ({e.message}); rerun make to resume.",
            file=sys.stderr,
        )
        return 3
    return None


def step_arguments(parser: Any) -> None:
    """The arguments every per-step script takes, named as the Makefile's variables."""
    parser.add_argument("--input", required=True, type=Path, help="dataset (.json list or .jsonl)")
    parser.add_argument("--config", required=True, type=Path, help="the YAML config")
    parser.add_argument("--step", required=True, help="the config's step")
    parser.add_argument("--data-key", default="image_path", help="field or jq expression")


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
