"""Images: local files sniffed, resized and sent inline; remote URLs checked before paying.

Local images of several formats and sizes are made with Pillow in tmp_path; the preflight runs
against a real HTTP server started by the test, which answers 200, 403, 404, a wrong content
type, a refused HEAD, a too-large body and a slow response.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from br import limits
from br.cli import UserError
from br.prompts import tokens
from br.prompts.images import cache as image_cache
from br.prompts.images import identity
from br.prompts.images.cache import LocalImages, stamp
from br.prompts.images.formats import ImageOptions, ImageSkip
from br.prompts.preflight import Preflight, check_url
from conftest import PYTHON, ROOT
from PIL import Image


def save(path: Path, size: tuple[int, int], fmt: str, **kw: Any) -> Path:
    img = Image.new("RGB", size, (200, 120, 40))
    for x in range(0, size[0], 7):  # some detail, so encoders have work to do
        for y in range(0, size[1], 11):
            img.putpixel((x, y), (x % 256, y % 256, (x * y) % 256))
    img.save(path, fmt, **kw)
    return path


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    return make_pictures(tmp_path)


def make_pictures(tmp_path: Path) -> Path:
    """A dataset folder with images of several formats and sizes under img/."""
    d = tmp_path / "data"
    (d / "img").mkdir(parents=True)
    save(d / "img" / "photo.png", (300, 200), "PNG")
    save(d / "img" / "photo.jpg", (1600, 1200), "JPEG", quality=90)
    save(d / "img" / "photo.webp", (640, 480), "WEBP")
    save(d / "img" / "still.gif", (64, 48), "GIF")
    save(d / "img" / "big.gif", (200, 150), "GIF")
    save(d / "img" / "really-a-jpeg.png", (120, 80), "JPEG")
    save(d / "img" / "old.bmp", (10, 10), "BMP")
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(d / "img" / "animated.gif", save_all=True, append_images=frames[1:])
    (d / "img" / "notes.jpg").write_text("not a picture\n")
    (d / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return d


def resolve(local: LocalImages, value: str) -> image_cache.Resolved | str:
    try:
        return local.resolve(value)
    except ImageSkip as e:
        return str(e)


def test_local_images_are_sniffed_from_their_bytes_and_the_rest_skipped(pictures: Path) -> None:
    local = LocalImages(pictures, ImageOptions(), pictures.parent / "cache", field="image_path")
    got = {
        name: resolve(local, f"img/{name}")
        for name in ("photo.png", "photo.jpg", "photo.webp", "still.gif", "really-a-jpeg.png")
    }
    assert {k: v.mime for k, v in got.items()} == {  # type: ignore[union-attr]
        "photo.png": "image/png",
        "photo.jpg": "image/jpeg",
        "photo.webp": "image/webp",
        "still.gif": "image/gif",
        "really-a-jpeg.png": "image/jpeg",  # the bytes decide, not the name
    }
    assert (got["photo.jpg"].width, got["photo.jpg"].height) == (1600, 1200)  # type: ignore[union-attr]
    # The marker, once materialised for a chunk, is the file's own bytes as a data URL.
    line = json.dumps({"body": {"url": got["really-a-jpeg.png"].url}})  # type: ignore[union-attr]
    url = json.loads(identity.materialise(line))["body"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    raw = (pictures / "img" / "really-a-jpeg.png").read_bytes()
    assert base64.b64decode(url.split(",", 1)[1]) == raw
    assert identity.materialised_size(line) == len(identity.materialise(line).encode())

    skipped = {
        name: resolve(local, f"img/{name}")
        for name in ("animated.gif", "notes.jpg", "old.bmp", "broken.png", "nope.png")
    }
    assert skipped["animated.gif"].startswith("image_path: img/animated.gif: an animated GIF")
    assert skipped["notes.jpg"] == (
        "image_path: img/notes.jpg: not an image, not PNG, JPEG, WebP or GIF; convert it"
    )
    assert skipped["old.bmp"].startswith("image_path: img/old.bmp: a BMP file, not PNG")
    assert skipped["broken.png"].startswith("image_path: img/broken.png: corrupt PNG data")
    assert skipped["nope.png"] == "image_path: img/nope.png: file not found"
    assert resolve(local, str(pictures / "img" / "photo.png")).mime == "image/png"  # type: ignore[union-attr]
    assert resolve(local, "ftp://example.org/a.png").startswith(  # type: ignore[union-attr]
        "image_path: unsupported URL scheme 'ftp'"
    )
    remote = "https://example.org/a.jpg"
    assert resolve(local, remote) == image_cache.Resolved(url=remote)
    # A data URL in the dataset is sent as it is, once its bytes are checked like a file's.
    jpeg = (pictures / "img" / "really-a-jpeg.png").read_bytes()
    inline = identity.data_url("image/jpeg", jpeg)
    assert resolve(local, inline).url == inline  # type: ignore[union-attr]
    assert resolve(local, identity.data_url("image/png", jpeg)) == (
        "image_path: data URL says 'image/png' but its bytes are image/jpeg; fix the type"
    )
    assert resolve(local, "data:image/png;base64,@@@").endswith("not a base64 data URL")
    local.close()


def test_resizing_shrinks_bytes_and_pixels_and_keeps_the_format(pictures: Path) -> None:
    cache = pictures.parent / "cache"
    with LocalImages(pictures, ImageOptions(max_side=512, quality=70), cache) as local:
        jpg = local.resolve("img/photo.jpg")
        png = local.resolve("img/photo.png")
        gif = local.resolve("img/still.gif")
        webp = local.resolve("img/photo.webp")
    before = (pictures / "img" / "photo.jpg").stat().st_size
    assert (jpg.mime, jpg.width, jpg.height) == ("image/jpeg", 512, 384)
    assert jpg.nbytes is not None and jpg.nbytes < before / 4
    assert (png.mime, png.width, png.height) == ("image/png", 300, 200)  # fits: untouched
    assert identity.Marker.parse(png.url).path == pictures / "img" / "photo.png"  # type: ignore[union-attr]
    assert (gif.mime, webp.mime, webp.width, webp.height) == ("image/gif", "image/webp", 512, 384)
    # The resized bytes are kept once, raw, in the content-addressed cache.
    marker = identity.Marker.parse(jpg.url)
    assert marker is not None and marker.path == cache / f"{jpg.sha256}.jpg"
    assert hashlib.sha256(marker.path.read_bytes()).hexdigest() == jpg.sha256
    names = {p.name for p in cache.iterdir()}
    assert names == {"index.sqlite", f"{jpg.sha256}.jpg", f"{webp.sha256}.webp"}

    # Other options: other bytes, and the file no build refers to any more is removed.
    with LocalImages(pictures, ImageOptions(max_side=100), cache) as local:
        again = local.resolve("img/photo.jpg")
        png_small = local.resolve("img/photo.png")
        gif_small = local.resolve("img/still.gif")
        gif_big = local.resolve("img/big.gif")
    assert (again.width, again.height) == (100, 75) and again.sha256 != jpg.sha256
    assert (png_small.mime, png_small.width) == ("image/png", 100)  # PNG stays PNG
    assert (gif_small.mime, gif_small.width) == ("image/gif", 64)  # fits: untouched
    assert (gif_big.mime, gif_big.width, gif_big.height) == ("image/png", 100, 75)
    names = {p.name for p in cache.iterdir()}
    assert f"{jpg.sha256}.jpg" not in names and f"{again.sha256}.jpg" in names


def test_resizing_applies_the_exif_orientation(tmp_path: Path) -> None:
    img = Image.new("RGB", (400, 200), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the photo is upright as 200 x 400
    img.save(tmp_path / "turned.jpg", "JPEG", exif=exif.tobytes())
    with LocalImages(tmp_path, ImageOptions(max_side=100), tmp_path / "cache") as local:
        got = local.resolve("turned.jpg")
    assert (got.width, got.height) == (50, 100)


def test_identity_covers_the_bytes_and_a_changed_file_is_caught(pictures: Path) -> None:
    cache = pictures.parent / "cache"
    path = pictures / "img" / "photo.png"
    with LocalImages(pictures, ImageOptions(), cache) as local:
        first = local.resolve("img/photo.png")
    inline = identity.data_url("image/png", path.read_bytes())
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}

    def canonical(url: str) -> Any:
        body["messages"][0]["content"][0]["image_url"] = {"url": url, "detail": "low"}
        return json.dumps(identity.canonical_body(body), sort_keys=True)

    assert canonical(first.url) == canonical(inline)  # requests.jsonl and its chunk hash alike
    assert f"sha256:{first.sha256}" in canonical(first.url)
    line = json.dumps({"body": {"url": first.url}})
    before = path.stat()
    # Same size, same mtime, other bytes: the index still notices (ctime), the marker no longer
    # matches the file, and materialising refuses to send other content.
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(UserError, match="changed since requests.jsonl was built"):
        identity.materialise(line)
    with LocalImages(pictures, ImageOptions(), cache) as local:
        second = local.resolve("img/photo.png")
    assert second.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != first.sha256
    assert canonical(second.url) != canonical(first.url)


def test_the_stamp_changes_when_an_indexed_image_does(pictures: Path) -> None:
    cache = pictures.parent / "cache"
    with LocalImages(pictures, ImageOptions(), cache) as local:
        local.resolve("img/photo.png")
        resolve(local, "img/later.png")
    first = stamp(cache)
    assert stamp(cache) == first
    save(pictures / "img" / "later.png", (20, 20), "PNG")  # a missing file appears
    second = stamp(cache)
    assert second != first and stamp(cache) == second
    failed = pictures.parent / "preflight.json"
    failed.write_text(json.dumps({"passed": {}, "failed": {"http://x/a.png": ["HTTP 404", 1]}}))
    assert stamp(cache, failed) != stamp(cache, failed)  # failures: check again
    failed.write_text(json.dumps({"passed": {"http://x/a.png": 1}, "failed": {}}))
    assert stamp(cache, failed) == second


def test_oversized_images_are_skipped_unless_resizing_brings_them_under(tmp_path: Path) -> None:
    noise = Image.frombytes("RGB", (2700, 2700), os.urandom(2700 * 2700 * 3))
    noise.save(tmp_path / "big.png", "PNG", compress_level=1)  # noise: about 21.9 MB
    size = (tmp_path / "big.png").stat().st_size
    assert size > limits.MAX_IMAGE_BYTES
    assert resolve(LocalImages(tmp_path, ImageOptions()), "big.png") == (
        f"image: big.png: {size / 1e6:.1f} MB, over the API's 20 MB image limit; "
        "set image_max_side to shrink it"
    )
    shrunk = LocalImages(tmp_path, ImageOptions(max_side=1000), tmp_path / "c").resolve("big.png")
    assert shrunk.nbytes is not None and shrunk.nbytes < limits.MAX_IMAGE_BYTES


def test_image_tokens_follow_the_published_rules(pictures: Path) -> None:
    assert tokens.image_tokens(1024, 1024, "high") == 765
    assert tokens.image_tokens(2048, 4096, "high") == 1105
    assert tokens.image_tokens(4000, 3000, "auto") == 765  # 2048x1536, then 1024x768: 4 tiles
    assert tokens.image_tokens(96, 64, None) == 255  # one tile; small images are not scaled up
    assert tokens.image_tokens(8000, 8000, "low") == 85
    png = LocalImages(pictures, ImageOptions()).resolve("img/photo.jpg")
    part = {"type": "image_url", "image_url": {"url": png.url, "detail": "high"}}
    assert tokens.part_tokens(part) == tokens.image_tokens(1600, 1200, "high") == 765
    inline = identity.data_url("image/jpeg", (pictures / "img" / "photo.jpg").read_bytes())
    assert tokens.part_tokens({"type": "image_url", "image_url": {"url": inline}}) == 765
    remote = {"type": "image_url", "image_url": {"url": "https://example.org/x.jpg"}}
    assert tokens.part_tokens(remote) == 1105  # the stated assumption: a 3:2 photo
    assert (
        tokens.part_tokens({**remote, "image_url": {**remote["image_url"], "detail": "low"}}) == 85
    )
    content = [{"type": "text", "text": "x"}, part, remote]
    assert tokens.body_images({"messages": [{"role": "user", "content": content}]}) == (2, 1870)


# ----------------------------------------------------------------------------- preflight

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00"
    b"\x00IEND\xaeB`\x82"
)


class ImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 16 checks connect at once: the default backlog of 5 drops SYNs
    hits: Counter[str]
    slow_seconds = 3.0


class Handler(http.server.BaseHTTPRequestHandler):
    server: ImageServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.answer(head=True)

    def do_GET(self) -> None:
        self.answer(head=False)

    def answer(self, head: bool) -> None:
        path = self.path.split("?")[0]
        self.server.hits[f"{self.command} {path}"] += 1
        status, ctype, body, length = 200, "image/png", PNG, None
        if path.startswith("/403"):
            status = 403
        elif path.startswith("/404"):
            status = 404
        elif path.startswith("/html"):
            ctype, body = "text/html; charset=utf-8", b"<!doctype html><p>log in</p>"
        elif path.startswith("/svg"):
            ctype, body = "image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'/>"
        elif path.startswith("/octet"):
            ctype = "application/octet-stream"
        elif path.startswith("/disguised"):
            ctype, body = "application/octet-stream", b"<html>not found</html>"
        elif path.startswith("/huge"):
            ctype, length = "image/jpeg", 25_000_000
        elif path.startswith("/nohead") and head:
            status = 405
        elif path.startswith("/slow"):
            time.sleep(self.server.slow_seconds)
        ranged = not head and "Range" in self.headers and status == 200 and length is None
        self.send_response(206 if ranged else status)
        self.send_header("Content-Type", ctype if status < 400 else "text/plain")
        if ranged:
            part = body[:1024]
            self.send_header("Content-Range", f"bytes 0-{len(part) - 1}/{len(body)}")
            body = part
        self.send_header("Content-Length", str(length or len(body)))
        self.end_headers()
        if not head and length is None:
            self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[ImageServer]:
    yield from serve()


def serve() -> Iterator[ImageServer]:
    """An image server on a free port, in a thread, until the generator is closed."""
    srv = ImageServer(("127.0.0.1", 0), Handler)
    srv.hits = Counter()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def base(srv: ImageServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_preflight_reasons(server: ImageServer) -> None:
    url = base(server)
    got = {p: check_url(f"{url}/{p}", timeout=0.5) for p in (
        "ok.png", "403.png", "404.png", "html", "svg", "octet.png", "disguised.png",
        "huge.jpg", "nohead.png", "slow.png",
    )}  # fmt: skip
    assert got == {
        "ok.png": None,
        "403.png": "HTTP 403",
        "404.png": "HTTP 404",
        "html": "content type text/html",
        "svg": "content type image/svg+xml, not PNG, JPEG, WebP or GIF",
        "octet.png": None,  # a generic type: the first bytes are a PNG
        "disguised.png": "content type application/octet-stream, but the bytes are HTML",
        "huge.jpg": "25.0 MB, over the API's 20 MB image limit",
        "nohead.png": None,  # HEAD refused: the ranged GET decides
        "slow.png": "timed out after 0.5s",
    }
    hits = server.hits
    assert hits["HEAD /ok.png"] == 1 and hits["GET /ok.png"] == 0  # HEAD alone suffices
    assert hits["HEAD /nohead.png"] == hits["GET /nohead.png"] == 1
    assert hits["GET /403.png"] == 1  # a HEAD 403 is confirmed with a GET (signed URLs)
    assert hits["GET /404.png"] == 0
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    assert check_url(f"http://127.0.0.1:{port}/gone.png", timeout=1).startswith("cannot connect")


def test_preflight_cache_spares_passed_urls_and_rechecks_failures(
    server: ImageServer, tmp_path: Path
) -> None:
    cache = tmp_path / "preflight.json"
    urls = [f"{base(server)}/ok.png?i={i}" for i in range(40)] + [f"{base(server)}/404.png"]
    first = Preflight(cache, field="image_url", timeout=2, workers=8)
    verdicts = first.check(urls + urls[:5])  # duplicates are checked once
    first.save()
    assert sum(v is None for v in verdicts.values()) == 40
    assert verdicts[urls[-1]] == "image_url: HTTP 404"
    assert server.hits["HEAD /ok.png"] == 40 and server.hits["HEAD /404.png"] == 1
    assert "41 image URL(s): 40 passed, 1 failed (1 HTTP 404)" in first.summary()
    saved = json.loads(cache.read_text())
    assert set(saved["passed"]) == set(urls[:40]) and saved["failed"][urls[-1]][0] == "HTTP 404"

    again = Preflight(cache, field="image_url", timeout=2)
    assert again.check(urls)[urls[-1]] == "image_url: HTTP 404"
    assert server.hits["HEAD /ok.png"] == 40  # not checked again
    assert server.hits["HEAD /404.png"] == 2  # failures always are
    assert "(40 within 24 h, from the cache)" in again.summary()

    expired = Preflight(cache, field="image_url", timeout=2, ttl=0)
    expired.check(urls[:3])
    assert server.hits["HEAD /ok.png"] == 43

    # Offline (make plan): what the cache knows, and nothing checked.
    offline = Preflight(cache, field="image_url", offline=True)
    later = [f"{base(server)}/ok.png?new"]
    verdicts = offline.check(urls + later)
    assert verdicts[urls[-1]] == "image_url: HTTP 404" and verdicts[later[0]] is None
    assert server.hits["HEAD /ok.png"] == 43 and server.hits["HEAD /404.png"] == 2
    assert "1 not checked yet" in offline.summary() and offline.counts["unchecked"] == 1


def test_preflight_filter_keeps_order_and_bounds_the_window(server: ImageServer) -> None:
    items = [{"n": i, "url": f"{base(server)}/{'404' if i % 3 == 0 else 'ok'}.png?{i}"}
             for i in range(25)]  # fmt: skip
    items.insert(4, {"n": -1, "url": None})
    out = list(Preflight(None).filter(items, lambda x: x["url"], window=4))
    assert [item["n"] for item, _ in out] == [item["n"] for item in items]
    assert [reason for item, reason in out if item["n"] == -1] == [None]
    failed = [item["n"] for item, reason in out if reason]
    assert failed == [i for i in range(25) if i % 3 == 0]


def test_preflight_command_line(server: ImageServer, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    rows = []
    for i, name in enumerate(["ok.png", "403.png", "html", "ok.png"]):
        content = [{"type": "text", "text": "x"}]
        content.append({"type": "image_url", "image_url": {"url": f"{base(server)}/{name}?{i}"}})
        body = {"model": "m", "messages": [{"role": "user", "content": content}]}
        rows.append({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                     "body": body})  # fmt: skip
    text = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    rows.append(
        {"custom_id": "text", "method": "POST", "url": "/v1/chat/completions", "body": text}
    )
    requests.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [PYTHON, str(ROOT / "scripts" / "preflight.py"), "--requests", str(requests)]
    cmd += ["--cache", str(tmp_path / "preflight.json"), "-o", str(tmp_path / "failed.jsonl")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    failed = [json.loads(line) for line in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert [(f["custom_id"], f["reason"]) for f in failed] == [
        ("r1", "image_url: HTTP 403"),
        ("r2", "image_url: content type text/html"),
    ]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("preflight: 4 image URL(s): 2 passed, 2 failed")
    missing = subprocess.run([*cmd[:2], "--requests", str(tmp_path / "nope.jsonl")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr
