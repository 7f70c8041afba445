"""Build requests.jsonl: one request per record of the dataset, to the step's endpoint.

Reads INPUT (a JSON list of objects, or JSONL) and the step of CONFIG; writes one Batch API
request line per selected record, with custom_id taken from the data key, and skipped.jsonl
listing the records left out because a prompt field was missing. A rerun that produces the
same bytes leaves both files untouched, so nothing downstream is rebuilt or resent.

Images (request_images.py): a local image becomes a `br-image:` reference to its bytes (the
chunks get the data URL), a file that cannot be sent is skipped with its reason, and with
--preflight-cache each image URL is checked first (preflight.py); records whose image fails
are in skipped.jsonl with a `reason`.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, note

# isort: split

import dataclasses
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from br.config import Step, compile_jq
from br.digests import DigestSet
from br.prompts.endpoints import EMBEDDINGS, RESPONSES, chat_body, embeddings_body, responses_body
from br.prompts.images import ImageOptions, LocalImages
from br.prompts.preflight import Preflight
from br.prompts.request_images import with_images
from br.prompts.tokens import estimate_tokens
from br.records import dumps

__all__ = [
    "RequestBuilder",
    "build_requests",
    "step_requests",
    "compile_jq",
    "custom_id_of",
    "key_function",
]

MAX_CONSECUTIVE_MISSING = 5  # the original tool's rule: five in a row means the prompt is wrong
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")
QUESTION_DEFAULTS = {"dialog_history": "", "cleaned_caption": ""}
# The Batch API's limit for a whole input file (FACTS.md: 200 MB); one request over it can
# never be sent.
MAX_FILE_BYTES = 200 * 1024 * 1024


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
    selected: bool = True  # False: left out by `where:` (yielded only with every=True)

    @cached_property
    def line(self) -> str:
        """The request as its line in requests.jsonl (serialised once)."""
        return dumps(self.request) + "\n"


class RequestBuilder:
    """Turns records into Batch API request lines for one step."""

    def __init__(self, step: Step, data_key: str) -> None:
        self.step = step
        self.data_key = data_key
        self.key = key_function(data_key)
        self.where = compile_jq(step.where, f"step '{step.name}' where:") if step.where else None
        self.where_errors = 0
        self.first_where_error: tuple[int, str] | None = None  # (record index, jq's message)
        named: list[tuple[str, Template]]
        if step.kind == "question":
            named = [
                ("context", Template(step.templates["context"])),
                ("dialog_history", Template(step.templates["dialog_history"])),
            ]
            if step.user:
                named.append(("user", Template(step.user)))
            self.image: Template | None = Template(step.templates["image_url"])
        else:
            named = [("user", Template(step.user or ""))]
            self.image = Template("{" + step.image_key + "}") if step.is_multimodal else None
        self.parts = [template for _, template in named]
        self.warnings = [
            f"warning: step '{step.name}' {what}: a '{{' with no closing '}}' is sent as "
            f"literal text ({template.text.strip()[:60]!r}); close the placeholder, or write "
            "{{ and }} for literal braces"
            for what, template in named
            if template.unclosed
        ]

    def selected(self, record: dict[str, Any], index: int = -1) -> bool:
        """`where:` with jq's truthiness: anything but false and null (or no output) selects.

        A jq error on a record is counted (with the first record's index) and the record is
        left out; build_requests then stops with an error before anything is written or paid.
        """
        if self.where is None:
            return True
        try:
            value = next(iter(self.where.input_value(record)), None)
        except ValueError as e:
            self.where_errors += 1
            if self.first_where_error is None:
                self.first_where_error = (index, str(e).splitlines()[0])
            return False
        return value is not None and value is not False

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
        """The request line; a responses step's body is a chat draft until `shaped` (below), so
        that request_images resolves its image in `messages` first."""
        step = self.step
        if step.endpoint == EMBEDDINGS:
            body = embeddings_body(step, texts[0])
        else:
            body = chat_body(step, texts, image)
        return {"custom_id": custom_id, "method": "POST", "url": step.endpoint, "body": body}


def shaped(built: Built) -> Built:
    """A built request in its endpoint's shape (responses: instructions and input)."""
    request = built.request
    if request is None or request["url"] != RESPONSES:
        return built
    request = {**request, "body": responses_body(request["body"])}
    return dataclasses.replace(built, request=request)


def step_requests(
    records: Iterator[dict[str, Any]],
    step: Step,
    data_key: str,
    local: LocalImages | None,
    checker: Preflight | None,
    response_key: str | None = None,
    warn: Callable[[str], None] = note,
    every: bool = False,
) -> Iterator[tuple[Built, str | None]]:
    """Every record built (build_requests), its images resolved (with_images), in the shape
    of the step's endpoint: what make_requests.py writes, plan.py counts and merge_results.py
    checks the answered requests against."""
    builts = build_requests(records, step, data_key, response_key, warn, every)
    for built, reason in with_images(builts, local, checker):
        yield shaped(built), reason


def is_rounds(value: Any) -> bool:
    """A question step's earlier rounds: a list of {question, answer}, which it appends to."""
    return isinstance(value, list) and all(
        isinstance(r, dict) and {"question", "answer"} <= set(r) for r in value
    )


def check_response_key(step: Step, key: str, index: int, record: dict[str, Any]) -> None:
    """Merging puts each answer under the response key: a field the record already holds would
    be overwritten in every record, the user's own data lost. The question step's earlier
    rounds are the exception: it appends to them."""
    if record.get(key) is None or (step.kind == "question" and is_rounds(record[key])):
        return
    raise UserError(
        f"response_key '{key}' of step '{step.name}' names a field the data already has "
        f"(record {index}, maybe more); merging would overwrite it with the answers: choose "
        "another response_key in the config (or RESPONSE_KEY=...)"
    )


class Oversized:
    """Requests over the model's context window (a warning) or the per-file limit (an error)."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.count = 0
        self.largest: tuple[int, str] = (0, "")  # (estimated tokens, custom_id)

    def check(self, built: Built) -> None:
        line = built.line
        if len(line) * 4 > MAX_FILE_BYTES and len(line.encode()) > MAX_FILE_BYTES:
            raise UserError(
                f"the request for '{built.custom_id}' (record {built.index}) is "
                f"{len(line.encode()) / 1e6:,.0f} MB, over the Batch API's 200 MB limit for a "
                "whole input file; shorten that record or leave it out"
            )
        window = self.step.context_window
        if window is None:
            return
        assert built.request is not None
        tokens = estimate_tokens(built.request["body"], built.request["url"])
        if tokens > window:
            self.count += 1
            self.largest = max(self.largest, (tokens, built.custom_id or ""))

    def warning(self) -> str | None:
        if not self.count:
            return None
        tokens, cid = self.largest
        return (
            f"warning: {self.count} request(s) of step '{self.step.name}' exceed the context "
            f"window of {self.step.model} ({self.step.context_window:,} tokens; estimated, the "
            f"largest is '{cid}' at about {tokens:,}); they would fail with "
            "context_length_exceeded: shorten those records, or set context_windows: in the "
            "config if the model's window is larger"
        )


def build_requests(
    records: Iterator[dict[str, Any]],
    step: Step,
    data_key: str,
    response_key: str | None = None,
    warn: Callable[[str], None] = note,
    every: bool = False,
) -> Iterator[Built]:
    """Every selected record, built or skipped, after checking data keys and the missing rule.

    Also warns about unclosed placeholders, requests over the context window and a `where:`
    that selects nothing; stops (UserError) on `where:` errors, a request over the file limit,
    missing or duplicate data keys, and a `response_key` a record to be sent already holds.
    `warn` prints the warnings (the merge, which builds the requests again, passes one that
    keeps them quiet: make_requests said them already), and `every` yields the records
    `where:` leaves out too (selected=False), one Built a record.
    """
    builder = RequestBuilder(step, data_key)
    for warning in builder.warnings:
        warn(warning)
    oversized = Oversized(step)
    duplicates: dict[str, int] = {}  # the first few duplicated keys, with their counts
    repeated = 0  # every record whose key came before
    no_key: list[int] = []
    streak: list[Built] = []
    total = selected = 0

    def count(found: list[Any]) -> None:
        nonlocal repeated
        for key in found:
            repeated += 1
            if key in duplicates or len(duplicates) < 5:
                duplicates[key] = duplicates.get(key, 1) + 1

    with DigestSet() as seen:
        for index, record in enumerate(records):
            total += 1
            if not builder.selected(record, index):
                if every:
                    yield Built(index, None, None, [], selected=False)
                continue
            selected += 1
            try:
                built = builder.build(index, record)
            except DataKeyError as e:
                raise UserError(
                    f"DATA_KEY '{e.data_key}' gives {e.n} values for record {index}; it must "
                    "give one value per record (e.g. '.tags[0]' or '.tags | join(\",\")')"
                ) from None
            if built.custom_id is None:
                no_key.append(index)
            else:
                count(seen.add(built.custom_id))
            if built.request is None:
                streak.append(built)
                if len(streak) >= MAX_CONSECUTIVE_MISSING:
                    fields = sorted({f for b in streak for f in b.missing})
                    raise UserError(
                        f"{MAX_CONSECUTIVE_MISSING} consecutive records (index "
                        f"{streak[0].index} to {built.index}) lack the prompt field(s) "
                        f"{', '.join(fields)} of step '{step.name}'; check the placeholders in "
                        "the config against the dataset"
                    )
            else:
                streak = []
                oversized.check(built)
                if response_key is not None:
                    check_response_key(step, response_key, index, record)
            yield built
        count(seen.flush())
    if builder.first_where_error is not None:
        index, message = builder.first_where_error
        raise UserError(
            f"step '{step.name}' where: '{step.where}' failed on {builder.where_errors} of "
            f"{total} records (first: record {index}: {message}); fix the expression (jq's "
            "'?' or '// false' skip a record instead); nothing was written"
        )
    if step.where and total and not selected:
        warn(
            f"warning: step '{step.name}' where: '{step.where}' selects 0 of {total} records; "
            "nothing will be sent (check the expression against the data)"
        )
    warning = oversized.warning()
    if warning:
        warn(warning)
    if no_key:
        shown = ", ".join(map(str, no_key[:5])) + (" ..." if len(no_key) > 5 else "")
        raise UserError(
            f"{len(no_key)} record(s) have no usable data key (index {shown}); set DATA_KEY to a "
            "field every record has (a string or number), or a jq expression like '.title'"
        )
    if duplicates:
        shown = ", ".join(f"'{k}' x{n}" for k, n in duplicates.items())
        others = repeated - sum(n - 1 for n in duplicates.values())
        raise UserError(
            f"the data key is not unique: {shown}"
            + (f" and {others} more repeat(s)" if others else "")
            + "; set DATA_KEY to a unique field (or a jq expression) or deduplicate the input"
        )


def image_arguments(parser: Any) -> None:
    """Where local images are found and kept, and the preflight of image URLs."""
    parser.add_argument(
        "--image-root", type=Path, help="local image paths are relative to this (INPUT's folder)"
    )
    parser.add_argument("--images", type=Path, help="resized images and their index (images/)")
    parser.add_argument(
        "--preflight-cache", type=Path, help="check image URLs first, remembering passes here"
    )
    parser.add_argument("--preflight-timeout", type=float, default=10.0, help="seconds a URL")


def step_images(
    args: Any, step: Step, cache: Path | None, read_only: bool = False
) -> tuple[LocalImages, Preflight | None]:
    """The step's local-image resolver and, with --preflight-cache, its URL checker."""
    field = "image_url" if step.kind == "question" else step.image_key
    root = args.image_root if args.image_root is not None else Path(args.input).parent
    local = LocalImages(root, ImageOptions.from_step(step), cache, field, read_only)
    checker = None
    if args.preflight_cache is not None:
        # read_only (make plan): the cache's verdicts only; nothing is checked or saved.
        checker = Preflight(args.preflight_cache, field, args.preflight_timeout, offline=read_only)
    return local, checker
