"""Images through the real make: local files inline, a changed file sent again, the preflight.

Runs `make caption` against the emulator with local images of several formats (made with
Pillow) and image URLs served by a real HTTP server started by the test.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Emulator, make
from PIL import Image
from test_images import ImageServer, base, make_pictures, serve


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    return make_pictures(tmp_path)


@pytest.fixture
def server() -> Iterator[ImageServer]:
    yield from serve()


CAPTION = """\
model: gpt-4o-mini
caption:
  user: "Describe {title}."
  image_key: image_path
  image_detail: low
  image_max_side: 512
  response_key: caption
"""


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_make_caption_sends_local_images_inline_and_resends_a_changed_one(
    emulator: Emulator, server: ImageServer, pictures: Path, tmp_path: Path
) -> None:
    names = ["photo.png", "photo.jpg", "photo.webp", "still.gif", "really-a-jpeg.png"]
    records = [{"image_path": f"img/{n}", "title": f"picture {i}"} for i, n in enumerate(names)]
    records += [
        {"image_path": "img/animated.gif", "title": "skipped: animated"},
        {"image_path": "img/notes.jpg", "title": "skipped: text"},
        {"image_path": "img/gone.png", "title": "skipped: missing"},
        {"image_path": f"{base(server)}/ok.png", "title": "remote, fine"},
        {"image_path": f"{base(server)}/403.png", "title": "skipped: private"},
    ]
    data = pictures / "photos.json"
    data.write_text(json.dumps(records))
    config = tmp_path / "images.yaml"
    config.write_text(CAPTION)
    build = tmp_path / "build"
    env = emulator.env(PREFLIGHT="1")
    where = {"BUILD": build, "INPUT": data, "CONFIG": config, "STEP": "caption"}
    # The plan: the local files' verdicts, the URLs not checked yet, images by detail (low).
    plan = make("plan", env=env, **where).stdout
    assert "skipped (their image)          3 (1 an animated GIF, 1 not an image" in plan
    assert "image URLs not checked yet     2" in plan
    assert "images 595 for 7 image(s)" in plan  # 7 x 85: 5 local, 2 remote
    assert not build.exists() or not list(build.glob("*/caption/requests.jsonl"))
    run = make("caption", env=env, **where)
    b = next(build.glob("photos*/caption"))

    assert emulator.stats()["requests_processed"] == 6
    skipped = {row["custom_id"]: row["reason"] for row in lines_of(b / "skipped.jsonl")}
    assert skipped == {
        "img/animated.gif": "image_path: img/animated.gif: an animated GIF; the API takes only "
        "still GIFs (send one frame as PNG)",
        "img/notes.jpg": "image_path: img/notes.jpg: not an image, not PNG, JPEG, WebP or GIF; "
        "convert it",
        "img/gone.png": "image_path: img/gone.png: file not found",
        f"{base(server)}/403.png": "image_path: HTTP 403",
    }
    assert "preflight: 2 image URL(s): 1 passed, 1 failed (1 HTTP 403)" in run.stderr
    assert server.hits["HEAD /ok.png"] == 1 and server.hits["GET /403.png"] == 1
    plan = make("plan", env=env, **where).stdout  # now the preflight's verdict is known
    assert "skipped (their image)          4 (" in plan and "1 HTTP 403" in plan
    assert "not checked yet" not in plan
    # make preflight: the same check on its own, failures listed; the gallery shows reasons.
    alone = make("preflight", env=env, **where)
    assert lines_of(b / "preflight.jsonl") == [
        {"custom_id": f"{base(server)}/403.png", "url": f"{base(server)}/403.png",
         "reason": "image_path: HTTP 403"}
    ]  # fmt: skip
    assert "1 passed (1 within 24 h, from the cache), 1 failed (1 HTTP 403)" in alone.stderr
    make("gallery", env=env, **where)
    gallery = (b / "gallery.html").read_text()
    assert "image_path: HTTP 403" in gallery and "img/gone.png: file not found" in gallery
    merged = json.loads((b / "merged.json").read_text())
    answered = [r["image_path"] for r in merged if "caption" in r]
    assert answered == [r["image_path"] for r in records if "skipped" not in r["title"]]

    # requests.jsonl holds references; the chunk holds the bytes, resized where asked.
    requests = (b / "requests.jsonl").read_text()
    assert "base64" not in requests and requests.count("br-image:") == 5
    chunk = lines_of(b / "chunk_001.jsonl")
    urls = {r["custom_id"]: r["body"]["messages"][0]["content"][1]["image_url"]["url"]
            for r in chunk}  # fmt: skip
    assert urls["img/really-a-jpeg.png"].startswith("data:image/jpeg;base64,")
    big = Image.open(io.BytesIO(base64.b64decode(urls["img/photo.jpg"].split(",")[1])))
    assert big.size == (512, 384)
    png = base64.b64decode(urls["img/photo.png"].split(",")[1])
    assert png == (pictures / "img" / "photo.png").read_bytes()  # fits: sent byte for byte

    # Rerun: nothing is sent; the URL that failed is checked again, the one that passed not.
    make("caption", env=env, **where)
    assert emulator.stats()["requests_processed"] == 6
    assert server.hits["HEAD /ok.png"] == 1 and server.hits["GET /403.png"] == 3
    # Change one image: exactly that request is sent again.
    Image.new("RGB", (300, 200), (1, 2, 3)).save(pictures / "img" / "photo.png")
    make("caption", env=env, **where)
    assert emulator.stats()["requests_processed"] == 7
    assert len(emulator.batches()) == 2
    resent = lines_of(next(b.glob("chunk_*.jsonl")))
    assert [r["custom_id"] for r in resent] == ["img/photo.png"]

    # Without the preflight, the private URL is sent (the emulator does not fetch it).
    make("caption", env=emulator.env(PREFLIGHT="0"), **where)
    assert emulator.stats()["requests_processed"] == 8


PIPELINE = """\
model: gpt-4o-mini
pipeline: [first, second]
first:
  user: "Describe {title}."
  image_key: image_path
  image_max_side: 256
  response_key: first
second:
  user: "Once more: {title}."
  image_key: image_path
  image_detail: high
  response_key: second
"""


def test_a_pipeline_of_local_images_in_chunks_no_bigger_than_max_bytes(
    emulator: Emulator, pictures: Path, tmp_path: Path
) -> None:
    names = ["photo.png", "photo.jpg", "photo.webp", "still.gif", "really-a-jpeg.png"]
    records = [{"image_path": f"img/{n}", "title": f"picture {i}"} for i, n in enumerate(names)]
    data = pictures / "photos.json"
    data.write_text(json.dumps(records))
    config = tmp_path / "pipeline.yaml"
    config.write_text(PIPELINE)
    build = tmp_path / "build"
    sizes = [(pictures / "img" / n).stat().st_size for n in names]
    # The biggest image (the JPEG, sent unresized by the second step) fits inline with its
    # prompt, and nothing else fits beside it.
    max_bytes = max(sizes) * 4 // 3 + 2000
    make("pipeline", env=emulator.env(), BUILD=build, INPUT=data, CONFIG=config,
         MAX_BYTES=max_bytes)  # fmt: skip

    second = next(build.glob("photos*/pipeline/02-second"))
    chunks = sorted(second.glob("chunk_*.jsonl"))
    assert len(chunks) >= 3 and all(c.stat().st_size <= max_bytes for c in chunks)
    # The second step read the first one's output from build/, and still found the images
    # (relative to the original dataset's folder).
    assert not (second / "skipped.jsonl").read_text()
    merged = json.loads((second / "merged.json").read_text())
    assert all("first" in r and "second" in r for r in merged) and len(merged) == 5
    assert emulator.stats()["requests_processed"] == 10
    first = next(build.glob("photos*/pipeline/01-first"))
    cached = sorted(p.suffix for p in (first / "images").iterdir())
    assert cached == [".jpg", ".png", ".sqlite", ".webp"]  # the three resized; GIF, JPEG fit


RESPONSES = """\
model: gpt-4o-mini
look:
  endpoint: /v1/responses
  system: You describe pictures.
  user: "Describe {title}."
  image_key: image_path
  image_max_side: 512
  response_key: caption
"""


def test_a_responses_step_sends_local_images_inline_and_merges_each_answer(
    emulator: Emulator, pictures: Path, tmp_path: Path
) -> None:
    names = ["photo.png", "photo.jpg", "still.gif"]
    records = [{"image_path": f"img/{n}", "title": f"picture {i}"} for i, n in enumerate(names)]
    data = pictures / "photos.json"
    data.write_text(json.dumps(records))
    config = tmp_path / "responses.yaml"
    config.write_text(RESPONSES)
    where = {"BUILD": tmp_path / "build", "INPUT": data, "CONFIG": config, "STEP": "look"}
    make("caption", env=emulator.env(), **where)
    b = next((tmp_path / "build").glob("photos*/look"))
    # requests.jsonl holds references, the chunk the bytes (resized where asked), as input_image.
    assert "base64" not in (b / "requests.jsonl").read_text()
    chunk = {r["custom_id"]: r["body"] for r in lines_of(b / "chunk_001.jsonl")}
    part = chunk["img/photo.jpg"]["input"][0]["content"][1]
    assert part["type"] == "input_image" and part["image_url"].startswith("data:image/jpeg;")
    big = Image.open(io.BytesIO(base64.b64decode(part["image_url"].split(",")[1])))
    assert big.size == (512, 384)
    # Every answer found its record (matched by the request's hash, images included).
    merged = json.loads((b / "merged.json").read_text())
    assert [r.get("caption", "")[:15] for r in merged] == ["Emulated answer"] * 3
    assert all(r["title"] in r["caption"] for r in merged)
    assert not (b / "errors.jsonl").read_text()
    # The rerun sends nothing; a changed image is sent again, alone.
    make("caption", env=emulator.env(), **where)
    assert emulator.stats()["requests_processed"] == 3
    Image.new("RGB", (300, 200), (1, 2, 3)).save(pictures / "img" / "photo.png")
    make("caption", env=emulator.env(), **where)
    assert emulator.stats()["requests_processed"] == 4
    resent = lines_of(next(b.glob("chunk_*.jsonl")))
    assert [r["custom_id"] for r in resent] == ["img/photo.png"]
