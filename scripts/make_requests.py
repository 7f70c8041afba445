"""Build requests.jsonl: one /v1/chat/completions request per record of the dataset.

Reads INPUT (a JSON list of objects, or JSONL) and the step of CONFIG; writes one Batch API
request line per selected record, with custom_id taken from the data key, and skipped.jsonl
listing the records left out because a prompt field was missing. A rerun that produces the
same bytes leaves both files untouched, so nothing downstream is rebuilt or resent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jq
from cli import UserError, note, run, step_arguments
from config import ENDPOINT, Step, load_config
from files import atomic_output, write_jsonl
from records import dumps, iter_records

MAX_CONSECUTIVE_MISSING = 5  # the original tool's rule: five in a row means the prompt is wrong
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")
QUESTION_DEFAULTS = {"dialog_history": "", "cleaned_caption": ""}


def compile_jq(expression: str, what: str) -> Any:
    try:
        return jq.compile(expression)
    except ValueError as e:
        first = str(e).splitlines()[0]
        raise UserError(f"{what} '{expression}' is not a valid jq expression: {first}")


def jq_first(program: Any, record: dict[str, Any]) -> Any:
    try:
        return next(iter(program.input_value(record)), None)
    except ValueError:
        return None


def key_function(data_key: str) -> Callable[[dict[str, Any]], Any]:
    """A plain field name, or a jq expression when it starts with '.' (`.title + " " + .year`)."""
    if data_key.startswith("."):
        program = compile_jq(data_key, "DATA_KEY")
        return lambda record: jq_first(program, record)
    return lambda record: record.get(data_key)


def custom_id_of(record: dict[str, Any], key: Callable[[dict[str, Any]], Any]) -> str | None:
    value = key(record)
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else json.dumps(value)


class Template:
    """A prompt with `{field}` or `{.jq.path}` placeholders; `{{` and `}}` are literal braces."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.fields: dict[str, Any] = {}
        for m in PLACEHOLDER.finditer(text):
            name = m.group(1)
            if name and name not in self.fields:
                path = name.strip()
                self.fields[name] = (
                    compile_jq(path, "placeholder") if path.startswith(".") else None
                )

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

        def replace(m: re.Match[str]) -> str:
            if m.group(0) in ("{{", "}}"):
                return m.group(0)[0]
            return values.get(m.group(1), "")

        return PLACEHOLDER.sub(replace, self.text), missing


@dataclass
class Built:
    index: int
    custom_id: str | None
    request: dict[str, Any] | None  # None: skipped
    missing: list[str]


class RequestBuilder:
    """Turns records into Batch API request lines for one step."""

    def __init__(self, step: Step, data_key: str) -> None:
        self.step = step
        self.key = key_function(data_key)
        self.where = compile_jq(step.where, f"step '{step.name}' where:") if step.where else None
        if step.kind == "question":
            self.parts = [
                Template(step.templates["context"]),
                Template(step.templates["dialog_history"]),
            ]
            if step.user:
                self.parts.append(Template(step.user))
            self.image: Template | None = Template(step.templates["image_url"])
        else:
            self.parts = [Template(step.user or "")]
            self.image = Template("{" + step.image_key + "}") if step.is_multimodal else None

    def selected(self, record: dict[str, Any]) -> bool:
        return self.where is None or jq_first(self.where, record) is True

    def build(self, index: int, record: dict[str, Any]) -> Built:
        # The question step allows blank fields, as the original tool did.
        defaults = QUESTION_DEFAULTS if self.step.kind == "question" else None
        texts, missing = [], []
        for template in self.parts:
            text, lacking = template.fill(record, defaults)
            texts.append(text)
            missing += lacking
        image = None
        if self.image:
            image, lacking = self.image.fill(record, defaults)
            missing += lacking
        custom_id = custom_id_of(record, self.key)
        if missing:
            return Built(index, custom_id, None, sorted(set(missing)))
        return Built(index, custom_id, self.request(custom_id or "", texts, image), [])

    def request(self, custom_id: str, texts: list[str], image: str | None) -> dict[str, Any]:
        step = self.step
        messages: list[dict[str, Any]] = []
        if step.system:
            messages.append({"role": "system", "content": step.system})
        if image is None and len(texts) == 1:
            content: Any = texts[0]
        else:
            content = [{"type": "text", "text": t} for t in texts if t]
            if image:
                part: dict[str, Any] = {"url": image}
                if step.image_detail:
                    part["detail"] = step.image_detail
                content.append({"type": "image_url", "image_url": part})
        messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {"model": step.model, "messages": messages, **step.body}
        if step.response_format:
            body["response_format"] = step.response_format
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def build_requests(records: Iterator[dict[str, Any]], step: Step, data_key: str) -> Iterator[Built]:
    """Every selected record, built or skipped, after checking data keys and the missing rule."""
    builder = RequestBuilder(step, data_key)
    seen: set[bytes] = set()
    duplicates: dict[str, int] = {}
    no_key: list[int] = []
    streak: list[Built] = []
    for index, record in enumerate(records):
        if not builder.selected(record):
            continue
        built = builder.build(index, record)
        if built.custom_id is None:
            no_key.append(index)
        else:
            digest = hashlib.blake2b(built.custom_id.encode(), digest_size=16).digest()
            if digest in seen:
                duplicates[built.custom_id] = duplicates.get(built.custom_id, 1) + 1
            seen.add(digest)
        if built.request is None:
            streak.append(built)
            if len(streak) >= MAX_CONSECUTIVE_MISSING:
                fields = sorted({f for b in streak for f in b.missing})
                raise UserError(
                    f"{MAX_CONSECUTIVE_MISSING} consecutive records (index {streak[0].index} to "
                    f"{built.index}) lack the prompt field(s) {', '.join(fields)} of step "
                    f"'{step.name}'; check the placeholders in the config against the dataset"
                )
        else:
            streak = []
        yield built
    if no_key:
        shown = ", ".join(map(str, no_key[:5])) + (" ..." if len(no_key) > 5 else "")
        raise UserError(
            f"{len(no_key)} record(s) have no usable data key (index {shown}); set DATA_KEY to a "
            "field every record has (a string or number), or a jq expression like '.title'"
        )
    if duplicates:
        shown = ", ".join(f"'{k}' x{n}" for k, n in list(duplicates.items())[:5])
        raise UserError(
            f"the data key is not unique: {shown}"
            + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
            + "; set DATA_KEY to a unique field (or a jq expression) or deduplicate the input"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    step_arguments(parser)
    parser.add_argument("-o", "--output", required=True, type=Path, help="requests.jsonl")
    parser.add_argument("--skipped", required=True, type=Path, help="skipped.jsonl")
    args = parser.parse_args(argv)

    step = load_config(args.config).step(args.step)
    skipped: list[dict[str, Any]] = []
    n = 0
    with atomic_output(args.output) as f:
        for built in build_requests(iter_records(args.input), step, args.data_key):
            if built.request is None:
                skipped.append(
                    {"index": built.index, "custom_id": built.custom_id, "missing": built.missing}
                )
            else:
                f.write(dumps(built.request) + "\n")
                n += 1
    write_jsonl(args.skipped, skipped)
    note(
        f"{args.output}: {n} requests for step '{step.name}'"
        + (
            f"; {len(skipped)} records skipped for missing fields (see {args.skipped})"
            if skipped
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
