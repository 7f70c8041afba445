"""`make sample`: a few records answered through the synchronous API, never a batch."""

from __future__ import annotations

from pathlib import Path

from conftest import Emulator, input_dir, make, read_json, write_json

CHAT = "POST /v1/chat/completions"
CONFIG = """\
model: gpt-4o-mini
prices:
  gpt-4o-mini: {input: 0.075, cached_input: 0.0375, output: 0.30}
verdict:
  is_multimodal: false
  user: "Is this news? {title}"
  response_format:
    type: object
    properties:
      keep: {type: boolean}
    required: [keep]
  extract: .keep
  response_key: verdict
"""


def records(n: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "title": f"headline number {i}"} for i in range(n)]


def setup(tmp_path: Path, n: int = 30, config: str = CONFIG) -> tuple[Path, Path]:
    data = write_json(tmp_path / "news.json", records(n))
    cfg = tmp_path / "news.yaml"
    cfg.write_text(config)
    return data, cfg


def sample(emulator: Emulator, tmp_path: Path, data: Path, cfg: Path, **more: object) -> str:
    variables = dict(BUILD=tmp_path / "build", INPUT=data, CONFIG=cfg, STEP="verdict")
    variables.update(DATA_KEY="id", **more)
    return make("sample", env=emulator.env(), **variables).stdout


def calls(emulator: Emulator) -> int:
    return int(emulator.stats()["calls"].get(CHAT, 0))


def test_sample_answers_without_a_batch_and_asks_once(emulator: Emulator, tmp_path: Path) -> None:
    data, cfg = setup(tmp_path)
    out = sample(emulator, tmp_path, data, cfg, N=5)
    stats = emulator.stats()
    assert stats["batches_created"] == 0 and stats["files_created"] == 0
    assert calls(emulator) == 5
    # Readable: each record's fields, its prompt, its answer read as the merge reads it.
    assert out.count("=== r") == 5 and "user: Is this news? headline number 0" in out
    assert "answer (verdict): true" in out or "answer (verdict): false" in out
    assert "cost: $" in out and "live prices" in out
    b = input_dir(tmp_path / "build", data) / "verdict"
    kept = read_json(b / "sample.json")
    assert [r["id"] for r in kept] == ["r0", "r1", "r2", "r3", "r4"]
    assert all(isinstance(r["verdict"], bool) for r in kept)  # parsed, checked, extracted
    # The same prompt again: nothing is asked; the answers come from answers/.
    again = sample(emulator, tmp_path, data, cfg, N=5)
    assert calls(emulator) == 5 and again.count("[cached]") == 5
    # A changed prompt asks again.
    cfg.write_text(CONFIG.replace("Is this news?", "Is this real news?"))
    sample(emulator, tmp_path, data, cfg, N=5)
    assert calls(emulator) == 10
    # Random records across the dataset, by seed: the same seed picks the same ones.
    sample(emulator, tmp_path, data, cfg, N=4, SAMPLE="random", SEED=7)
    picked = [r["id"] for r in read_json(b / "sample.json")]
    assert len(picked) == 4 and picked != ["r0", "r1", "r2", "r3"]
    sample(emulator, tmp_path, data, cfg, N=4, SAMPLE="random", SEED=7)
    assert [r["id"] for r in read_json(b / "sample.json")] == picked
    assert emulator.stats()["batches_created"] == 0


def test_sample_then_caption_pays_nothing_twice(emulator: Emulator, tmp_path: Path) -> None:
    data, cfg = setup(tmp_path, n=6)
    variables = dict(BUILD=tmp_path / "build", INPUT=data, CONFIG=cfg, STEP="verdict")
    make("caption", env=emulator.env(), DATA_KEY="id", **variables)  # split before sampling
    first = emulator.stats()["requests_processed"]
    sample(emulator, tmp_path, data, cfg, N=3)
    assert calls(emulator) == 0  # every answer was there: the batch's
    cfg.write_text(CONFIG.replace("Is this news?", "News?"))
    sample(emulator, tmp_path, data, cfg, N=3)
    assert calls(emulator) == 3
    # The batch now sends only the 3 records the sample did not answer.
    make("caption", env=emulator.env(), DATA_KEY="id", **variables)
    assert emulator.stats()["requests_processed"] == first + 3 + 3
    merged = read_json(input_dir(tmp_path / "build", data) / "verdict" / "merged.json")
    assert all("verdict" in r for r in merged)


def test_sample_shows_a_rejected_request_per_record(emulator: Emulator, tmp_path: Path) -> None:
    data, cfg = setup(tmp_path, n=3)
    write_json(data, [*records(2), {"id": "bad", "title": "EMULATOR_ERROR:invalid_value x"}])
    out = sample(emulator, tmp_path, data, cfg)
    assert out.count("answer (verdict)") == 2
    assert "ERROR invalid_value (HTTP 400)" in out
    b = input_dir(tmp_path / "build", data) / "verdict"
    bad = read_json(b / "sample.json")[2]
    assert bad["verdict"] is None and bad["sample_error"]["code"] == "invalid_value"


def test_sample_mistakes_are_one_line(emulator: Emulator, tmp_path: Path) -> None:
    data, cfg = setup(tmp_path, n=3)
    variables = dict(BUILD=tmp_path / "build", INPUT=data, CONFIG=cfg, STEP="verdict")
    for extra, words in (
        ({"N": "0"}, "N must be 1 or more"),
        ({"SAMPLE": "some"}, "use first or random"),
        ({"MODE": "flex"}, "gpt-4o-mini has no flex tier"),
    ):
        r = make("sample", env=emulator.env(), check=False, DATA_KEY="id", **variables, **extra)
        assert r.returncode != 0 and words in r.stderr and "Traceback" not in r.stderr
    assert calls(emulator) == 0


def test_flex_on_another_provider_is_refused_in_one_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Flex is OpenAI's tier: a step on Anthropic asking for it is refused before anything is
    sent, by make sample and by MODE=flex (live answers on Anthropic: test_live_providers.py)."""
    config = "provider: anthropic\nmodel: claude-sonnet-4-5\n" + CONFIG.split("\n", 1)[1]
    config = config.replace(
        "  response_key: verdict\n", "  response_key: verdict\n  max_tokens: 50\n"
    )
    data, cfg = setup(tmp_path, n=3, config=config)
    variables = dict(
        BUILD=tmp_path / "build", INPUT=data, CONFIG=cfg, STEP="verdict", DATA_KEY="id"
    )
    for target in ("sample", "caption"):
        r = make(target, env=emulator.env(), check=False, MODE="flex", **variables)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert len(errors) == 1 and "MODE=flex is OpenAI's flex tier" in errors[0], r.stderr
    stats = emulator.stats()
    assert stats.get("live_calls", 0) == 0 and stats.get("message_batches_created", 0) == 0
