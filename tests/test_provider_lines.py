"""Each provider's chunk files hold exactly what is sent, split under that provider's limits,
and `make plan` sizes and prices them as that provider's lines: real `make`, the scripts, the
official SDKs and the emulator; library tests where no server is needed."""

from __future__ import annotations

import base64
import hashlib
import os
import re
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
    tmp_path.mkdir(parents=True, exist_ok=True)
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
    make("report", env=gemini_env(emulator), **variables)  # reads the chunk's model
    (chunk,) = read_json(step / "report.json")["chunks"]
    assert chunk["model"] == "gemini-2.5-flash" and chunk["price"]["input"] == 0.15
    (batch,) = chunk["batches"]  # its status, times and counts in the seam's words
    assert batch["status"] == "completed" and batch["request_counts"]["total"] == len(lines)
    assert batch["created_at"] and batch["ended_at"] >= batch["created_at"]


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


# ----------------------------------------------------------------------------- 2. limits


ANTHROPIC_KEY = "test-anthropic-key"
CLAUDE = "model: claude-sonnet-4-5\nprovider: anthropic\n"


def anthropic_env(emu: Emulator) -> dict[str, str]:
    return emu.env(ANTHROPIC_BASE_URL=emu.root, ANTHROPIC_API_KEY=ANTHROPIC_KEY)


def anthropic_batches(emu: Emulator) -> int:
    return int(emu.stats().get("message_batches_created", 0))


def test_the_split_keeps_to_each_providers_own_limits(emulator: Emulator, tmp_path: Path) -> None:
    """Anthropic takes 100,000 requests (OpenAI 50,000) and 256 MB a batch; Gemini 2 GB a file
    (OpenAI 200 MB). Over a provider's limit: one line, nothing paid, nothing split."""
    keys = ["a", "b", "c"]
    variables, step = caption_run(tmp_path, CLAUDE, keys, MAX_REQUESTS=100_000)
    make("caption", env=anthropic_env(emulator), **variables)
    assert anthropic_batches(emulator) == 1 and len(chunk_lines(step)) == 3
    for name, value, limit in [
        ("MAX_REQUESTS", 100_001, "1 to 100000"),
        ("MAX_BYTES", 256_000_001, "1 to 256000000"),
    ]:
        over = {**variables, "BUILD": tmp_path / "over", name: value}
        done = make("caption", env=anthropic_env(emulator), check=False, **over)
        assert done.returncode != 0 and f"{name} must be {limit}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not list((tmp_path / "over").rglob("chunk_*"))
    assert anthropic_batches(emulator) == 1
    header = "model: gemini-2.5-flash\nprovider: gemini\n"
    variables, step = caption_run(tmp_path / "g", header, keys, MAX_BYTES=2 * 1000**3)
    make("caption", env=gemini_env(emulator), **variables)  # over OpenAI's 200 MB: fine here
    assert gemini_jobs(emulator) == 1
    variables["MAX_BYTES"] = 2 * 1000**3 + 1
    done = make("caption", env=gemini_env(emulator), check=False, **variables)
    assert done.returncode != 0 and "MAX_BYTES must be 1 to 2000000000" in done.stderr


def test_one_request_over_max_bytes_names_the_providers_limit(tmp_path: Path) -> None:
    from br.batches.split import chunks
    from br.cli import UserError

    lines = iter(['{"key": "' + "x" * 100 + '"}\n'])
    try:
        list(chunks(lines, 10, 50, api_bytes=256_000_000))
    except UserError as e:
        assert "over MAX_BYTES=50" in str(e) and "the API's limit is 256000000" in str(e)
    else:
        raise AssertionError("a request over MAX_BYTES was chunked")


# ----------------------------------------------------------------------------- 3. the stamp


def test_changing_provider_alone_splits_again_and_sets_the_old_ids_aside(tmp_path: Path) -> None:
    """The split's stamp holds the step's provider: with only `provider:` changed, the chunks
    are made again as the new provider's lines, and the old chunk's batch id is set aside in
    superseded/, never deleted. Nothing is sent (the split only)."""
    variables, step = caption_run(tmp_path, "model: gemini-2.5-flash\n", ["a", "b"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    make(str(step / "chunks.mk"), env=env, **variables)
    assert all("custom_id" in line for line in chunk_lines(step))  # OpenAI's lines
    (step / "batch_001.id").write_text("batch_paid_for_earlier\n")
    (tmp_path / "config.yaml").write_text("model: gemini-2.5-flash\nprovider: gemini\n" + CAPTION)
    make(str(step / "chunks.mk"), env=env, **variables)
    assert [set(line) for line in chunk_lines(step)] == [{"key", "request"}] * 2
    assert not (step / "batch_001.id").exists()
    (aside,) = (step / "superseded").glob("*-batch_001.id")
    assert aside.read_text() == "batch_paid_for_earlier\n"


# ----------------------------------------------------------------------------- 4. make plan


def number(pattern: str, text: str) -> int:
    found = re.search(pattern + r"\s+([\d,]+)", text)
    assert found, f"{pattern!r} not in the plan:\n{text}"
    return int(found[1].replace(",", ""))


def test_make_plan_sizes_and_counts_each_providers_own_lines(tmp_path: Path) -> None:
    """`make plan` sizes the chunks as the bytes the split then writes (the provider's own
    lines), counts input tokens as the run counts them from those lines, and images by the
    provider's rule; no key, nothing sent."""
    from br.batches.providers import line_identity
    from br.prompts.tokens import claude_image_tokens, gemini_image_tokens, image_tokens

    step_text = (
        "caption:\n  system: You write captions.\n  user: 'Headline: {title}'\n"
        "  response_key: text\n  max_tokens: 100\n"
    )
    rows = [{"id": f"r{i}", "title": f"Story {i} " * 3, "image_url": f"https://img.test/{i}.jpg"}
            for i in range(3)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "OPENAI_"))}
    env["PREFLIGHT"] = "0"
    remote = {  # one remote image (assumed 1536 x 1024) by each provider's rule
        "openai": image_tokens(1536, 1024, "auto"),
        "anthropic": claude_image_tokens(1536, 1024),
        "gemini": gemini_image_tokens(1536, 1024),
    }
    for provider, model in [
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5"),
        ("gemini", "gemini-2.5-flash"),
    ]:
        here = tmp_path / provider
        here.mkdir()
        (here / "config.yaml").write_text(f"model: {model}\nprovider: {provider}\n" + step_text)
        data = write_json(here / "data.json", rows)
        variables = {"BUILD": here / "build", "INPUT": data, "CONFIG": here / "config.yaml",
                     "STEP": "caption", "DATA_KEY": "id"}  # fmt: skip
        if provider == "anthropic":  # its own limit, over OpenAI's 50,000
            variables["MAX_REQUESTS"] = 100_000
        plan = make("plan", env=env, **variables).stdout
        step = input_dir(here / "build", data) / "caption"
        make(str(step / "chunks.mk"), env=env, **variables)  # the split only: nothing sent
        chunks = sorted(step.glob("chunk_*.jsonl"))
        assert number("bytes to upload", plan) == sum(c.stat().st_size for c in chunks), provider
        tokens = sum(line_identity(line)[4] for line in chunk_lines(step))
        assert number("estimated input tokens", plan) == tokens, provider
        assert number(r"estimated input tokens\s+[\d,]+ \(text [\d,]+, images", plan) == (
            3 * remote[provider]
        ), provider
    assert "https://ai.google.dev/gemini-api/docs/pricing" in plan and "Gemini's rule" in plan


def test_inline_or_file_is_chosen_by_the_create_bodys_size_on_the_wire(
    emulator: Emulator, tmp_path: Path, monkeypatch: Any
) -> None:
    """A chunk goes inline while its create body (as the SDK's transport encodes it: unicode
    escaped) fits the bound; one byte over, it is uploaded (the File API's two calls)."""
    from br.batches import gemini_shape
    from br.batches.gemini import ENVELOPE_BYTES, LOCAL, Gemini, inline_body
    from br.config import Config
    from br.records import dumps

    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.root)
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "é ☃ " * 50}]}
    requests = [
        {"custom_id": f"ü/{i}", "url": "/v1/chat/completions", "body": body} for i in range(5)
    ]
    chunk = tmp_path / "chunk_001.jsonl"
    chunk.write_text("".join(dumps(gemini_shape.shape(r)) + "\n" for r in requests))
    wire = len(inline_body(chunk.read_bytes(), "")) + ENVELOPE_BYTES
    assert wire > chunk.stat().st_size  # escaped unicode: the file's size would undercount
    gemini = Gemini(Config(Path("t.yaml"), {"model": "gemini-2.5-flash"}))
    monkeypatch.setenv("BR_GEMINI_INLINE_BYTES", str(wire))
    assert gemini.upload(chunk, "br_caption_chunk_001.jsonl").startswith(LOCAL)
    assert uploads(emulator) == 0
    monkeypatch.setenv("BR_GEMINI_INLINE_BYTES", str(wire - 1))
    assert gemini.upload(chunk, "br_caption_chunk_001.jsonl").startswith("files/")
    assert uploads(emulator) == 2


def test_a_batch_in_flight_when_provider_changes_is_collected_from_its_own_api(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A batch sent to OpenAI's API and not fetched when `provider:` becomes gemini: the next
    make collects it from OpenAI's API (the ledger notes who made each batch), sends only the
    request no batch holds to Gemini, and merges both; nothing is paid twice."""
    variables, step = caption_run(tmp_path, "model: gemini-2.5-flash\n", ["a", "b"])
    env = gemini_env(emulator)
    make(str(step / "batch_001.id"), env=env, **variables)  # sent, not fetched
    assert len(emulator.batches()) == 1
    ledger = read_json(step / "ledger.jsonl")
    assert {e.get("provider") for e in ledger if e["op"] == "create"} == {"openai"}
    (tmp_path / "config.yaml").write_text("model: gemini-2.5-flash\nprovider: gemini\n" + CAPTION)
    rows = [{"id": key, "title": f"Story {i}"} for i, key in enumerate(["a", "b", "c"])]
    write_json(Path(variables["INPUT"]), rows)
    done = make("caption", env=env, **variables)
    assert "collecting 1 earlier batch(es) from openai" in done.stderr
    merged = read_json(step / "merged.json")
    assert [r["id"] for r in merged] == ["a", "b", "c"] and all(r["text"] for r in merged)
    assert len(emulator.batches()) == 1 and gemini_jobs(emulator) == 1
    assert [line["key"][65:] for line in chunk_lines(step)] == ["c"]
    assert list((step / "superseded").glob("*-batch_001.id"))


def test_an_inline_jobs_requests_cannot_be_downloaded_one_line() -> None:
    """Recovering a chunk's requests from an earlier batch: an inline job keeps none on the
    server (and the SDK gives no uploaded file back): one line saying so, no call made."""
    import pytest
    from br.batches.gemini import Gemini
    from br.cli import UserError

    with pytest.raises(UserError, match="an inline job's requests back; keep the chunk files"):
        Gemini(None).download("")
