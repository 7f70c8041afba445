"""Seeing the work: `make plan` (no API), `make report` and `make gallery` (on the emulator), and
the gallery rendered in headless Chromium.

The browser test needs Debian's `chromium` (`.ci/run` installs it) and skips, saying so, without
it. UPDATE_SCREENSHOT=1 makes it save its screenshot to docs/gallery.png for the README.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import gallery
import make_requests
import plan
import pytest
import report
from br.cli import run
from br.prompts.tokens import estimate_tokens
from conftest import ROOT, Emulator, input_dir, make, read_json, write_json

EXAMPLE = read_json(ROOT / "data" / "example.json")
CONFIG = ROOT / "configs" / "example.yaml"
PRICE = {"input": 0.075, "cached_input": 0.0375, "output": 0.30}  # gpt-4o-mini in the config


def no_api_env() -> dict[str, str]:
    """The environment without any OpenAI variable: plan must not need a key."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MAKE"))}


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """plan.py --json, run in this process (the make runs show the target works)."""
    capsys.readouterr()
    assert plan.main(["--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def requests_of(tmp_path: Path, data: Path, step: str) -> list[Any]:
    """What make_requests.py writes for the step (into tmp_path, not build/)."""
    out = tmp_path / f"requests-{step}.jsonl"
    argv = ["--input", str(data), "--config", str(CONFIG), "--step", step, "-o", str(out)]
    assert make_requests.main([*argv, "--skipped", str(tmp_path / "skipped.jsonl")]) == 0
    return read_json(out)


# --------------------------------------------------------------------------- plan


def test_plan_counts_the_example_without_a_key_or_build_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = tmp_path / "build"
    out = make("plan", env=no_api_env(), BUILD=build, STEP="article_filter", MAX_REQUESTS=5)
    text = out.stdout
    assert re.search(r"records in the input\s+12\n", text), text
    assert re.search(r"skipped \(missing fields\)\s+1 \(1 missing article\)", text), text
    assert re.search(r"requests to send\s+11\n", text), text
    assert re.search(r"chunks \(batches\)\s+3 ", text), text
    assert "no price" not in text and "not selected" not in text
    assert not build.exists(), "make plan must not write into build/"

    s = plan_json(
        capsys,
        *("--input", "data/example.json", "--config", str(CONFIG), "--step", "article_filter"),
        *("--max-requests", "5"),
    )
    requests = requests_of(tmp_path, ROOT / "data" / "example.json", "article_filter")
    lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in requests]
    tokens = sum(estimate_tokens(r["body"]) for r in requests)
    assert (s["records"], s["requests"], s["skipped"], s["not_selected"]) == (12, 11, 1, 0)
    assert s["skipped_by_field"] == {"article": 1}
    assert s["chunks"] == math.ceil(11 / 5) == 3
    assert s["bytes"] == sum(len(line.encode()) for line in lines)
    m = s["models"]["gpt-4o-mini"]
    assert m["input_tokens"] == m["text_tokens"] == tokens and m["image_tokens"] == 0
    assert m["max_output_tokens"] is None  # article_filter sets no max_tokens: no bound
    assert m["input_cost"] == pytest.approx(tokens * PRICE["input"] / 1e6)
    assert f"${tokens * PRICE['input'] / 1e6:.6f}" in text


def test_plan_where_images_output_bound_and_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Three records the filter dropped are not selected by the caption step's where:.
    records = [
        {**r, "article_filter": {"keep": i not in (0, 1, 3), "reason": "test"}}
        for i, r in enumerate(EXAMPLE)
    ]
    data = write_json(tmp_path / "filtered.json", records)
    out = make("plan", env=no_api_env(), BUILD=tmp_path / "build", INPUT=data, STEP="caption")
    assert re.search(r"not selected by where:\s+3\n", out.stdout), out.stdout
    assert "at most" in out.stdout and "(max_tokens)" in out.stdout

    s = plan_json(capsys, "--input", str(data), "--config", str(CONFIG), "--step", "caption")
    requests = requests_of(tmp_path, data, "caption")
    assert (s["records"], s["not_selected"], s["skipped"], s["requests"]) == (12, 3, 1, 8)
    assert len(requests) == 8 and s["skipped_by_field"] == {"caption": 1}
    m = s["models"]["gpt-4o-mini"]
    assert m["images"] == 8 and m["image_tokens"] == 8 * 85
    assert m["input_tokens"] == sum(estimate_tokens(r["body"]) for r in requests)
    assert m["max_output_tokens"] == 8 * 300  # max_tokens: 300, an upper bound
    assert m["max_output_cost"] == pytest.approx(2400 * PRICE["output"] / 1e6)
    total = m["input_cost"] + m["max_output_cost"]
    assert re.search(r"total cost, at most\s+\$" + re.escape(f"{total:.6f}"), out.stdout)


def test_plan_unknown_model_and_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "model: gpt-9-imaginary\nprices:\n  gpt-4o-mini: {input: 1, output: 2}\n"
        "describe:\n  user: 'Describe {title}'\n  is_multimodal: false\n  response_key: d\n"
    )
    out = make("plan", env=no_api_env(), BUILD=tmp_path / "b", CONFIG=config, STEP="describe")
    assert "no price for model gpt-9-imaginary in the config's prices:" in out.stdout
    assert "$" not in out.stdout  # no guessed cost

    # Through make: a missing input is one line from plan.py (make does not check it first).
    r = make("plan", env=no_api_env(), check=False, BUILD=tmp_path / "b", INPUT=tmp_path / "x.json")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1].startswith("make: ***")
    assert re.search(r"^error: input file \S+x.json does not exist", r.stderr, re.M)

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    base = ["--input", "data/example.json", "--config", str(CONFIG), "--step", "caption"]
    cases = [
        (["--config", str(bad)], "is not valid YAML"),
        (["--step", "nosuchstep"], "has no step 'nosuchstep'"),
        (["--max-requests", "0"], "MAX_REQUESTS must be 1 to 50000"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert run(plan.main, base + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- report


def example_with_failures(tmp_path: Path) -> Path:
    records = [dict(r) for r in EXAMPLE]
    records[2]["caption"] += " EMULATOR_ERROR:context_length_exceeded"  # permanent
    records[4]["caption"] += " EMULATOR_ERROR:500"  # retryable: retried, fails again
    return write_json(tmp_path / "data" / "news.json", records)


def test_report_matches_results_and_the_emulators_batches(
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = example_with_failures(tmp_path)
    build = tmp_path / "build"
    env, b = emulator.env(), input_dir(build, data) / "caption"
    make("-j3", "caption", env=env, BUILD=build, INPUT=data, MAX_REQUESTS=5, RETRIES=1)
    out = make("report", env=env, BUILD=build, INPUT=data, MAX_REQUESTS=5, RETRIES=1)
    rep = read_json(b / "report.json")
    total = rep["total"]

    rows = [row for cid in ("001", "002", "003") for row in read_json(b / f"results_{cid}.jsonl")]
    assert [c["chunk"] for c in rep["chunks"]] == ["001", "002", "003"]
    assert (total["requests"], total["succeeded"], total["failed"]) == (11, 9, 2)
    assert total["failed_by_reason"] == {"context_length_exceeded": 1, "server_error": 1}
    assert total["retried"] == 1 == sum(r["attempts"] > 1 for r in rows)
    assert total["skipped_records"] == 1 and total["reused_answers"] == 0
    used = {
        "input": sum(r["usage"]["prompt_tokens"] for r in rows if r["usage"]),
        "cached": sum(
            r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in rows if r["usage"]
        ),
        "output": sum(r["usage"]["completion_tokens"] for r in rows if r["usage"]),
    }
    assert total["tokens_from_responses"] == used and used["input"] > 0

    # Chunk 001 holds both failures: its first batch and one retry batch; the others one each.
    batches = emulator.batches()
    assert total["batches"] == len(batches) == 4
    assert [len(c["batches"]) for c in rep["chunks"]] == [2, 1, 1]
    assert rep["chunks"][0]["batches"][1]["id"] == (b / "retry_001_1.id").read_text().strip()
    billed = {
        "input": sum(x.usage.input_tokens for x in batches),
        "cached": sum(x.usage.input_tokens_details.cached_tokens for x in batches),
        "output": sum(x.usage.output_tokens for x in batches),
    }
    assert total["tokens_from_batches"] == billed
    expected = (
        (billed["input"] - billed["cached"]) * PRICE["input"]
        + billed["cached"] * PRICE["cached_input"]
        + billed["output"] * PRICE["output"]
    ) / 1e6
    assert total["cost_usd"] == pytest.approx(expected)
    first = min(x.created_at for x in batches)
    last = max(x.completed_at for x in batches)
    assert total["wall_seconds"] == last - first >= 0
    for chunk in rep["chunks"]:
        assert chunk["wall_seconds"] is not None and chunk["cost_basis"] == "batches"

    # The table: a row per chunk and a total, with the reasons spelled out.
    table = out.stdout
    assert re.search(r"^001\s+5\s+3\s+2\s+1\s+2\s", table, re.M), table
    assert re.search(r"^total\s+11\s+9\s+2\s+1\s+4\s", table, re.M), table
    assert "1 context_length_exceeded, 1 server_error" in table

    # Planning again with the answers kept: only the retryable failure would be sent again.
    again = plan_json(
        capsys,
        *("--input", str(data), "--config", str(CONFIG), "--step", "caption"),
        *("--answers", str(b / "answers")),
    )
    assert (again["reused_answers"], again["requests"], again["chunks"]) == (10, 1, 1)

    # A rerun (nothing changed on the server) leaves report.json as it was.
    before = (b / "report.json").stat()
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.setenv(name, env[name])
    assert (
        report.main(["--dir", str(b), "--config", str(CONFIG), "-o", str(b / "report.json")]) == 0
    )
    after = (b / "report.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# --------------------------------------------------------------------------- gallery

EVIL = "<script>alert('x')</script> & <b>bold</b>"


def gallery_dataset(tmp_path: Path, extra: int = 108) -> Path:
    """The example (one failure marked, one title with HTML in it) plus `extra` records, each with
    its own local image, so the gallery has two pages of 100."""
    folder = tmp_path / "data"
    shutil.copytree(ROOT / "data" / "images", folder / "images")
    records = [dict(r) for r in EXAMPLE]
    records[2]["caption"] += " EMULATOR_ERROR:context_length_exceeded"
    records[7]["title"] = EVIL
    pngs = sorted((folder / "images").glob("*.png"))
    for i in range(extra):
        name = f"images/extra-{i:03d}.png"
        shutil.copy(pngs[i % len(pngs)], folder / name)
        records.append(
            {
                "image_path": name,
                "image_url": f"https://img.invalid/{i}.jpg",
                "title": f"Extra story {i:03d}",
                "caption": f"Extra caption {i:03d}.",
            }
        )
    return write_json(folder / "news.json", records)


def build_gallery(emulator: Emulator, tmp_path: Path, *extra_args: str) -> tuple[Path, Path]:
    data = gallery_dataset(tmp_path)
    build = tmp_path / "build"
    b = input_dir(build, data) / "caption"
    make("caption", "gallery", env=emulator.env(), BUILD=build, INPUT=data)
    assert (b / "gallery.html").exists()
    # The Makefile's call, plus where the dataset is (its image paths are relative to it).
    argv = ["--dir", str(b), "--merged", str(b / "merged.json"), "--config", str(CONFIG)]
    argv += ["--step", "caption", "--input", str(data), "--data-key", "image_path"]
    assert gallery.main([*argv, *extra_args, "-o", str(b / "gallery.html")]) == 0
    return b / "gallery.html", data


CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
)


def chromium(tmp_path: Path, url: str, *args: str) -> str:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def embedded(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1))


def test_gallery_file_then_headless_chromium(emulator: Emulator, tmp_path: Path) -> None:
    """The gallery's data and markup; then the page as Chromium renders it (if installed)."""
    page_path, data = build_gallery(emulator, tmp_path)
    page = page_path.read_text()
    d = embedded(page)
    records = d["records"]
    assert len(records) == 12 + 108 and d["per_page"] == 100
    assert d["counts"] == {"answered": 118, "failed": 1, "skipped": 1, "not_selected": 0}
    failed = next(r for r in records if r["status"] == "failed")
    assert failed["id"] == "images/mrt-line.png"
    assert failed["error"]["code"] == "context_length_exceeded"
    skipped = next(r for r in records if r["status"] == "skipped")
    assert skipped["id"] == "images/chart-gdp.png" and skipped["why"] == "missing caption"
    first = records[0]
    assert first["fields"] == {"title": EXAMPLE[0]["title"], "caption": EXAMPLE[0]["caption"]}
    assert (
        first["response"]["value"]
        == read_json(page_path.parent / "merged.json")[0]["generated_caption"]
    )
    # Local images are embedded: the page works from a file:// URL, offline, anywhere.
    png = (data.parent / "images" / "harbour-cranes.png").read_bytes()
    assert first["img"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert all(r["local"] and r["img"].startswith("data:image/png") for r in records)
    # No CDN or remote script or style; the HTML in the data never appears as markup.
    assert not re.search(r'<(script|link)[^>]+(src|href)=["\']?https?:', page)
    assert "<script>alert" not in page and "<b>bold" not in page
    assert records[7]["fields"]["title"] == EVIL
    assert html.escape(EVIL) not in page  # JSON-escaped, not HTML-escaped twice

    # Linked instead of embedded: relative paths from the HTML to the files.
    linked = page_path.with_name("gallery-linked.html")
    argv = ["--dir", str(page_path.parent), "--merged", str(page_path.parent / "merged.json")]
    argv += ["--config", str(CONFIG), "--step", "caption", "--input", str(data)]
    assert gallery.main([*argv, "--images", "link", "-o", str(linked)]) == 0
    for r in embedded(linked.read_text())["records"]:
        assert not r["img"].startswith(("data:", "/")) and (linked.parent / r["img"]).is_file()

    if CHROMIUM is None:
        pytest.skip(
            "the gallery file checks passed; the browser part needs headless Chromium, which is "
            "not installed (apt-get install chromium; .ci/run does it)"
        )
    check_in_browser(page_path, linked, tmp_path)


def check_in_browser(page_path: Path, linked: Path, tmp_path: Path) -> None:
    url = page_path.resolve().as_uri()
    update = os.environ.get("UPDATE_SCREENSHOT") == "1"
    shot = ROOT / "docs" / "gallery.png" if update else tmp_path / "gallery.png"
    shot.parent.mkdir(exist_ok=True)
    # One launch: the DOM after the script ran and the images loaded, and a screenshot.
    dom = chromium(tmp_path, url, "--dump-dom", f"--screenshot={shot}", "--window-size=1280,900")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    cards = re.findall(r'<article class="card (\w+)" data-status="\w+" data-index="(\d+)"', dom)
    assert len(cards) == 100 and [int(i) for _, i in cards] == list(range(100))
    assert re.search(r'<body data-page="1" data-pages="2" data-filter="all"', dom)
    assert "page 1 of 2 (1–100 of 120)" in dom
    images = re.findall(r"<img [^>]*>", dom)
    assert len(images) == 100
    assert all('src="data:image/png;base64,' in i and 'data-loaded="yes"' in i for i in images)
    assert dict(cards)["failed"] == "2" and "context_length_exceeded: " in dom
    assert dict(cards)["skipped"] == "5" and "missing caption" in dom
    # The title with HTML in it is shown as text, never run or parsed as markup.
    assert "&lt;script&gt;alert('x')&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in dom
    assert "<b>bold</b>" not in dom
    assert "answered (118)" in dom and "failed (1)" in dom and "skipped (1)" in dom

    page2 = chromium(tmp_path, url + "#page=2", "--dump-dom")
    indexes = [int(i) for i in re.findall(r'<article [^>]*data-index="(\d+)"', page2)]
    assert indexes == list(range(100, 120)) and "page 2 of 2 (101–120 of 120)" in page2

    # The failed filter, on the page whose images are linked by relative path: they load too.
    failed = chromium(tmp_path, linked.resolve().as_uri() + "#filter=failed", "--dump-dom")
    assert re.findall(r'<article class="card (\w+)"', failed) == ["failed"]
    images = re.findall(r"<img [^>]*>", failed)
    assert len(images) == 1 and 'src="../../../data/images/mrt-line.png"' in images[0]
    assert 'data-loaded="yes"' in images[0]
