"""What the config is checked for before anything is paid: a response_key that would overwrite
the records' own data, top-level and step typos, request parameters out of the API's ranges, a
strict schema the API would refuse, a prices table of the wrong shape; and the warning when a
config's base_url receives the key. The emulator refuses the same parameters the API does.

Scripts run through their `main` (via cli.run: one line on stderr, the exit code, the files on
disk); the end-to-end cases run the real make against the emulator and count its batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import make_requests
import plan
import pytest
import yaml
from br import cli
from br.batches.client import make_client
from conftest import Emulator, make, write_json
from emulator_helpers import read_jsonl, upload, wait_batch

STEP: dict[str, Any] = {"is_multimodal": False, "user": "Describe {title}.", "response_key": "out"}


def config_file(tmp_path: Path, step: dict[str, Any] | None = None, **top: Any) -> Path:
    path = tmp_path / "config.yaml"
    data = {"model": "gpt-4o-mini", **top, "caption": step if step is not None else STEP}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def records(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"image_path": f"img/{i}.png", "title": f"photo {i}", **extra} for i in range(n)]


def run(
    main: Callable[[list[str] | None], int], args: list[Any], capsys: Any
) -> tuple[int, list[str]]:
    """A script's main through cli.run: its exit code and its stderr lines."""
    capsys.readouterr()
    code = cli.run(main, [str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()


def build(tmp_path: Path, data: Path, config: Path, capsys: Any, *extra: Any) -> Any:
    args = ["--input", data, "--config", config, "--step", "caption"]
    args += ["-o", tmp_path / "requests.jsonl", "--skipped", tmp_path / "skipped.jsonl", *extra]
    return run(make_requests.main, args, capsys)


def planned(data: Path, config: Path, capsys: Any, *extra: Any) -> Any:
    args = ["--input", data, "--config", config, "--step", "caption", *extra]
    return run(plan.main, args, capsys)


def refused(result: tuple[int, list[str]], *words: str) -> str:
    """Exit 2 and exactly one line on stderr holding every word."""
    code, lines = result
    assert code == 2, lines
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def requests_of(tmp_path: Path) -> list[dict[str, Any]]:
    text = (tmp_path / "requests.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------- 1: a response_key in the data


def test_a_response_key_the_records_already_hold_is_refused(tmp_path: Path, capsys: Any) -> None:
    data = write_json(tmp_path / "d.json", records(3, text="the user's own text"))
    config = config_file(tmp_path, {**STEP, "response_key": "text"})
    line = refused(build(tmp_path, data, config, capsys), "response_key 'text'", "record 0")
    assert not (tmp_path / "requests.jsonl").exists()
    assert refused(planned(data, config, capsys)) == line
    # RESPONSE_KEY on the make line is the same value.
    config = config_file(tmp_path, STEP)
    refused(build(tmp_path, data, config, capsys, "--response-key", "title"), "'title'")
    assert not (tmp_path / "requests.jsonl").exists()
    # A key no selected record holds is fine (here the only holder is not selected).
    mixed = write_json(
        tmp_path / "m.json", [*records(2), {"image_path": "x", "title": "t", "out": 1}]
    )
    where = config_file(tmp_path, {**STEP, "where": ".out == null"})
    assert build(tmp_path, mixed, where, capsys)[0] == 0
    assert len(requests_of(tmp_path)) == 2


QUESTION = {
    "kind": "question",
    "user": "Ask one question.",
    "context": "Caption: {title}",
    "dialog_history": "{dialog_history}",
    "image_url": "{image_url}",
    "response_key": "qa_rounds",
}


def test_a_question_step_appends_to_its_rounds_but_never_overwrites(
    tmp_path: Path, capsys: Any
) -> None:
    rounds = [{"question": "q?", "answer": "a."}]
    data = write_json(
        tmp_path / "q.json",
        [{"image_path": "a", "title": "t", "image_url": "http://x/a.jpg", "qa_rounds": rounds}],
    )
    assert build(tmp_path, data, config_file(tmp_path, QUESTION), capsys)[0] == 0
    # A field holding something else than rounds would be replaced by the rounds list.
    taken = write_json(
        tmp_path / "t.json", [{"image_path": "a", "title": "t", "image_url": "http://x/a.jpg"}]
    )
    config = config_file(tmp_path, {**QUESTION, "response_key": "title"})
    refused(build(tmp_path, taken, config, capsys), "response_key 'title'")
    # dialog_history is the question step's own field.
    config = config_file(tmp_path, {**QUESTION, "response_key": "dialog_history"})
    refused(build(tmp_path, taken, config, capsys), "dialog_history")


def test_make_refuses_a_response_key_in_the_data_before_any_batch(
    emulator: Emulator, tmp_path: Path
) -> None:
    data = write_json(tmp_path / "d.json", records(3, text="mine"))
    config = config_file(tmp_path, STEP)
    variables = {"INPUT": data, "CONFIG": config, "STEP": "caption", "RESPONSE_KEY": "text"}
    result = make("caption", env=emulator.env(), BUILD=tmp_path / "b", check=False, **variables)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "response_key 'text'" in errors[0], result.stderr
    assert emulator.batches() == []


# --------------------------------------------------------------- 2: typos


@pytest.mark.parametrize(
    ("top", "words"),
    [
        ({"max_cots": 5}, ["'max_cots'", "max_cost"]),
        ({"token_budjet": 1000}, ["'token_budjet'", "token_budget"]),
        ({"modle": "gpt-4o"}, ["'modle'", "'model'"]),
        ({"token_budjet": {"gpt-4o-mini": 1000}}, ["'token_budjet'", "token_budget"]),
        ({"colour": "blue"}, ["'colour'", "max_cost"]),
    ],
)
def test_an_unknown_top_level_key_is_refused(
    tmp_path: Path, capsys: Any, top: dict[str, Any], words: list[str]
) -> None:
    data = write_json(tmp_path / "d.json", records(2))
    config = config_file(tmp_path, **top)
    line = refused(build(tmp_path, data, config, capsys), *words)
    assert not (tmp_path / "requests.jsonl").exists()
    assert refused(planned(data, config, capsys)) == line


def test_an_unknown_step_key_names_the_one_it_resembles(tmp_path: Path, capsys: Any) -> None:
    data = write_json(tmp_path / "d.json", records(2))
    config = config_file(tmp_path, {**STEP, "temprature": 0})
    refused(build(tmp_path, data, config, capsys), "'temprature'", "did you mean 'temperature'")


def test_make_refuses_a_mistyped_cost_cap_before_any_batch(
    emulator: Emulator, tmp_path: Path
) -> None:
    data = write_json(tmp_path / "d.json", records(2))
    config = config_file(tmp_path, max_cots=0.0001)
    variables = {"INPUT": data, "CONFIG": config, "STEP": "caption"}
    result = make("caption", env=emulator.env(), BUILD=tmp_path / "b", check=False, **variables)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "'max_cots'" in result.stderr and "max_cost" in result.stderr
    assert emulator.batches() == []


# --------------------------------------------------------------- 3: request parameters


BAD_PARAMETERS = [
    ({"temperature": "hot"}, ["temperature", "'hot'"]),
    ({"temperature": 9}, ["temperature", "0 to 2"]),
    ({"temperature": -0.5}, ["temperature"]),
    ({"top_p": 1.5}, ["top_p", "0 to 1"]),
    ({"max_tokens": -5}, ["max_tokens", "-5"]),
    ({"max_tokens": 0}, ["max_tokens"]),
    ({"max_tokens": "100"}, ["max_tokens"]),
    ({"max_completion_tokens": 2.5}, ["max_completion_tokens"]),
    ({"n": 0}, ["'n'"]),
    ({"seed": 1.5}, ["seed"]),
    ({"presence_penalty": 3}, ["presence_penalty", "-2 to 2"]),
    ({"frequency_penalty": -2.5}, ["frequency_penalty"]),
    ({"logprobs": "yes"}, ["logprobs"]),
    ({"logprobs": True, "top_logprobs": 21}, ["top_logprobs", "0 to 20"]),
    ({"top_logprobs": 3}, ["top_logprobs", "logprobs: true"]),
    ({"stop": ["a", "b", "c", "d", "e"]}, ["stop"]),
    ({"stop": 5}, ["stop"]),
    ({"reasoning_effort": "extreme"}, ["reasoning_effort", "'extreme'"]),
    ({"verbosity": "loud"}, ["verbosity"]),
    ({"service_tier": "cheap"}, ["service_tier"]),
    ({"body": {"temperature": 9}}, ["temperature"]),
    ({"endpoint": "/v1/responses", "temperature": 3}, ["temperature"]),
    ({"endpoint": "/v1/responses", "top_logprobs": 30}, ["top_logprobs"]),
    ({"endpoint": "/v1/responses", "body": {"top_p": -1}}, ["top_p"]),
]


@pytest.mark.parametrize(("change", "words"), BAD_PARAMETERS)
def test_a_request_parameter_the_api_refuses_is_refused_before_paying(
    tmp_path: Path, capsys: Any, change: dict[str, Any], words: list[str]
) -> None:
    data = write_json(tmp_path / "d.json", records(2))
    config = config_file(tmp_path, {**STEP, **change})
    line = refused(build(tmp_path, data, config, capsys), "step 'caption'", *words)
    assert not (tmp_path / "requests.jsonl").exists()
    assert refused(planned(data, config, capsys)) == line


def test_parameters_within_range_are_sent_as_they_are(tmp_path: Path, capsys: Any) -> None:
    data = write_json(tmp_path / "d.json", records(1))
    given = {
        "temperature": 0,
        "top_p": 1,
        "presence_penalty": -2,
        "frequency_penalty": 1.5,
        "max_tokens": 1,
        "n": 2,
        "seed": -7,
        "logprobs": True,
        "top_logprobs": 20,
        "stop": "\n",
        "reasoning_effort": "low",
        "service_tier": "flex",
    }
    assert build(tmp_path, data, config_file(tmp_path, {**STEP, **given}), capsys)[0] == 0
    body = requests_of(tmp_path)[0]["body"]
    assert {k: body[k] for k in given} == given
    nulls = {"temperature": None, "body": {"top_p": None, "seed": None}}
    assert build(tmp_path, data, config_file(tmp_path, {**STEP, **nulls}), capsys)[0] == 0


def test_a_bare_schema_is_completed_for_strict_mode(tmp_path: Path, capsys: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "keep": {"type": "boolean"},
            "people": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                },
            },
            "place": {"$ref": "#/$defs/Place"},
        },
        "required": ["keep", "people", "place"],
        "$defs": {
            "Place": {
                "type": "object",
                "properties": {"city": {"type": ["string", "null"]}},
                "required": ["city"],
            }
        },
    }
    data = write_json(tmp_path / "d.json", records(1))
    config = config_file(tmp_path, {**STEP, "response_format": schema})
    assert build(tmp_path, data, config, capsys)[0] == 0
    fmt = requests_of(tmp_path)[0]["body"]["response_format"]["json_schema"]
    assert fmt["strict"] is True
    sent = fmt["schema"]
    assert sent["additionalProperties"] is False
    assert sent["properties"]["people"]["items"]["additionalProperties"] is False
    assert sent["$defs"]["Place"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the config's own value is not changed


@pytest.mark.parametrize(
    ("response_format", "words"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}},
            ["response_format", "'a'", "required"],
        ),
        (
            {
                "type": "object",
                "properties": {
                    "x": {
                        "type": "object",
                        "properties": {"y": {"type": "string"}, "z": {"type": "string"}},
                        "required": ["y"],
                    }
                },
                "required": ["x"],
            },
            ["response_format", "'z'", "properties/x"],
        ),
        (
            {"type": "object", "properties": {}, "additionalProperties": True},
            ["additionalProperties"],
        ),
        ({"type": "string"}, ["object"]),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}},
                        "required": ["a"],
                    },
                },
            },
            ["additionalProperties", "strict"],
        ),
    ],
)
def test_a_schema_strict_mode_refuses_is_refused(
    tmp_path: Path, capsys: Any, response_format: dict[str, Any], words: list[str]
) -> None:
    data = write_json(tmp_path / "d.json", records(1))
    config = config_file(tmp_path, {**STEP, "response_format": response_format})
    refused(build(tmp_path, data, config, capsys), "step 'caption'", *words)
    assert not (tmp_path / "requests.jsonl").exists()


def test_a_schema_without_strict_is_sent_as_it_is(tmp_path: Path, capsys: Any) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": False}}
    data = write_json(tmp_path / "d.json", records(1))
    assert (
        build(tmp_path, data, config_file(tmp_path, {**STEP, "response_format": fmt}), capsys)[0]
        == 0
    )
    assert requests_of(tmp_path)[0]["body"]["response_format"] == fmt


def line(custom_id: str, url: str, **body: Any) -> dict[str, Any]:
    if url == "/v1/responses":
        body = {"model": "gpt-4o-mini", "input": "hi", **body}
    else:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


LOOSE = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
OPTIONAL = {**LOOSE, "required": [], "additionalProperties": False}
CHAT_CASES: dict[str, tuple[dict[str, Any], str | None, str | None]] = {
    # custom_id: (body parameters, the error's param, code); None: it succeeds
    "ok": ({"temperature": 0.5, "max_tokens": 20}, None, None),
    "hot": ({"temperature": "hot"}, "temperature", "invalid_type"),
    "nine": ({"temperature": 9}, "temperature", "decimal_above_max_value"),
    "top_p": ({"top_p": -0.1}, "top_p", "decimal_below_min_value"),
    "neg": ({"max_tokens": -5}, "max_tokens", "integer_below_min_value"),
    "n": ({"n": 0}, "n", "integer_below_min_value"),
    "pen": ({"presence_penalty": 2.5}, "presence_penalty", "decimal_above_max_value"),
    "tlp": ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
    "seed": ({"seed": "x"}, "seed", "invalid_type"),
    "loose": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": LOOSE, "strict": True},
            }
        },
        "response_format",
        None,
    ),
    "optional": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": OPTIONAL, "strict": True},
            }
        },
        "response_format",
        None,
    ),
    "lax": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": LOOSE}}},
        None,
        None,
    ),
}
RESPONSES_CASES: dict[str, tuple[dict[str, Any], str | None, str | None]] = {
    "ok": ({"temperature": 2, "max_output_tokens": 16}, None, None),
    "nine": ({"temperature": 9}, "temperature", "decimal_above_max_value"),
    "hot": ({"top_p": "hot"}, "top_p", "invalid_type"),
    "tlp": ({"top_logprobs": -1}, "top_logprobs", "integer_below_min_value"),
    "loose": (
        {"text": {"format": {"type": "json_schema", "name": "s", "schema": LOOSE, "strict": True}}},
        "text.format.schema",
        None,
    ),
}


@pytest.mark.parametrize(
    ("url", "cases"), [("/v1/chat/completions", CHAT_CASES), ("/v1/responses", RESPONSES_CASES)]
)
def test_the_emulator_refuses_what_the_api_refuses_per_request(
    emulator: Emulator,
    url: str,
    cases: dict[str, tuple[dict[str, Any], str | None, str | None]],
) -> None:
    client = emulator.client()
    lines = [line(cid, url, **body) for cid, (body, _, _) in cases.items()]
    f = upload(client, lines)
    batch = client.batches.create(input_file_id=f.id, endpoint=url, completion_window="24h")
    batch = wait_batch(client, batch.id)
    assert batch.status == "completed"
    rows = read_jsonl(client, batch.output_file_id) if batch.output_file_id else []
    rows += read_jsonl(client, batch.error_file_id) if batch.error_file_id else []
    got = {r["custom_id"]: r["response"] for r in rows}
    for cid, (_, param, code) in cases.items():
        response = got[cid]
        if param is None:
            assert response["status_code"] == 200, (cid, response)
            continue
        assert response["status_code"] == 400, (cid, response)
        error = response["body"]["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert (error["param"], error["code"]) == (param, code), (cid, error)
        assert error["message"].startswith(("Invalid", "Invalid schema")), error


# --------------------------------------------------------------- 4: prices


@pytest.mark.parametrize(
    "prices",
    ["cheap", {"gpt-4o-mini": "cheap"}, {"gpt-4o-mini": {"input": "low"}}, [1, 2]],
)
def test_a_prices_table_of_the_wrong_shape_is_one_line(
    tmp_path: Path, capsys: Any, prices: Any
) -> None:
    data = write_json(tmp_path / "d.json", records(2))
    config = config_file(tmp_path, prices=prices, max_cost=5)
    refused(planned(data, config, capsys, "--max-cost", "5"), "prices")
    refused(build(tmp_path, data, config, capsys), "prices")
    assert not (tmp_path / "requests.jsonl").exists()


# --------------------------------------------------------------- 5: base_url


@pytest.fixture
def key_in_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("key_in_environment")
def test_a_config_base_url_elsewhere_is_warned_about(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from br.config import load_config

    config = load_config(config_file(tmp_path, base_url="https://proxy.example.net/v1"))
    capsys.readouterr()
    client = make_client(config)
    assert str(client.base_url).startswith("https://proxy.example.net")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: "), err
    assert "proxy.example.net" in err[0] and "base_url" in err[0]
    assert "sk-test-not-a-key" not in err[0]

    # The provider's own host, or OPENAI_BASE_URL set by the user: quiet.
    config = load_config(config_file(tmp_path, base_url="https://api.openai.com/v1"))
    make_client(config)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    config = load_config(config_file(tmp_path, base_url="https://proxy.example.net/v1"))
    make_client(config)
    assert capsys.readouterr().err == ""


def test_a_base_url_that_is_not_a_url_is_refused(tmp_path: Path, capsys: Any) -> None:
    data = write_json(tmp_path / "d.json", records(1))
    refused(build(tmp_path, data, config_file(tmp_path, base_url=5), capsys), "base_url")


def test_make_s_scripts_read_the_config_parsed_once(tmp_path: Path, monkeypatch: Any) -> None:
    """With BR_CONFIG_CACHE (make sets it to the step's config.json), the first script of a run
    parses the YAML and keeps it as JSON; later ones read that, without importing yaml, while
    it was made from the config's bytes as they are. What JSON cannot hold exactly (a date, a
    key that is not a string) is parsed each time; a damaged cache is parsed over."""
    import subprocess
    import sys

    from br.config import load_config
    from conftest import ROOT

    config, cache = tmp_path / "config.yaml", tmp_path / "b" / "config.json"
    step = "caption:\n  user: 'Describe {title}.'\n  temperature: 1.5e-07\n"
    config.write_text("model: gpt-4o-mini\n" + step)
    monkeypatch.setenv("BR_CONFIG_CACHE", str(cache))
    load_config(config)
    assert not cache.parent.exists()  # only the stamps' process writes it (make plan: nothing)
    first = load_config(config, keep=True)
    kept = json.loads(cache.read_text())
    assert kept == {"sha256": first.sha256, "data": first.data}
    probe = (
        "import sys; from pathlib import Path; from br.config import load_config; "
        f"c = load_config(Path({str(config)!r})); "
        f"print(c.data == {first.data!r}, 'yaml' in sys.modules)"
    )

    def fresh() -> str:
        env = {**os.environ, "BR_CONFIG_CACHE": str(cache)}
        run = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT / "scripts", env=env, capture_output=True
        )
        return run.stdout.decode().strip()

    assert fresh() == "True False"  # read from config.json: no YAML parser loaded
    mtime = cache.stat().st_mtime_ns
    load_config(config, keep=True)
    assert cache.stat().st_mtime_ns == mtime  # unchanged bytes: not rewritten
    config.write_text(config.read_text().replace("Describe", "Caption"))
    assert load_config(config).step("caption").user == "Caption {title}."  # stale: parsed
    assert load_config(config, keep=True).step("caption").user == "Caption {title}."
    assert json.loads(cache.read_text())["data"]["caption"]["user"] == "Caption {title}."
    cache.write_text('{"sha256": "' + load_config(config).sha256 + '", "data": ')  # damaged
    assert load_config(config).step("caption").user == "Caption {title}."
    load_config(config, keep=True)
    config.write_text("model: gpt-4o-mini\napi_key: sk-in-the-config\n" + step)
    load_config(config, keep=True)  # a key in the config is never copied into build/
    assert "sk-in-the-config" not in cache.read_text()
    config.write_text("model: gpt-4o-mini\nwhen: 2026-12-04\ncaption:\n  user: 'Hi {title}.'\n")
    with pytest.raises(cli.UserError):  # an unknown top-level key: the same line as before
        load_config(config, keep=True)
    assert json.loads(cache.read_text())["data"]["caption"]["user"] == "Caption {title}."
