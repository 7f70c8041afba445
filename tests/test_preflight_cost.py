"""The image preflight's cost is bounded and said up front.

A host that refuses connections or never answers is known after a handful of tries and its
other URLs fail at once, with a reason that says so; a host that answers (404s too) is still
checked URL by URL; `make plan` says how many URLs on how many hosts, and an upper bound on
the time. Real sockets throughout: the image server of test_images.py, a port nobody listens
on (connection refused), and a socket that accepts connections and never answers (each
accepted connection counted: attempts, not seconds, are asserted).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from br.prompts.preflight import Preflight, host_of
from conftest import PYTHON, ROOT, make
from test_images import ImageServer, base, serve

TIMEOUT = 0.3


class Silent:
    """A listening socket that accepts every connection, holds it and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    s = Silent()
    yield s
    s.close()


@pytest.fixture
def server() -> Iterator[ImageServer]:
    yield from serve()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    return port


def test_a_host_that_never_answers_is_given_up_after_a_handful_of_tries(silent: Silent) -> None:
    urls = [f"http://127.0.0.1:{silent.port}/img{i}.png" for i in range(40)]
    checker = Preflight(None, timeout=TIMEOUT)
    verdicts = checker.check(urls)
    assert silent.accepted <= 4  # not 40
    host = f"127.0.0.1:{silent.port}"
    given_up = f"image_url: host {host} unreachable (3 tries timed out; not checked again)"
    reasons = list(verdicts.values())
    assert reasons.count(f"image_url: timed out after {TIMEOUT:g}s") == silent.accepted
    assert reasons.count(given_up) == 40 - silent.accepted
    # The next window of the same run does not try the host again.
    more = checker.check([f"http://127.0.0.1:{silent.port}/more{i}.png" for i in range(10)])
    assert set(more.values()) == {given_up} and silent.accepted <= 4
    assert "1 host unreachable" in checker.summary()


def test_a_refusing_host_is_given_up_and_an_answering_host_checked_url_by_url(
    server: ImageServer, silent: Silent
) -> None:
    port = closed_port()
    refused = [f"http://127.0.0.1:{port}/a{i}.png" for i in range(30)]
    missing = [f"{base(server)}/404.png?{i}" for i in range(30)]
    fine = [f"{base(server)}/ok.png?{i}" for i in range(10)]
    dead = [f"http://127.0.0.1:{silent.port}/b{i}.png" for i in range(30)]
    mixed = [u for group in zip(refused, missing, dead, strict=True) for u in group] + fine
    verdicts = Preflight(None, timeout=TIMEOUT).check(mixed)
    # Every 404 is its own check: a host that answers is never given up.
    assert server.hits["HEAD /404.png"] == 30 and server.hits["HEAD /ok.png"] == 10
    assert all(verdicts[u] == "image_url: HTTP 404" for u in missing)
    assert all(verdicts[u] is None for u in fine)
    tried = [u for u in refused if verdicts[u].startswith("image_url: cannot connect")]
    assert 1 <= len(tried) <= 4
    given_up = f"image_url: host 127.0.0.1:{port} unreachable (3 tries could not connect; "
    assert all(verdicts[u].startswith(given_up) for u in refused if u not in tried)
    assert silent.accepted <= 4


def test_host_of() -> None:
    assert host_of("https://img.example/a.png") == "img.example"
    assert host_of("https://IMG.example:443/a.png") == "img.example"
    assert host_of("http://img.example:8080/a.png?x") == "img.example:8080"
    assert host_of("http://user:pw@img.example/a.png") == "img.example"


def test_the_command_gives_up_a_silent_host_and_keeps_the_cache(
    server: ImageServer, silent: Silent, tmp_path: Path
) -> None:
    rows = []
    urls = [f"http://127.0.0.1:{silent.port}/c{i}.png" for i in range(25)]
    urls += [f"{base(server)}/ok.png?{i}" for i in range(5)]
    for i, url in enumerate(urls):
        content = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]
        body = {"model": "m", "messages": [{"role": "user", "content": content}]}
        rows.append({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                     "body": body})  # fmt: skip
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = tmp_path / "preflight.json"
    cmd = [PYTHON, str(ROOT / "scripts" / "preflight.py"), "--requests", str(requests)]
    cmd += ["--cache", str(cache), "-o", str(tmp_path / "failed.jsonl"), "--timeout", str(TIMEOUT)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert silent.accepted <= 4
    failed = [json.loads(line) for line in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert len(failed) == 25
    assert "1 host unreachable" in result.stderr and "25 failed" in result.stderr
    saved = json.loads(cache.read_text())
    assert len(saved["passed"]) == 5 and len(saved["failed"]) == 25
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert server.hits["HEAD /ok.png"] == 5  # passed within 24 h: not checked again
    assert "(5 within 24 h, from the cache)" in again.stderr


CAPTION = """\
model: gpt-4o-mini
caption:
  user: "Describe {title}."
  image_key: image_url
  image_detail: low
  response_key: caption
"""


def test_make_plan_says_the_hosts_and_a_bound_on_the_time(tmp_path: Path) -> None:
    records = [
        {"id": f"a{i}", "title": "t", "image_url": f"https://a.example/{i}.png"} for i in range(9)
    ]
    records += [
        {"id": f"b{i}", "title": "t", "image_url": f"https://b.example:8443/{i}.png"}
        for i in range(2)
    ]
    records.append({"id": "c", "title": "t", "image_url": "http://c.example/x.jpg"})
    data = tmp_path / "news.json"
    data.write_text(json.dumps(records))
    config = tmp_path / "news.yaml"
    config.write_text(CAPTION)
    build = tmp_path / "build"
    where = {"BUILD": build, "INPUT": data, "CONFIG": config, "STEP": "caption", "DATA_KEY": "id"}
    env = {**os.environ, "PREFLIGHT": "1"}
    plan = make("plan", env=env, **where).stdout
    assert "image URLs not checked yet     12 (make caption checks them first" in plan
    # 12 URLs on 3 hosts, 9 on the busiest; at most 4 at a time a host, 16 in all; each URL
    # at most a HEAD and a GET of 10 s: 20 s x (ceil(12/16) + ceil(9/4) + 4) = 160 s.
    assert "preflight, at most             2 min 40 s (12 URLs on 3 hosts, 9 on the busiest" in plan
    cmd = [PYTHON, str(ROOT / "scripts" / "plan.py"), "--json", "--input", str(data)]
    cmd += ["--config", str(config), "--step", "caption", "--data-key", "id"]
    cmd += ["--preflight-cache", str(tmp_path / "preflight.json")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    s = json.loads(result.stdout)
    assert s["image_urls_not_checked"] == 12
    assert s["image_url_hosts_not_checked"] == 3
    assert s["image_urls_busiest_host"] == 9
    assert s["preflight_seconds_at_most"] == 160
    # Without the preflight (PREFLIGHT=0), nothing is said about it.
    off = make("plan", env={**os.environ, "PREFLIGHT": "0"}, **where).stdout
    assert "preflight, at most" not in off
