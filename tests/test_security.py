"""Security: jq programs see no environment, a step name never leaves BUILD, make never expands
a user's value, and the emulator answers only its own host."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from br.cli import UserError, run
from br.config import compile_jq, load_config
from br.prompts.build import Template, key_function
from conftest import PYTHON, ROOT, TEST_KEY, Emulator, input_dir, make, read_json, write_json

CONFIG = """\
model: gpt-4o-mini
describe:
  is_multimodal: false
  user: 'Summarise: {text}'
  response_key: summary
"""


def plain_env(**extra: str) -> dict[str, str]:
    """The environment of a make run that never reaches an API (it is refused first)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MAKE"))}
    return {**env, **extra}


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


# ----------------------------------------------------------------------------- jq: no environment


LEAKS = ["env.OPENAI_API_KEY", "$ENV.OPENAI_API_KEY", "env | length", "$ENV | length"]


@pytest.mark.parametrize("expression", LEAKS)
def test_a_jq_program_sees_an_empty_environment(
    monkeypatch: pytest.MonkeyPatch, expression: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-in-env")
    assert compile_jq(expression, "test").input_value({}).all() in ([None], [0])
    key = key_function(f".id + ({expression} | tostring)")
    assert "sk-secret" not in key({"id": "r1"})
    filled, missing = Template("{.id + (" + expression + " | tostring)}").fill({"id": "r1"})
    assert "sk-secret" not in filled and not missing


def test_jq_still_takes_definitions_comments_and_variables() -> None:
    program = compile_jq("def twice: . * 2; .n as $n | [$n | twice] # a comment", "test")
    assert program.input_value({"n": 2}).all() == [[4]]
    with pytest.raises(UserError, match="not a valid jq expression"):
        compile_jq('include "x"; .', "test")  # no module is read from disk


def test_no_jq_program_gets_the_key_into_build(emulator: Emulator, tmp_path: Path) -> None:
    data = write_json(tmp_path / "d.json", [{"id": f"r{i}", "text": f"t{i}"} for i in range(3)])
    config = tmp_path / "leak.yaml"
    config.write_text(
        "model: gpt-4o-mini\n"
        "leak:\n"
        "  is_multimodal: false\n"
        "  where: 'env.OPENAI_API_KEY == null and $ENV.OPENAI_API_KEY == null'\n"
        "  user: 'Say {.text + env.OPENAI_API_KEY} {.text + $ENV.OPENAI_API_KEY}'\n"
        "  extract: '[., env.OPENAI_API_KEY, $ENV.OPENAI_API_KEY]'\n"
        "  response_key: answer\n"
    )
    build = tmp_path / "build"
    env = emulator.env()
    make(
        "caption", env=env, BUILD=build, INPUT=data, CONFIG=config, STEP="leak",
        DATA_KEY=".id + env.OPENAI_API_KEY + $ENV.OPENAI_API_KEY",
    )  # fmt: skip
    status = make(
        "status", env=env, CONFIG=config, FILTER="[.id, env.OPENAI_API_KEY, $ENV.OPENAI_API_KEY]"
    )
    merged = read_json(input_dir(build, data) / "leak" / "merged.json")
    assert [r["answer"][1:] for r in merged] == [[None, None]] * 3  # every record was selected
    assert all(r["answer"][0].startswith("Emulated answer") for r in merged)
    assert TEST_KEY not in status.stdout + status.stderr and "null" in status.stdout
    for path in files_under(build, emulator.state_dir):
        assert TEST_KEY.encode() not in path.read_bytes(), path


# ----------------------------------------------------------------------------- step names


@pytest.mark.parametrize("step", ["../../../escaped", "..", ".", "a/b", "/tmp/x", "", "a*"])
def test_a_step_name_that_is_not_one_safe_component_is_refused(tmp_path: Path, step: str) -> None:
    build = tmp_path / "one" / "two" / "build"
    result = make("caption", env=plain_env(), check=False, BUILD=build, STEP=step)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    said = "STEP is empty" if not step else f"STEP={step} is not a step name: use letters, digits"
    assert said in lines[0], lines
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # nothing written anywhere


def test_a_step_with_a_space_blames_step_not_build(tmp_path: Path) -> None:
    result = make("caption", env=plain_env(), check=False, BUILD=tmp_path / "b", STEP="my step")
    assert result.returncode != 0
    assert "STEP=my step " in result.stderr and "BUILD" not in result.stderr


def test_pipeline_steps_are_checked_before_any_step_runs(tmp_path: Path) -> None:
    result = make(
        "pipeline", env=plain_env(), check=False, BUILD=tmp_path / "b",
        STEPS="article_filter ../../../escaped",
    )  # fmt: skip
    assert result.returncode != 0 and "STEP=../../../escaped " in result.stderr
    assert "== step" not in result.stdout and not (tmp_path / "b").exists()


def step_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text",
    [
        CONFIG + "pipeline: [describe, ../../../escaped]\n",
        CONFIG + "pipeline: [describe, 7]\n",
        CONFIG + "../../../escaped:\n  user: '{text}'\n",
        CONFIG + "'a b':\n  user: '{text}'\n",
    ],
)
def test_a_config_step_name_or_pipeline_entry_must_be_safe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    config = step_config(tmp_path, text)
    with pytest.raises(UserError, match="letters, digits"):
        load_config(config)
    import pipeline_steps

    assert run(pipeline_steps.main, [str(config)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "letters, digits" in err


def test_make_pipeline_refuses_a_config_pipeline_that_leaves_build(tmp_path: Path) -> None:
    config = step_config(tmp_path, CONFIG + "pipeline: [describe, ../../../escaped]\n")
    build = tmp_path / "one" / "two" / "build"
    result = make("pipeline", env=plain_env(), check=False, BUILD=build, CONFIG=config)
    assert result.returncode != 0 and "letters, digits" in result.stderr
    assert "Traceback" not in result.stderr and "== step" not in result.stdout
    assert [p.name for p in tmp_path.rglob("*")] == ["c.yaml"]


# ----------------------------------------------------------------------------- $ in user values


def test_input_config_and_step_are_never_expanded_by_make(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    run_it = f"$(shell touch {marker})"
    for variable in ("INPUT", "CONFIG", "STEP"):
        result = make("caption", env=plain_env(), check=False, **{variable: f"x{run_it}.json"})
        assert result.returncode != 0 and f"{variable}=x{run_it}.json " in result.stderr
        assert not marker.exists(), variable
    # A value from the environment is a value too.
    result = make("caption", env=plain_env(INPUT=f"x{run_it}.json"), check=False)
    assert result.returncode != 0 and not marker.exists()


@pytest.mark.parametrize(
    ("target", "variable"),
    [
        ("caption", "DATA_KEY"),
        ("caption", "RESPONSE_KEY"),
        ("caption", "OUTPUT"),
        ("caption", "IMAGE_ROOT"),
        ("caption", "MAX_REQUESTS"),
        ("caption", "MAX_BYTES"),
        ("caption", "RETRIES"),
        ("caption", "TOKEN_BUDGET"),
        ("caption", "MAX_COST"),
        ("caption", "STRICT"),
        ("plan", "PREFLIGHT"),
        ("status", "FILTER"),
        ("status", "LIMIT"),
        ("check", "BATCH"),
        ("tidy", "DRY_RUN"),
        ("emulator", "PORT"),
        ("bench", "N"),
    ],
)
def test_no_user_value_is_expanded_by_make(tmp_path: Path, target: str, variable: str) -> None:
    """`make -n` expands every recipe it would run, so a `$(shell)` left in a value runs."""
    marker = tmp_path / "PWNED"
    value = f"1$(shell touch {marker})"
    make("-n", target, env=plain_env(), check=False, BUILD=tmp_path / "b", **{variable: value})
    assert not marker.exists()


def test_a_dollar_in_paths_and_data_key_works_end_to_end(
    emulator: Emulator, tmp_path: Path
) -> None:
    folder = tmp_path / "pri$ces"
    data = write_json(folder / "price$list.json", [{"id": f"r{i}", "text": "t"} for i in range(3)])
    config = step_config(folder, CONFIG)
    config = config.rename(folder / "con$fig.yaml")
    out = folder / "out$put.json"
    build = tmp_path / "build"
    result = make(
        "caption", env=emulator.env(), BUILD=build, INPUT=data, CONFIG=config, STEP="describe",
        DATA_KEY=".id as $k | $k", OUTPUT=out, IMAGE_ROOT=folder,
    )  # fmt: skip
    merged = input_dir(build, data) / "describe" / "merged.json"
    assert f"{merged} is up to date" in result.stdout
    assert [r["id"] for r in read_json(out)] == ["r0", "r1", "r2"]
    assert all(r["summary"].startswith("Emulated answer") for r in read_json(merged))
    requests = read_json(merged.parent / "requests.jsonl")
    assert [r["custom_id"] for r in requests] == ["r0", "r1", "r2"]


# ----------------------------------------------------------------------------- the emulator


def call(
    emu: Emulator, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(emu.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.request(method, path, body=data, headers=headers)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        conn.close()


def port_of(emu: Emulator) -> int:
    return urlsplit(emu.url).port or 0


def test_the_emulator_answers_only_its_own_host(emulator: Emulator) -> None:
    port = port_of(emulator)
    auth = {"Authorization": "Bearer k"}
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert call(emulator, "GET", "/v1/files", {**auth, "Host": host})[0] == 200, host
        assert call(emulator, "GET", "/_emulator/stats", {"Host": host})[0] == 200, host
    # DNS rebinding: a name the attacker controls now points at 127.0.0.1.
    for host in (f"evil.example:{port}", "127.0.0.1.evil.example", "", "localhost@evil"):
        status, body = call(emulator, "GET", "/v1/files", {**auth, "Host": host})
        assert status == 400 and "Host" in body["error"]["message"], host
    json_type = {"Content-Type": "application/json", "Host": f"evil.example:{port}"}
    status, _ = call(emulator, "POST", "/_emulator/faults", json_type, {"http_error_rate": 1})
    assert status == 400
    # A page of another site posting to the admin endpoint of 127.0.0.1.
    origin = {"Content-Type": "application/json", "Origin": "http://evil.example"}
    assert call(emulator, "POST", "/_emulator/faults", origin, {"http_error_rate": 1})[0] == 403
    assert emulator.faults()["http_error_rate"] == 0.0
    same = {**origin, "Origin": f"http://localhost:{port}"}
    assert call(emulator, "POST", "/_emulator/faults", same, {"seed": 3})[0] == 200


def test_allow_host_accepts_more_names(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--allow-host", "emulator.internal").start()
    try:
        headers = {"Authorization": "Bearer k", "Host": "emulator.internal:8000"}
        assert call(emu, "GET", "/v1/files", headers)[0] == 200
        assert call(emu, "GET", "/v1/files", {**headers, "Host": "evil.example"})[0] == 400
    finally:
        emu.stop()


def test_a_network_host_without_a_key_is_refused(tmp_path: Path) -> None:
    cmd = [PYTHON, str(ROOT / "scripts" / "emulator.py"), "--host", "0.0.0.0", "--port", "0"]
    cmd += ["--state-dir", str(tmp_path / "emu")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--api-key" in lines[0] and "0.0.0.0" in lines[0], lines


def test_a_network_host_with_a_key_serves(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "emu", "--host", "0.0.0.0", "--api-key", "sk-emu-1").start()
    try:
        assert emu.client(key="sk-emu-1").files.list().data == []
        assert emu.stats()["calls"]["GET /v1/files"] == 1  # the admin endpoint with the key
    finally:
        emu.stop()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_the_key_in_dot_env_above_scripts_is_loaded_and_the_environment_wins(
    tmp_path: Path,
) -> None:
    """.env is found where python-dotenv's find_dotenv looks: upwards from scripts/ for a
    script (dotenv not imported when there is none), upwards from the working directory for
    `python -c` or a notebook; loaded without overriding the environment."""
    import shutil

    shutil.copytree(ROOT / "scripts" / "br", tmp_path / "project" / "scripts" / "br")
    probe = (
        "import os, sys; from br.batches.client import load_env; where = load_env(); "
        "print(where or '-', os.environ.get('OPENAI_API_KEY'), os.environ.get('BR_PROBE'), "
        "'dotenv' in sys.modules)\n"
    )
    (tmp_path / "probe.py").write_text(probe)
    scripts = tmp_path / "project" / "scripts"

    def run(*how: str, cwd: Path = scripts, **env: str) -> list[str]:
        clean = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "BR_PROBE")}
        out = subprocess.run(
            [sys.executable, *how],
            cwd=cwd,
            env={**clean, "PYTHONPATH": str(scripts), **env},
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()

    script = str(tmp_path / "probe.py")
    assert run(script) == ["-", "None", "None", "False"]  # none above scripts/: no dotenv
    dot_env = tmp_path / "project" / ".env"
    dot_env.write_text("OPENAI_API_KEY=sk-from-dot-env\nBR_PROBE=seen\n")
    assert run(script) == [str(dot_env), "sk-from-dot-env", "seen", "True"]
    assert run(script, OPENAI_API_KEY="sk-env") == [str(dot_env), "sk-env", "seen", "True"]
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    (notebook / ".env").write_text("BR_PROBE=notebook\n")
    assert run("-c", probe, cwd=notebook)[2] == "notebook"  # dotenv's own search, from here
