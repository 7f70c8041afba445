#!/usr/bin/env python3
"""Local emulator of the OpenAI Files + Batches API (plus /v1/chat/completions, /v1/responses
and /v1/embeddings), with Anthropic's Message Batches and Gemini's Batch API on the same port,
for the pipeline's tests and `make demo`: a real HTTP server the official ``openai``,
``anthropic`` and ``google-genai`` SDKs talk to through ``OPENAI_BASE_URL``,
``ANTHROPIC_BASE_URL`` and ``GOOGLE_GEMINI_BASE_URL``.

Usage::

    python scripts/emulator.py --port 0 --state-dir /tmp/emu [--processing-seconds 1.0] ...

The first line printed on stdout is the base URL (``http://127.0.0.1:PORT/v1``). SIGTERM ends
it with status 0; files and batches stay in ``--state-dir`` for the next start. The code lives
in the ``batch_emulator`` package beside this file; the API facts it follows, each with its
source, are in docs/api-facts.md; the options and the admin endpoint are in the README's
"The emulator".
"""

from __future__ import annotations

import sys

from batch_emulator.server import main

if __name__ == "__main__":
    sys.exit(main())
