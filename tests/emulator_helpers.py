"""The emulator tests' shared parts: a real emulator subprocess, the SDK, the spec's schemas.

Imported by the tests/test_emulator*.py files (fixtures included).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
import yaml
from PIL import Image
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parent.parent
EMULATOR = ROOT / "scripts" / "emulator.py"
SPEC = Path("/work/shared/reference/openai-batch-api/openapi-full.yaml")
TERMINAL = ("completed", "failed", "expired", "cancelled")
FAST = [
    "--validating-seconds",
    "0.05",
    "--processing-seconds",
    "0.3",
    "--finalizing-seconds",
    "0.05",
]
MODEL = "gpt-4o-mini"


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------


class Emu:
    """One emulator subprocess."""

    def __init__(
        self, state_dir: Path, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.state_dir = state_dir
        self.args = args
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> Emu:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        stderr = open(self.log, "a")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [sys.executable, str(EMULATOR), "--port", "0", "--state-dir", str(self.state_dir)]
            + self.args,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=None if self.env is None else {**os.environ, **self.env},
        )
        stderr.close()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(20)
        assert line and line[0].startswith("http://127.0.0.1:"), (line, self.log.read_text())
        self.base_url = line[0].strip()
        assert self.base_url.endswith("/v1")
        return self

    @property
    def root_url(self) -> str:
        return self.base_url[: -len("/v1")]

    def client(self, api_key: str = "test-key", max_retries: int = 2) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=max_retries)

    def admin_key(self) -> str | None:
        """The bearer the admin endpoint wants: --admin-token, else --api-key, else none."""
        for flag in ("--admin-token", "--api-key"):
            if flag in self.args:
                return self.args[self.args.index(flag) + 1]
        return None

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.admin_key():
            headers["Authorization"] = f"Bearer {self.admin_key()}"
        req = urllib.request.Request(
            self.root_url + path, data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        log = self.log.read_text()
        assert rc == 0, log
        assert "Traceback" not in log, log


@pytest.fixture
def start_emulator(tmp_path: Path) -> Iterator[Callable[..., Emu]]:
    started: list[Emu] = []

    def start(
        *args: str,
        state_dir: Path | None = None,
        name: str = "emu",
        env: dict[str, str] | None = None,
    ) -> Emu:
        log = tmp_path / f"{name}.log"
        emu = Emu(state_dir or tmp_path / name, list(args), log, env).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emu(start_emulator: Callable[..., Emu]) -> Emu:
    return start_emulator(*FAST)


@pytest.fixture
def client(emu: Emu) -> openai.OpenAI:
    return emu.client()


@pytest.fixture(scope="session")
def check() -> Callable[[str, Any], None]:
    """Validate an SDK object / dict against components.schemas.<name> of openapi-full.yaml."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(SPEC.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - safe loader
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource("urn:openai-spec", resource)
    validators: dict[str, jsonschema.Draft202012Validator] = {}

    def validate(name: str, obj: Any) -> None:
        if name not in validators:
            schema = {"$ref": f"urn:openai-spec#/components/schemas/{name}"}
            validators[name] = jsonschema.Draft202012Validator(schema, registry=registry)
        instance = obj.to_dict() if hasattr(obj, "to_dict") else obj
        validators[name].validate(instance)

    return validate


def req_line(custom_id: str, text: str, model: str = MODEL, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


def upload(client: openai.OpenAI, lines: list[Any], name: str = "in.jsonl") -> Any:
    raw = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    return client.files.create(file=(name, raw.encode()), purpose="batch")


def create_batch(client: openai.OpenAI, lines: list[Any], **kw: Any) -> Any:
    f = upload(client, lines)
    return client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", **kw
    )


def wait_batch(
    client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 30
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        assert time.monotonic() < deadline, f"batch stuck in {b.status}"
        time.sleep(0.05)


def read_jsonl(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines() if x]


def raw_json(resp: Any) -> Any:
    return json.loads(resp.text)


def image_bytes(width: int, height: int, kind: str = "PNG", **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, kind, **save)
    return out.getvalue()


def png_data_url(width: int, height: int) -> str:
    return "data:image/png;base64," + base64.b64encode(image_bytes(width, height)).decode()
