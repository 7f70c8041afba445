"""Run a command against a fresh local emulator: start it on a free port, point each provider's
environment variables at it (OpenAI's, Anthropic's and Gemini's: the emulator serves all three),
run the command, stop the emulator, and exit with the command's code.

    python scripts/with_emulator.py --state-dir build/demo/emulator -- make caption

A key of your own (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, GOOGLE_API_KEY) is replaced
by a dummy one for the command, so it never reaches the emulator or its state directory.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, run

# isort: split

import argparse
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def start(state_dir: Path, extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, str(HERE / "emulator.py"), "--port", "0", "--state-dir", str(state_dir)]
    proc = subprocess.Popen(cmd + extra, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise UserError(f"the emulator did not start (it printed {url!r}); see its errors above")
    return proc, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=Path("build/emulator"))
    parser.add_argument("--emulator-args", default="", help="extra emulator options, one string")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command and arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UserError("give a command after --, e.g. -- make caption")
    proc, url = start(args.state_dir, shlex.split(args.emulator_args))
    print(f"emulator: {url} (state in {args.state_dir})", file=sys.stderr, flush=True)
    root = url.removesuffix("/v1")  # Anthropic's and Gemini's base URLs are the server's root
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_API_KEY"}  # it wins over GEMINI_
    env.update(OPENAI_BASE_URL=url, OPENAI_API_KEY="emulator-demo-key")
    env.update(ANTHROPIC_BASE_URL=root, ANTHROPIC_API_KEY="emulator-demo-key")
    env.update(GOOGLE_GEMINI_BASE_URL=root, GEMINI_API_KEY="emulator-demo-key")
    try:
        return subprocess.call(command, env=env)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(run(main))
