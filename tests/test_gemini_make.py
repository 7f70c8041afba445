"""provider: gemini end to end: real `make`, the scripts, the official `google-genai` SDK and the
emulator's Gemini Batch API (its base URL is the server root)."""

from __future__ import annotations

from pathlib import Path

from conftest import EXAMPLE_STEPS, Emulator, input_dir, make, read_json, write_json

KEY = "test-gemini-key"
PIPELINE = "model: gemini-2.5-flash\nprovider: gemini\n" + EXAMPLE_STEPS


def env(emu: Emulator) -> dict[str, str]:
    return emu.env(GOOGLE_GEMINI_BASE_URL=emu.root, GEMINI_API_KEY=KEY)


def jobs(emu: Emulator) -> int:
    return int(emu.stats().get("gemini_batches_created", 0))


def test_the_example_pipeline_runs_on_gemini(emulator: Emulator, tmp_path: Path) -> None:
    """The example's two steps with provider: gemini: structured output, where:, every record
    answered on Gemini's API and none on OpenAI's; a rerun pays nothing."""
    (tmp_path / "config.yaml").write_text(PIPELINE)
    variables = {"BUILD": tmp_path / "build", "CONFIG": tmp_path / "config.yaml"}
    make("pipeline", env=env(emulator), **variables)
    second = input_dir(tmp_path / "build") / "pipeline" / "02-caption"
    merged = read_json(second / "merged.json")
    filtered = [r for r in merged if "article_filter" in r]
    assert filtered and all(isinstance(r["article_filter"]["keep"], bool) for r in filtered)
    kept = [r for r in filtered if r["article_filter"]["keep"]]
    assert kept and all(r["generated_caption"] for r in kept)
    assert jobs(emulator) == 2 and emulator.batches() == []  # nothing went to OpenAI's API
    make("pipeline", env=env(emulator), **variables)
    assert jobs(emulator) == 2


def test_a_data_key_with_slashes_spaces_and_100_characters(
    emulator: Emulator, tmp_path: Path
) -> None:
    keys = [(f"photos/2026 11/{i} " + "x" * 80 + f"/é {i}")[:100].ljust(100, "z") for i in range(3)]
    rows = [{"id": key, "title": f"Story {i}"} for i, key in enumerate(keys)]
    (tmp_path / "config.yaml").write_text(
        "model: gemini-2.5-flash\nprovider: gemini\ncaption:\n  is_multimodal: false\n"
        "  user: 'Describe {title}'\n  response_key: text\n  max_tokens: 100\n"
    )
    data = write_json(tmp_path / "data.json", rows)
    variables = {"BUILD": tmp_path / "build", "INPUT": data, "CONFIG": tmp_path / "config.yaml"}
    make("caption", env=env(emulator), STEP="caption", DATA_KEY="id", **variables)
    merged = read_json(input_dir(tmp_path / "build", data) / "caption" / "merged.json")
    assert [r["id"] for r in merged] == keys
    assert all(r["text"] for r in merged) and jobs(emulator) == 1
