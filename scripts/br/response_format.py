"""A step's `response_format`: the bare JSON schema a config may give, wrapped as OpenAI's
json_schema format; the schema checked; and the rules of OpenAI's strict mode (Structured
Outputs) applied when the config is read, since the API refuses a schema that breaks them with a
400 per request, after the batch is paid for.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from br.cli import UserError


def parse_response_format(
    where: str, name: str, value: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The step's response_format as it is sent: normalised, its schema checked, strict mode
    checked (and completed where the config gave a bare schema)."""
    response_format = normalise_response_format(name, value)
    check_response_format(where, response_format)
    bare = response_format is not value
    return strict_format(where, response_format, complete=bare)


def normalise_response_format(name: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accept OpenAI's full response_format or a bare JSON schema (wrapped as a strict schema)."""
    if value is None or value.get("type") in {"json_schema", "json_object", "text"}:
        return value
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
    return {"type": "json_schema", "json_schema": {"name": safe, "schema": value, "strict": True}}


def check_response_format(where: str, value: dict[str, Any] | None) -> None:
    """OpenAI's response_format with a valid JSON schema, or one line saying what is wrong."""
    if value is None or value.get("type") in {"json_object", "text"}:
        return
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise UserError(
            f"{where}: response_format: json_schema needs a 'schema' mapping "
            "(or give the bare JSON schema as response_format)"
        )
    import jsonschema  # only for steps with structured output: the import is slow

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        at = "/".join(map(str, e.absolute_path)) or "the top level"
        message = " ".join(e.message.split())
        message = message if len(message) <= 200 else message[:200] + " ..."
        raise UserError(
            f"{where}: response_format is not a valid JSON schema (at {at}: {message}); "
            "see https://json-schema.org/understanding-json-schema"
        )


def strict_format(
    where: str, value: dict[str, Any] | None, complete: bool
) -> dict[str, Any] | None:
    """A `strict: true` json_schema format that strict mode accepts, or one line saying why not.

    Strict mode (OpenAI's Structured Outputs) needs an object at the top, and in every object
    `additionalProperties: false` and every property listed in `required`; the API refuses
    anything else with a 400 per request, after the batch is paid for. A bare schema
    (`complete`: the config gave no `strict:` of its own) gets `additionalProperties: false`
    where it says nothing, since that only forbids keys the schema never names. An optional
    property is refused, not made required: that would change what the answers hold. A full
    response_format with `strict: true` is the user's own, sent as given: refused, not changed.
    """
    spec = (value or {}).get("json_schema")
    if not isinstance(spec, dict) or spec.get("strict") is not True:
        return value
    schema = copy.deepcopy(spec["schema"])
    loose = (
        "give response_format as {type: json_schema, json_schema: {name, schema, strict: false}}"
    )
    if schema.get("type") != "object":
        raise UserError(
            f"{where}: response_format: strict mode needs an object at the top (type: object), "
            f"not type {schema.get('type')!r}; put the value in a property of an object"
        )

    def walk(node: Any, at: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{at}/{i}")
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if (
            kind == "object"
            or (isinstance(kind, list) and "object" in kind)
            or "properties" in node
        ):
            place = at.lstrip("/") or "the top level"
            if "additionalProperties" not in node and complete:
                node["additionalProperties"] = False
            elif node.get("additionalProperties") is not False:
                raise UserError(
                    f"{where}: response_format: strict mode needs additionalProperties: false "
                    f"in every object (not at {place}); add it, or {loose}"
                )
            required = node.get("required") or []
            optional = [k for k in node.get("properties") or {} if k not in required]
            if optional:
                raise UserError(
                    f"{where}: response_format: property '{optional[0]}' of {place} is not in "
                    f"required, and strict mode needs every property required: make it required "
                    f"(type: [string, 'null'] if it may be empty), or {loose}"
                )
        for key in ("properties", "$defs", "definitions"):
            for name, sub in (node.get(key) or {}).items():
                walk(sub, f"{at}/{key}/{name}")
        for key in ("items", "anyOf", "allOf"):
            if key in node:
                walk(node[key], f"{at}/{key}")

    walk(schema, "")
    return {**value, "json_schema": {**spec, "schema": schema}} if value else value
