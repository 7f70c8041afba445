"""The OpenAI client: the key and base URL, from the environment, .env or the config."""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlparse

from br import cli
from br.cli import UserError, note
from br.config import Config

PROVIDER_HOST = "api.openai.com"  # where OpenAI's own key belongs


def load_env() -> str:
    """Load .env, found as python-dotenv's find_dotenv() finds it, without overriding the
    environment: its path, or "" when there is none. For a script, that is upwards from
    scripts/, looked for here, and dotenv (8 ms of imports) is loaded only if there is one;
    in a notebook, `python -c`, a debugger or a frozen app dotenv searches from the working
    directory, and it does so itself."""
    main = sys.modules.get("__main__")
    if not hasattr(main, "__file__") or sys.gettrace() is not None or hasattr(sys, "frozen"):
        from dotenv import find_dotenv, load_dotenv

        found = find_dotenv()
        load_dotenv(found, override=False)
        return found
    folder = os.path.dirname(os.path.abspath(__file__))
    while True:
        path = os.path.join(folder, ".env")
        if os.path.isfile(path):
            from dotenv import load_dotenv

            load_dotenv(path, override=False)
            return path
        parent = os.path.dirname(folder)
        if parent == folder:
            return ""
        folder = parent


def make_client(
    config: Config | None = None, max_retries: int = 5, api_key: str | None = None
) -> Any:
    """The OpenAI client. The key is `api_key` if given, else OPENAI_API_KEY (environment, then
    .env), else the config's api_key (with a warning); the base URL comes from OPENAI_BASE_URL,
    else the config."""
    import openai

    from_environment = bool(os.environ.get("OPENAI_API_KEY"))
    dotenv = load_env()
    data = config.data if config else {}
    key = api_key or os.environ.get("OPENAI_API_KEY")
    # Remembered for cli.run, so a 401 names where the key came from (never the key).
    if api_key:
        cli.KEY_SOURCE, cli.KEY_FILE = "argument", None
    elif from_environment:
        cli.KEY_SOURCE, cli.KEY_FILE = "environment", None
    elif key:
        cli.KEY_SOURCE, cli.KEY_FILE = ".env", dotenv
    if not key and data.get("api_key"):
        cli.KEY_SOURCE, cli.KEY_FILE = "config", str(config.path if config else "the config")
        note(
            f"warning: using the api_key from {config.path if config else 'the config'}; "
            "prefer OPENAI_API_KEY in the environment or .env, and keep keys out of configs"
        )
        key = str(data["api_key"])
    base_url = os.environ.get("OPENAI_BASE_URL") or data.get("base_url")
    if not key:
        raise UserError(
            "OPENAI_API_KEY is not set: export OPENAI_API_KEY=sk-... (or put it in .env); "
            "to try the tool without a key, run 'make demo'"
        )
    # A config is trusted like code, but may come from someone else: its base_url receives the
    # user's own key. OPENAI_BASE_URL is the user's own choice, and a key in the config goes
    # where the same config says.
    from_config = base_url and not os.environ.get("OPENAI_BASE_URL")
    host = urlparse(str(base_url)).hostname
    if from_config and cli.KEY_SOURCE != "config" and host != PROVIDER_HOST:
        note(
            f"warning: {config.path if config else 'the config'} sets base_url: your API key is "
            f"sent to {host}, not {PROVIDER_HOST}; remove base_url: unless you trust that host"
        )
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=max_retries)
