"""A record's texts: the prompt templates of a step filled from it, and its data key.

A template holds `{field}` or `{.jq.path}` placeholders (`{{` and `}}` are literal braces); the
data key (DATA_KEY) is a field name, or a jq expression when it starts with '.'. Every jq
program is compiled by config.compile_jq, so none sees the environment.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

from br.cli import UserError
from br.config import compile_jq
from br.records import dumps

PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")


def jq_first(program: Any, record: dict[str, Any]) -> Any:
    try:
        return next(iter(program.input_value(record)), None)
    except ValueError:
        return None


class DataKeyError(UserError):
    """A DATA_KEY jq expression that gives several values for one record."""

    def __init__(self, data_key: str, n: int) -> None:
        super().__init__(
            f"DATA_KEY '{data_key}' gives {n} values for a record; it must give one value "
            "per record (e.g. '.tags[0]' or '.tags | join(\",\")')"
        )
        self.data_key, self.n = data_key, n


def key_function(data_key: str) -> Callable[[dict[str, Any]], Any]:
    """A plain field name, or a jq expression when it starts with '.' (`.title + " " + .year`)."""
    if data_key.startswith("."):
        program = compile_jq(data_key, "DATA_KEY")

        def key(record: dict[str, Any]) -> Any:
            try:
                values = list(itertools.islice(program.input_value(record), 3))
            except ValueError:
                return None
            if len(values) > 1:
                n = len(values) if len(values) < 3 else sum(1 for _ in program.input_value(record))
                raise DataKeyError(data_key, n)
            return values[0] if values else None

        return key
    return lambda record: record.get(data_key)


def custom_id_of(record: dict[str, Any], key: Callable[[dict[str, Any]], Any]) -> str | None:
    value = key(record)
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else dumps(value)


class Template:
    """A prompt with `{field}` or `{.jq.path}` placeholders; `{{` and `}}` are literal braces."""

    def __init__(self, text: str) -> None:
        self.text = text
        rest = PLACEHOLDER.sub("", text)
        # A brace left after the placeholders is sent as it is: almost always a typo.
        self.unclosed = "{" in rest or "}" in rest
        self.fields: dict[str, Any] = {}
        # The text cut at its placeholders, once: literals[0] name[0] literals[1] ... (a {{ or
        # }} is its one brace in a literal), so a fill joins strings instead of a regex's sub.
        self.literals, self.names, pos = [""], [], 0
        for m in PLACEHOLDER.finditer(text):
            name = m.group(1)
            self.literals[-1] += text[pos : m.start()]
            pos = m.end()
            if not name:
                self.literals[-1] += m.group(0)[0]
                continue
            self.names.append(name)
            self.literals.append("")
            if name not in self.fields:
                path = name.strip()
                self.fields[name] = (
                    compile_jq(path, "placeholder") if path.startswith(".") else None
                )
        self.literals[-1] += text[pos:]

    def fill(
        self, record: dict[str, Any], defaults: dict[str, str] | None = None
    ) -> tuple[str, list[str]]:
        """The filled text and the placeholders the record lacks (None or absent)."""
        values: dict[str, str] = {}
        missing: list[str] = []
        for name, program in self.fields.items():
            value = jq_first(program, record) if program else record.get(name)
            if value is None and defaults is not None:
                value = defaults.get(name, "")
            if value is None:
                missing.append(name)
            else:
                values[name] = value if isinstance(value, str) else dumps(value)

        out = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            out += (values.get(name, ""), literal)
        return "".join(out), missing
