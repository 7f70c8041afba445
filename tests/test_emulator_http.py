"""The emulator's HTTP front: malformed requests, oversize bodies, timeouts, aborted clients,
the admin endpoint's guard, and the upstream relay's rules. Raw sockets where the SDK would
never send such a request."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from emulator_helpers import *  # noqa: F403 - the fixtures: emu, client, check, start_emulator
from emulator_helpers import EMULATOR, FAST, Emu, create_batch, req_line, wait_batch


def raw_call(emu: Emu, request: bytes, *, then: bytes = b"", timeout: float = 20) -> bytes:
    """Send bytes on a fresh connection; return everything the server sends until it closes
    the connection (or, for a complete answer, until its body has arrived)."""
    parts = urlsplit(emu.base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        if then:
            sock.sendall(then)
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
            head, _, body = received.partition(b"\r\n\r\n")
            length = [x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")]
            if length and len(body) >= int(length[0].split(b":")[1]):
                break
        return received


def answer_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body)


def post(path: str, headers: str, body: bytes = b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode() + body


AUTH = "Authorization: Bearer k\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(post("/v1/batches", AUTH + "Content-Length: abc\r\n"), id="content-length"),
        pytest.param(
            post("/v1/batches", AUTH + "Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n"),
            id="chunk-size",
        ),
        pytest.param(b"GARBAGE\r\n\r\n", id="request-line"),
    ],
)
def test_malformed_http_gets_the_400_envelope(
    emu: Emu, check: Callable[[str, Any], None], request_bytes: bytes
) -> None:
    status, body = answer_of(raw_call(emu, request_bytes))
    assert status == 400
    check("ErrorResponse", body)
    assert body["error"]["type"] == "invalid_request_error"
    assert emu.client().files.list().data == []  # still serving


def test_bad_json_gets_the_400_envelope(emu: Emu, check: Callable[[str, Any], None]) -> None:
    raw = raw_call(emu, post("/v1/batches", AUTH + "Content-Length: 9\r\n", b"{not json"))
    status, body = answer_of(raw)
    assert status == 400 and "could not parse the JSON body" in body["error"]["message"]
    check("ErrorResponse", body)


@pytest.mark.parametrize(
    ("path", "declared"),
    [("/v1/files", 10**12), ("/v1/batches", 2 * 1024 * 1024), ("/v1/chat/completions", 10**9)],
)
def test_declared_oversize_bodies_are_refused_before_reading(
    emu: Emu, check: Callable[[str, Any], None], path: str, declared: int
) -> None:
    headers = (
        AUTH + f"Content-Length: {declared}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    )
    raw = raw_call(emu, post(path, headers))  # no body sent: the answer comes anyway
    status, body = answer_of(raw)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    check("ErrorResponse", body)
    assert b"connection: close" in raw.lower()


def test_chunked_oversize_json_is_refused_mid_body(emu: Emu) -> None:
    """A chunk size of 2^48 is read as it comes and refused past the JSON limit (1 MiB)."""
    head = post("/v1/batches", AUTH + "Transfer-Encoding: chunked\r\n", b"1000000000000\r\n")
    raw = raw_call(emu, head, then=b"x" * (1024 * 1024 + 70_000))
    assert answer_of(raw)[0] == 413


def test_silent_client_is_timed_out(start_emulator: Callable[..., Emu]) -> None:
    emu = start_emulator(*FAST, "--read-timeout", "0.5")
    # Headers promise 100 bytes; 2 arrive; the client then says nothing. The server closes.
    raw = raw_call(emu, post("/v1/batches", AUTH + "Content-Length: 100\r\n", b"{}"), timeout=30)
    assert raw == b""
    partial_head = b"GET /v1/files HTTP/1.1\r\nHost: x\r\n"  # never finished
    assert raw_call(emu, partial_head, timeout=30) == b""
    assert emu.client().files.list().data == []
    emu.stop()
    assert emu.log.read_text().count("silent for 0.5 s") == 2


def test_aborted_client_is_one_log_line(emu: Emu) -> None:
    parts = urlsplit(emu.base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000000\r\n"
        sock.sendall(post("/v1/files", AUTH + head, b"--b\r\n" + b"x" * 100_000))
    f = emu.client().files.create(file=("a.jsonl", b"{}\n"), purpose="batch")
    assert [x.id for x in emu.client().files.list()] == [f.id]  # nothing half-stored
    assert not any((emu.state_dir / "tmp").iterdir())
    emu.stop()  # asserts no traceback in the log
    lines = emu.log.read_text().splitlines()
    assert lines == ["emulator: client went away during POST /v1/files"]


def test_upload_without_extension_is_accepted(emu: Emu, client: openai.OpenAI) -> None:
    # The SDK names raw bytes "upload"; UNVERIFIED that the API takes it (see uploads.py).
    raw = client.files.create(file=b'{"a": 1}\n', purpose="batch")
    assert raw.filename == "upload" and raw.purpose == "batch"
    named = client.files.create(file=("requests", b'{"a": 1}\n'), purpose="batch")
    assert named.filename == "requests"
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        client.files.create(file=("notes.txt", b"{}"), purpose="batch")
    assert len(client.files.list().data) == 2


# ---------------------------------------------------------------------------- admin endpoint


def admin_raw(emu: Emu, method: str, path: str, body: bytes | None, **headers: str) -> int:
    req = urllib.request.Request(emu.root_url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_admin_refuses_a_cross_site_text_plain_post(emu: Emu) -> None:
    # What a web page can send without a preflight: a text/plain (or form) POST.
    body = b'{"http_error_rate": 1.0}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        assert admin_raw(emu, "POST", "/_emulator/faults", body, **{"Content-Type": ctype}) == 415
    assert admin_raw(emu, "POST", "/_emulator/faults", body) == 415  # no type at all
    assert emu.admin("GET", "/_emulator/faults")["http_error_rate"] == 0.0
    assert (
        admin_raw(emu, "POST", "/_emulator/reset_stats", b"{}", **{"Content-Type": "text/plain"})
        == 415
    )
    json_type = {"Content-Type": "application/json; charset=utf-8"}
    assert admin_raw(emu, "POST", "/_emulator/faults", b'{"seed": 4}', **json_type) == 200


def test_admin_needs_the_key_when_one_is_set(start_emulator: Callable[..., Emu]) -> None:
    emu = start_emulator(*FAST, "--api-key", "sk-emu-key-123")
    json_type = {"Content-Type": "application/json"}
    assert admin_raw(emu, "POST", "/_emulator/faults", b'{"seed": 1}', **json_type) == 401
    assert admin_raw(emu, "GET", "/_emulator/stats", None) == 401
    wrong = {**json_type, "Authorization": "Bearer sk-other"}
    assert admin_raw(emu, "POST", "/_emulator/faults", b'{"seed": 1}', **wrong) == 401
    assert emu.admin("POST", "/_emulator/faults", {"seed": 1})["seed"] == 1  # with the key
    assert admin_raw(emu, "GET", "/_emulator/health", None) == 200


def test_admin_token_is_separate(start_emulator: Callable[..., Emu]) -> None:
    emu = start_emulator(*FAST, "--api-key", "sk-emu-key-123", "--admin-token", "adm-456")
    with_key = {"Content-Type": "application/json", "Authorization": "Bearer sk-emu-key-123"}
    assert admin_raw(emu, "POST", "/_emulator/faults", b'{"seed": 1}', **with_key) == 401
    assert emu.admin("POST", "/_emulator/faults", {"seed": 2})["seed"] == 2  # the admin token
    assert emu.client(api_key="sk-emu-key-123").files.list().data == []
    with pytest.raises(openai.AuthenticationError):
        emu.client(api_key="adm-456").files.list()


# ---------------------------------------------------------------------------- upstream relay


def run_emulator(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    cmd = [sys.executable, str(EMULATOR), "--port", "0", "--state-dir", str(tmp_path / "x")]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}
    )


def test_open_relay_needs_a_flag(tmp_path: Path) -> None:
    result = run_emulator(tmp_path, "--upstream", "http://127.0.0.1:9/v1")
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "--api-key" in line and "--allow-open-relay" in line


def test_upstream_key_never_from_argv(tmp_path: Path) -> None:
    result = run_emulator(
        tmp_path, "--upstream", "http://127.0.0.1:9/v1", "--upstream-api-key", "sk-secret-999"
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "EMULATOR_UPSTREAM_API_KEY" in line and "sk-secret-999" not in line


def test_upstream_key_comes_from_the_environment(start_emulator: Callable[..., Emu]) -> None:
    upstream = start_emulator(*FAST, "--api-key", "sk-upstream-777", name="upstream")
    front = start_emulator(
        *FAST,
        "--upstream",
        upstream.base_url,
        "--api-key",
        "sk-front-111",
        env={"EMULATOR_UPSTREAM_API_KEY": "sk-upstream-777"},
        name="front",
    )
    client = front.client(api_key="sk-front-111")
    b = wait_batch(client, create_batch(client, [req_line("a", "hello")]).id)
    assert b.request_counts.to_dict() == {"total": 1, "completed": 1, "failed": 0}
    assert upstream.admin("GET", "/_emulator/stats")["calls"]["POST /v1/chat/completions"] == 1
    with pytest.raises(openai.AuthenticationError):
        front.client(api_key="sk-someone-else").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert upstream.admin("GET", "/_emulator/stats")["calls"]["POST /v1/chat/completions"] == 1


def test_sigterm_right_after_the_url_line_stops_the_emulator(tmp_path: Path) -> None:
    """The URL is printed before uvicorn installs its signal handlers: a caller that stops the
    emulator at once (a test that needs no call) must not leave it serving forever."""
    for k in range(10):
        cmd = [sys.executable, str(EMULATOR), "--port", "0", "--state-dir", str(tmp_path / str(k))]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().startswith("http://")
        proc.terminate()
        try:
            assert proc.wait(timeout=15) == 0
        finally:
            proc.kill()
