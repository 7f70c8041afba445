"""What an answer becomes in its record (`Merger`): the text, or for structured output the parsed
JSON checked against the step's schema, passed through the step's `extract:` jq expression; the
`question` step appends a {question, answer} round to a list and to dialog_history instead."""

from __future__ import annotations

import json
import re
from typing import Any

from br.config import Step, compile_jq
from br.prompts.build import key_function
from br.records import _DECODER

QA = re.compile(
    r"(?:Q(?:uestion)?\s*[:.]\s*)(?P<q>.+?)\s*A(?:nswer)?\s*[:.]\s*(?P<a>.+)", re.S | re.I
)


class Merger:
    def __init__(self, step: Step, data_key: str, response_key: str) -> None:
        self.step = step
        self.data_key = data_key
        self.key = key_function(data_key)
        self.response_key = response_key
        self.extract = (
            compile_jq(step.extract, f"step '{step.name}' extract:") if step.extract else None
        )
        fmt = (step.response_format or {}).get("type")
        self.json = fmt in {"json_schema", "json_object"} or step.kind == "question"
        self.validator = None
        if step.schema is not None:  # jsonschema is loaded only by a step with a schema
            import jsonschema

            self.validator = jsonschema.Draft202012Validator(step.schema)

    def value(self, text: str) -> Any:
        """The stored value of a response text; raises ValueError with a code for bad ones."""
        value: Any = text
        if self.json:  # structured output, or a question step's round
            try:  # as a dataset is read: no NaN or Infinity, 1e400 kept as written
                value = _DECODER.decode(text)
            except (ValueError, RecursionError) as e:
                if self.step.kind != "question":
                    why = e.msg if isinstance(e, json.JSONDecodeError) else f"{e} is not JSON"
                    raise ValueError("invalid_json", f"the response is not JSON: {why}")
        if self.validator is not None:
            from jsonschema.exceptions import best_match

            error = best_match(self.validator.iter_errors(value))
            if error is not None:
                where = "/".join(map(str, error.absolute_path)) or "the top level"
                raise ValueError("schema_mismatch", f"at {where}: {error.message}")
        if self.extract is not None:
            try:
                out = list(self.extract.input_value(value))
            except ValueError as e:  # a jq error on this response: keep which expression
                message = str(e).splitlines()[0]
                raise ValueError(
                    "extract_failed", f"extract '{self.step.extract}' failed: {message}"
                ) from None
            if not out:
                raise ValueError("extract_empty", f"extract '{self.step.extract}' gave nothing")
            value = out[0]
        return value

    def apply(self, record: dict[str, Any], value: Any) -> dict[str, Any]:
        if self.step.kind != "question":
            return {**record, self.response_key: value}
        question, answer = question_answer(value)
        rounds = record.get(self.response_key)
        rounds = list(rounds) if isinstance(rounds, list) else []
        history = record.get("dialog_history") or ""
        return {
            **record,
            self.response_key: rounds + [{"question": question, "answer": answer}],
            "dialog_history": f"{history}Question: {question}\nAnswer: {answer}\n",
        }


def question_answer(value: Any) -> tuple[str, str]:
    """A question round from {question, answer} JSON or 'Question: ... Answer: ...' text."""
    if isinstance(value, dict) and "question" in value and "answer" in value:
        return str(value["question"]), str(value["answer"])
    m = QA.search(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(
            "invalid_question", "expected {question, answer} or 'Question: … Answer: …'"
        )
    return m["q"].strip(), m["a"].strip()
