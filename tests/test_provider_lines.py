"""Each provider's chunk files hold exactly what is sent, split under that provider's limits,
and `make plan` sizes and prices them as that provider's lines: real `make`, the scripts, the
official SDKs and the emulator; library tests where no server is needed."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from conftest import Emulator, input_dir, make, read_json, write_json
from google import genai
from google.genai import types

GEMINI_KEY = "test-gemini-key"
UPLOAD = "POST /upload/{version}/files"
CAPTION = (
    "caption:\n  is_multimodal: false\n  user: 'Describe {title}'\n"
    "  response_key: text\n  max_tokens: 100\n"
)
# DATA_KEYs that work on OpenAI: slashes, spaces, unicode, 100 and 5,000 characters.
AWKWARD_KEYS = [
    "photos/2026 11/é ☃ 1.png",
    ("photos/2026 11/2 " + "x" * 100)[:100],
    "https://example.test/a?b=c&d=e#f",
    "k" * 5000,
]


def gemini_env(emu: Emulator, **extra: str) -> dict[str, str]:
    return emu.env(GOOGLE_GEMINI_BASE_URL=emu.root, GEMINI_API_KEY=GEMINI_KEY, **extra)


def gemini_jobs(emu: Emulator) -> int:
    return int(emu.stats().get("gemini_batches_created", 0))


def uploads(emu: Emulator) -> int:
    return int(emu.stats()["calls"].get(UPLOAD, 0))


def caption_run(
    tmp_path: Path, header: str, keys: list[str], **variables: Any
) -> tuple[dict[str, Any], Path]:
    """make caption's variables for a config of `header` + CAPTION over records keyed by
    `keys`, and the step's build directory."""
    (tmp_path / "config.yaml").write_text(header + CAPTION)
    rows = [{"id": key, "title": f"Story {i}"} for i, key in enumerate(keys)]
    data = write_json(tmp_path / "data.json", rows)
    given = {
        "BUILD": tmp_path / "build",
        "INPUT": data,
        "CONFIG": tmp_path / "config.yaml",
        "STEP": "caption",
        "DATA_KEY": "id",
        **variables,
    }
    return given, input_dir(tmp_path / "build", data) / "caption"


def chunk_lines(step: Path) -> list[dict[str, Any]]:
    return [line for path in sorted(step.glob("chunk_*.jsonl")) for line in read_json(path)]


# ----------------------------------------------------------------------------- 1. Gemini's lines


def test_gemini_chunks_hold_gemini_lines_for_any_data_key(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The chunk file holds Gemini's `{key, request}` lines (the model in the request, the
    request hash and the custom_id in the key); every awkward DATA_KEY comes back; a small
    chunk goes inline (no upload); a rerun pays nothing."""
    header = "model: gemini-2.5-flash\nprovider: gemini\n"
    variables, step = caption_run(tmp_path, header, AWKWARD_KEYS)
    make("caption", env=gemini_env(emulator), **variables)
    lines = chunk_lines(step)
    assert [set(line) for line in lines] == [{"key", "request"}] * len(AWKWARD_KEYS)
    assert sorted(line["key"][65:] for line in lines) == sorted(AWKWARD_KEYS)
    assert {line["request"]["model"] for line in lines} == {"models/gemini-2.5-flash"}
    requests = {r["custom_id"]: r for r in read_json(step / "requests.jsonl")}
    from br.prompts.images.identity import request_hash

    for line in lines:  # the key starts with the hash answers/ and the merge key rows by
        assert line["key"][:64] == request_hash(requests[line["key"][65:]])
    merged = read_json(step / "merged.json")
    assert [r["id"] for r in merged] == AWKWARD_KEYS and all(r["text"] for r in merged)
    assert gemini_jobs(emulator) == 1 and uploads(emulator) == 0 and emulator.batches() == []
    make("caption", env=gemini_env(emulator), **variables)
    assert gemini_jobs(emulator) == 1


def test_a_chunk_over_the_inline_bound_is_uploaded_byte_for_byte(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Over the inline bound, the chunk goes through the File API as the very bytes of its
    chunk file (the emulator's sha256 of the upload is the chunk's)."""
    header = "model: gemini-2.5-flash\nprovider: gemini\n"
    variables, step = caption_run(tmp_path, header, AWKWARD_KEYS[:2])
    env = gemini_env(emulator, BR_GEMINI_INLINE_BYTES="0")
    make("caption", env=env, **variables)
    assert gemini_jobs(emulator) == 1 and uploads(emulator) == 2  # start, then the bytes
    options = types.HttpOptions(base_url=emulator.root)
    client = genai.Client(api_key=GEMINI_KEY, http_options=options)
    chunk = (step / "chunk_001.jsonl").read_bytes()
    digest = hashlib.sha256(chunk)
    (sent,) = [f for f in client.files.list() if str(f.display_name).endswith(f" {len(chunk)}")]
    # The emulator's sha256Hash: the base64 of the hex digest (or of the digest itself).
    assert base64.b64decode(str(sent.sha256_hash)) in (digest.hexdigest().encode(), digest.digest())
    assert all(r["text"] for r in read_json(step / "merged.json"))


def test_the_readers_of_a_chunk_line_understand_gemini_lines() -> None:
    """line_identity: the key, the pipeline request's own hash, the model without `models/`,
    the endpoint, and the token estimate the pipeline's body had (images by Gemini's rule)."""
    from br.batches import gemini_shape
    from br.batches.providers import line_identity
    from br.prompts.images.identity import request_hash
    from br.prompts.tokens import estimate_tokens

    png = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
        "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    content = [
        {"type": "text", "text": "what is it " * 9},
        {"type": "image_url", "image_url": {"url": png}},
        {"type": "image_url", "image_url": {"url": "https://img.test/a.jpg"}},
    ]
    body = {
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "Be brief, be kind."},
            {"role": "user", "content": content},
        ],
        "max_tokens": 10,
    }
    request = {"custom_id": "a/b é", "method": "POST", "url": "/v1/chat/completions", "body": body}
    line = gemini_shape.shape(request)
    key, sha, model, endpoint, tokens = line_identity(line)
    assert key == line["key"] and key.endswith(" a/b é")
    assert sha == request_hash(request) and model == "gemini-2.5-flash"
    assert endpoint == gemini_shape.ENDPOINT
    assert tokens == estimate_tokens(body) == 30 + 258 + 258 * 3 * 2
