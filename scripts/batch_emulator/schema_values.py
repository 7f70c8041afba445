"""A deterministic JSON value valid against a JSON schema (the subset structured outputs use)."""

from __future__ import annotations

import math
from typing import Any


def _resolve_pointer(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for raw in ref.lstrip("#").split("/"):
        if not raw:
            continue
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(key, {})
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return {}
    return node


def _merge_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema["allOf"]:
        if isinstance(sub, dict) and "$ref" in sub:
            sub = _resolve_pointer(root, sub["$ref"])
        if isinstance(sub, dict):
            merged.setdefault("properties", {}).update(sub.get("properties", {}))
            for k, v in sub.items():
                if k != "properties":
                    merged.setdefault(k, v)
    return merged


def _number(schema: dict[str, Any], h8: str) -> int:
    value = int(h8[:2], 16) % 10
    low = schema.get("minimum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = math.floor(schema["exclusiveMinimum"]) + 1
    high = schema.get("maximum")
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = math.ceil(schema["exclusiveMaximum"]) - 1
    if low is not None and value < low:
        value = math.ceil(low)
    if high is not None and value > high:
        value = math.floor(high)
    return value


def _string(schema: dict[str, Any], name: str, h8: str) -> str:
    text = f"emulated {h8} {name}"
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    if "minLength" in schema and len(text) < int(schema["minLength"]):
        text = text + "x" * (int(schema["minLength"]) - len(text))
    return text


def example_for_schema(schema: Any, root: Any, name: str, h8: str, depth: int = 0) -> Any:
    """A value valid against ``schema``, varied by the request's hash ``h8``."""
    if depth > 16 or not isinstance(schema, dict):
        return f"emulated {h8} {name}"
    if "$ref" in schema:
        return example_for_schema(_resolve_pointer(root, schema["$ref"]), root, name, h8, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_for_schema((non_null or options)[0], root, name, h8, depth + 1)
    if isinstance(schema.get("allOf"), list):
        return example_for_schema(_merge_all_of(schema, root), root, name, h8, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ is None:
        typ = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if typ == "object":
        props = schema.get("properties") or {}
        return {k: example_for_schema(v, root, k, h8, depth + 1) for k, v in props.items()}
    if typ == "array":
        count = max(1, int(schema.get("minItems", 0)))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items", {})
        return [example_for_schema(items, root, name, h8, depth + 1) for _ in range(count)]
    if typ in ("integer", "number"):
        return _number(schema, h8)
    if typ == "boolean":
        # About three in four are true, by the request's hash: a filter step keeps most records.
        return int(h8[-1], 16) % 4 != 0
    if typ == "null":
        return None
    return _string(schema, name, h8)
