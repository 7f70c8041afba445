"""Steps on /v1/responses and /v1/embeddings end to end, one endpoint per batch, and MAX_COST."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from br.cli import UserError
from br.config import load_config
from br.prompts.tokens import estimate_tokens
from br.records import iter_jsonl
from conftest import PYTHON, ROOT, Emulator, input_dir, make, read_json, write_json

TITLES = ["Floods in the valley", "A new bridge opens", "Floods in the valley", "Harvest"]
CONFIG = """\
model: gpt-4o-mini
prices:
  gpt-4o-mini: {input: 0.075, cached_input: 0.0375, output: 0.30}
  text-embedding-3-small: {input: 0.01}  # an embeddings model writes no output
embed:
  endpoint: /v1/embeddings
  model: text-embedding-3-small
  user: "{title}"
  dimensions: 64
  response_key: vector
embed64:
  endpoint: /v1/embeddings
  model: text-embedding-3-small
  user: "{title}"
  dimensions: 32
  encoding_format: base64
  response_key: vector
answer:
  endpoint: /v1/responses
  system: You answer in one sentence.
  user: "Headline: {title}"
  is_multimodal: false
  max_tokens: 40
  response_key: answer
verdict:
  endpoint: /v1/responses
  user: "Keep this? {title}"
  is_multimodal: false
  response_format:
    type: object
    properties: {keep: {type: boolean}, reason: {type: string}}
    required: [keep, reason]
    additionalProperties: false
  extract: .keep
  response_key: keep
chat:
  user: "Headline: {title}"
  is_multimodal: false
  response_key: chat
short:
  endpoint: /v1/responses
  user: "Tell the whole story behind this headline, at length, please: {title}"
  is_multimodal: false
  max_tokens: 16
  response_key: answer
"""


def setup(tmp_path: Path, config: str = CONFIG) -> tuple[Path, Path]:
    records = [{"image_path": f"img/{i}.jpg", "title": t} for i, t in enumerate(TITLES)]
    data = write_json(tmp_path / "news.json", records)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config)
    return data, cfg


def run_step(emu: Emulator, tmp_path: Path, step: str, **extra: Any) -> list[dict[str, Any]]:
    data, cfg = tmp_path / "news.json", tmp_path / "config.yaml"
    build = tmp_path / "build"
    make("caption", env=emu.env(), BUILD=build, INPUT=data, CONFIG=cfg, STEP=step, **extra)
    return read_json(input_dir(build, data) / step / "merged.json")


def endpoints_of_batches(emu: Emulator) -> Counter[str]:
    return Counter(b.endpoint for b in emu.batches())


def test_embeddings_step_end_to_end(emulator: Emulator, tmp_path: Path) -> None:
    setup(tmp_path)
    merged = run_step(emulator, tmp_path, "embed")
    vectors = [r["vector"] for r in merged]
    assert all(len(v) == 64 and all(isinstance(x, float) for x in v) for v in vectors)
    assert vectors[0] == vectors[2]  # the same text, the same vector
    assert vectors[0] != vectors[1]
    assert endpoints_of_batches(emulator) == {"/v1/embeddings": 1}

    # base64 comes back decoded to floats, of the requested size, the same vectors' values.
    merged64 = run_step(emulator, tmp_path, "embed64")
    assert all(len(r["vector"]) == 32 for r in merged64)
    assert merged64[0]["vector"] == merged64[2]["vector"]

    # The rerun sends nothing; the usage the emulator bills is what tokens.py estimates.
    batches = len(emulator.batches())
    assert run_step(emulator, tmp_path, "embed") == merged
    assert len(emulator.batches()) == batches
    b = input_dir(tmp_path / "build", tmp_path / "news.json") / "embed"
    bodies = {r["custom_id"]: r for r in iter_jsonl(b / "requests.jsonl")}
    for row in iter_jsonl(b / "results_001.jsonl"):
        request = bodies[row["custom_id"]]
        assert row["usage"]["prompt_tokens"] == estimate_tokens(request["body"], request["url"])

    # The gallery shows a vector's size, not its numbers.
    env, data, cfg = emulator.env(), tmp_path / "news.json", tmp_path / "config.yaml"
    make("gallery", env=env, BUILD=tmp_path / "build", INPUT=data, CONFIG=cfg, STEP="embed")
    html = (b / "gallery.html").read_text()
    assert "vector of 64 floats" in html
    assert repr(vectors[1][5]) not in html


def test_responses_steps_end_to_end(emulator: Emulator, tmp_path: Path) -> None:
    setup(tmp_path)
    merged = run_step(emulator, tmp_path, "answer")
    for record, title in zip(merged, TITLES, strict=True):
        assert isinstance(record["answer"], str)
        assert record["answer"].startswith("Emulated answer") and title in record["answer"]
    b = input_dir(tmp_path / "build", tmp_path / "news.json") / "answer"
    request = next(iter_jsonl(b / "requests.jsonl"))
    assert request["url"] == "/v1/responses"
    assert request["body"]["instructions"] == "You answer in one sentence."
    assert request["body"]["input"] == f"Headline: {TITLES[0]}"
    assert request["body"]["max_output_tokens"] == 40 and "max_tokens" not in request["body"]
    for row in iter_jsonl(b / "results_001.jsonl"):
        assert row["usage"]["input_tokens"] == estimate_tokens(request["body"], request["url"])
        break

    # report reads the Responses API's usage names, and shows spend against the cap.
    env, data, cfg = emulator.env(), tmp_path / "news.json", tmp_path / "config.yaml"
    out = make("report", env=env, BUILD=tmp_path / "build", INPUT=data, CONFIG=cfg, STEP="answer")
    report = json.loads((b / "report.json").read_text())
    assert report["total"]["tokens_from_responses"]["input"] > 0
    assert report["total"]["tokens_from_responses"]["output"] > 0
    assert report["total"]["max_cost_usd"] is None and "MAX_COST" not in out.stdout

    verdicts = run_step(emulator, tmp_path, "verdict")
    assert all(isinstance(r["keep"], bool) for r in verdicts)  # parsed, checked, extracted
    v = input_dir(tmp_path / "build", tmp_path / "news.json") / "verdict"
    body = next(iter_jsonl(v / "requests.jsonl"))["body"]
    fmt = body["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] is True and fmt["name"] == "verdict"
    assert set(fmt["schema"]["properties"]) == {"keep", "reason"}
    assert "response_format" not in body
    assert not (v / "errors.jsonl").read_text()
    assert endpoints_of_batches(emulator) == {"/v1/responses": 2}


def test_report_counts_every_batch_the_step_paid_for(emulator: Emulator, tmp_path: Path) -> None:
    """A changed record is sent alone in a new split; the spend against the cap still counts
    the first batch, which the ledger remembers."""
    data, cfg = setup(tmp_path)
    run_step(emulator, tmp_path, "answer")
    records = read_json(data)
    records[1]["title"] = "A newer bridge opens"
    write_json(data, records)
    run_step(emulator, tmp_path, "answer")
    assert len(emulator.batches()) == 2
    env, build = emulator.env(), tmp_path / "build"
    out = make("report", env=env, BUILD=build, INPUT=data, CONFIG=cfg, STEP="answer", MAX_COST=1)
    report = json.loads((input_dir(build, data) / "answer" / "report.json").read_text())
    assert report["total"]["batches"] == 1 and report["step"]["batches"] == 2
    assert report["step"]["cost_usd"] > report["total"]["cost_usd"] > 0
    assert "all 2 batches this step created" in out.stdout
    spent = f"spent ${report['step']['cost_usd']:.6f} against MAX_COST"
    assert spent in out.stdout, out.stdout


def test_answers_cut_short_by_max_tokens_are_kept_and_counted(
    emulator: Emulator, tmp_path: Path
) -> None:
    data, cfg = setup(tmp_path)
    build = tmp_path / "build"
    out = make("caption", env=emulator.env(), BUILD=build, INPUT=data, CONFIG=cfg, STEP="short")
    merged = read_json(input_dir(build, data) / "short" / "merged.json")
    assert all(len(r["answer"]) == 64 for r in merged)  # 16 tokens of 4 characters
    assert "warning: 4 answer(s) stopped at the step's max_tokens" in out.stderr


def test_one_endpoint_per_batch(emulator: Emulator, tmp_path: Path) -> None:
    setup(tmp_path)
    for step in ("chat", "answer", "embed"):
        run_step(emulator, tmp_path, step, MAX_REQUESTS=3)
    client = emulator.client()
    seen = Counter()
    for batch in emulator.batches():
        lines = client.files.content(batch.input_file_id).text.splitlines()
        assert {json.loads(line)["url"] for line in lines} == {batch.endpoint}
        seen[batch.endpoint] += 1
    assert seen == {"/v1/chat/completions": 2, "/v1/responses": 2, "/v1/embeddings": 2}


@pytest.mark.parametrize("where", ["variable", "config"])
def test_max_cost_refuses_before_any_upload(emulator: Emulator, tmp_path: Path, where: str) -> None:
    config = CONFIG + ("max_cost: 0.000001\n" if where == "config" else "")
    data, cfg = setup(tmp_path, config)
    extra = {"MAX_COST": "0.000001"} if where == "variable" else {}
    build = tmp_path / "build"
    result = make(
        "caption",
        env=emulator.env(),
        check=False,
        BUILD=build,
        INPUT=data,
        CONFIG=cfg,
        STEP="answer",
        **extra,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "over MAX_COST $0.000001" in errors[0], result.stderr
    assert "estimated cost $0.0000" in errors[0] and "Traceback" not in result.stderr
    stats = emulator.stats()
    assert stats["calls"].get("POST /v1/files", 0) == 0
    assert stats["batches_created"] == 0
    assert not (input_dir(build, data) / "answer" / "merged.json").exists()
    # One chunk by hand is checked too.
    for target in ("batch_001.id", "results_001.jsonl"):
        path = input_dir(build, data) / "answer" / target
        one = make(
            str(path), env=emulator.env(), check=False, BUILD=build, INPUT=data, CONFIG=cfg,
            STEP="answer", **extra,
        )  # fmt: skip
        assert one.returncode != 0 and "over MAX_COST $0.000001" in one.stderr, one.stderr
    assert emulator.stats()["calls"].get("POST /v1/files", 0) == 0

    # A cap above the estimate lets the same command through.
    make(
        "caption",
        env=emulator.env(),
        BUILD=build,
        INPUT=data,
        CONFIG=cfg,
        STEP="answer",
        MAX_COST="5",
    )
    assert emulator.stats()["batches_created"] == 1


def plan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    data, cfg = tmp_path / "news.json", tmp_path / "config.yaml"
    cmd = [PYTHON, str(ROOT / "scripts" / "plan.py"), "--input", str(data), "--config", str(cfg)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)


def test_plan_reports_each_endpoint(tmp_path: Path) -> None:
    setup(tmp_path)
    embed = json.loads(plan(tmp_path, "--step", "embed", "--json").stdout)
    assert embed["endpoints"] == {"/v1/embeddings": 4}
    model = embed["models"]["text-embedding-3-small"]
    # A token per 4 characters of each text; an embedding has no output.
    assert model["input_tokens"] == sum(-(-len(t) // 4) for t in TITLES)
    assert model["max_output_tokens"] == 0 and model["max_output_cost"] == 0

    answer = json.loads(plan(tmp_path, "--step", "answer", "--json").stdout)
    assert answer["endpoints"] == {"/v1/responses": 4}
    system = "You answer in one sentence."
    chars = sum(len(system) + len(f"Headline: {t}") for t in TITLES)
    m = answer["models"]["gpt-4o-mini"]
    assert (
        m["input_tokens"] == sum(-(-(len(system) + len(f"Headline: {t}")) // 4) + 4 for t in TITLES)
        and chars
    )
    assert m["max_output_tokens"] == 4 * 40
    text = plan(tmp_path, "--step", "answer").stdout
    assert "to /v1/responses" in text and "output tokens, at most" in text

    over = plan(tmp_path, "--step", "answer", "--max-cost", "0.00001")
    assert over.returncode != 0 and over.stderr.count("\n") == 1
    assert "over MAX_COST $0.000010" in over.stderr
    assert plan(tmp_path, "--step", "answer", "--max-cost", "1").returncode == 0
    bad = plan(tmp_path, "--step", "answer", "--max-cost", "lots")
    assert bad.returncode != 0 and "MAX_COST must be a number" in bad.stderr

    # No output price: fine for embeddings (above), one line for a step that writes output.
    setup(tmp_path, CONFIG.replace("output: 0.30}", "}"))
    unpriced = plan(tmp_path, "--step", "answer")
    assert unpriced.returncode != 0 and unpriced.stderr.count("\n") == 1
    assert "prices: gpt-4o-mini has no output price" in unpriced.stderr


def test_cost_check_from_built_requests(tmp_path: Path) -> None:
    """The check make runs before the first upload reads requests.jsonl, less answers/."""
    setup(tmp_path)
    requests = tmp_path / "requests.jsonl"
    subprocess.run(
        [
            PYTHON,
            str(ROOT / "scripts" / "make_requests.py"),
            "--input",
            str(tmp_path / "news.json"),
            "--config",
            str(tmp_path / "config.yaml"),
            "--step",
            "answer",
            "-o",
            str(requests),
            "--skipped",
            str(tmp_path / "skipped.jsonl"),
        ],
        check=True,
        capture_output=True,
    )
    full = plan(tmp_path, "--step", "answer", "--json")
    cost = json.loads(full.stdout)["models"]["gpt-4o-mini"]
    estimate = cost["input_cost"] + cost["max_output_cost"]
    check = ["--step", "answer", "--requests", str(requests), "--answers", str(tmp_path / "ans")]
    low = plan(tmp_path, *check, "--max-cost", f"{estimate * 0.99:.9f}")
    assert low.returncode != 0 and "over MAX_COST" in low.stderr and not low.stdout
    high = plan(tmp_path, *check, "--max-cost", f"{estimate * 1.01:.9f}")
    assert high.returncode == 0 and "within MAX_COST" in high.stderr
    assert plan(tmp_path, *check, "--max-cost", "").returncode == 0  # no cap: nothing to check


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("endpoint: /v1/images\n  user: x", "endpoint '/v1/images' is not one of"),
        (
            "endpoint: /v1/responses\n  user: x\n  max_tokens: 8",
            "below the Responses API's minimum of 16",
        ),
        (
            "endpoint: /v1/responses\n  user: x\n  body: {max_output_tokens: 10}",
            "below the Responses API's minimum of 16",
        ),
        ("endpoint: /v1/responses\n  user: x\n  max_tokens: true", "a whole number"),
        ("endpoint: /v1/embeddings\n  user: x\n  system: s", "'system' makes no sense"),
        ("endpoint: /v1/embeddings\n  user: x\n  temperature: 0", "'temperature' makes no sense"),
        ("endpoint: /v1/embeddings\n  user: x\n  dimensions: 0", "dimensions must be a positive"),
        ("endpoint: /v1/embeddings\n  user: x\n  encoding_format: hex", "float or base64"),
        ("endpoint: /v1/embeddings\n  user: x\n  body: {seed: 1}", "'seed' is not an embeddings"),
        ("endpoint: /v1/responses\n  user: x\n  seed: 1", "'seed' makes no sense"),
        ("endpoint: /v1/responses\n  user: x\n  dimensions: 8", "'dimensions' makes no sense"),
        ("user: x\n  dimensions: 8", "'dimensions' makes no sense with endpoint /v1/chat"),
    ],
)
def test_keys_that_make_no_sense_are_refused(tmp_path: Path, step: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: m\ns:\n  {step}\n")
    with pytest.raises(UserError) as e:
        load_config(cfg).step("s")
    assert message in str(e.value) and "\n" not in str(e.value)
