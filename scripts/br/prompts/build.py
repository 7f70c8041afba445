"""Records -> requests: one Batch API request per selected record, in its endpoint's shape.

A record's request is built once: its templates filled (templates.py), its image resolved
(a URL as it is, a local file as a `br-image:` reference to its bytes; images/cache.py), then
the body of the step's endpoint made from both (endpoints.py). A record that lacks a prompt
field is skipped (`missing`); one whose image cannot be sent is skipped with its `reason`.

    for built in build_requests(records, step, data_key, local=local):
        built.request  # the request line's object, or None: skipped (built.missing, built.reason)

`step_requests` adds the preflight of image URLs: what make_requests.py writes, plan.py counts
and merge_results.py checks the answered requests against. Image skips do not count toward the
five-missing-fields-in-a-row rule: that rule catches a wrong prompt, while a missing photo is
the data's business.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError, note

# isort: split

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from br.config import Step, compile_jq
from br.digests import DigestSet
from br.limits import MAX_FILE_BYTES
from br.prompts.endpoints import request_body
from br.prompts.images.cache import LocalImages
from br.prompts.images.formats import ImageSkip
from br.prompts.images.identity import MARKER, materialised_size, request_hash
from br.prompts.request_images import image_arguments, step_images
from br.prompts.shapes import Shapes
from br.prompts.templates import (
    DataKeyError,
    Template,
    custom_id_of,
    jq_first,
    key_function,
)
from br.prompts.tokens import estimate_tokens, is_gemini
from br.records import dumps

if TYPE_CHECKING:  # the preflight (http.client, threads) is loaded only by a run that checks
    from br.prompts.preflight import Preflight

# The request builder's face: other rooms and the original tool import these from here.
__all__ = [
    "Built",
    "RequestBuilder",
    "build_requests",
    "step_requests",
    "compile_jq",
    "custom_id_of",
    "jq_first",
    "key_function",
    "image_arguments",
    "step_images",
]

IMAGE_TOKENS_AT_MOST = 1600  # one image's tokens by tokens.py, Gemini aside (see Oversized)
MAX_CONSECUTIVE_MISSING = 5  # the original tool's rule: five in a row means the prompt is wrong
QUESTION_DEFAULTS = {"dialog_history": "", "cleaned_caption": ""}


@dataclass
class Built:
    index: int
    custom_id: str | None
    request: dict[str, Any] | None  # None: skipped
    missing: list[str]
    selected: bool = True  # False: left out by `where:` (yielded only with every=True)
    reason: str | None = None  # why its image cannot be sent (for skipped.jsonl)
    shaped: Callable[[], tuple[str, str] | None] | None = None  # line and hash (shapes.py)

    @cached_property
    def encoded(self) -> tuple[str, str]:
        shaped = self.shaped() if self.shaped is not None else None
        if shaped is not None:
            return shaped
        line = dumps(self.request) + "\n"
        return line, request_hash(self.request or {}, line)

    @property
    def line(self) -> str:
        """The request as its line in requests.jsonl (serialised once)."""
        return self.encoded[0]

    @property
    def hash(self) -> str:
        """Its request_hash: the key its answer is found by."""
        return self.encoded[1]


def skipped(built: Built, reason: str) -> Built:
    """The record skipped for its image, with the reason."""
    return dataclasses.replace(built, request=None, reason=reason)


class RequestBuilder:
    """Turns records into Batch API request lines for one step; with `local`, each image
    field is resolved (a local file read, checked and referenced) before the body is built."""

    def __init__(self, step: Step, data_key: str, local: LocalImages | None = None) -> None:
        self.step = step
        self.data_key = data_key
        self.key = key_function(data_key)
        self.local = local
        self.shapes = Shapes(step)
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
        if image and self.local is not None:
            try:
                image = self.local.resolve(image).url
            except ImageSkip as e:
                return Built(index, custom_id, None, [], reason=str(e))
        body = request_body(self.step, texts, image)
        request = {"custom_id": custom_id or "", "method": "POST", "url": self.step.endpoint}
        shaped = partial(self.shapes.encode, custom_id or "", texts, image)
        return Built(index, custom_id, {**request, "body": body}, [], shaped=shaped)


def step_requests(
    records: Iterable[dict[str, Any]],
    step: Step,
    data_key: str,
    local: LocalImages | None,
    checker: Preflight | None,
    response_key: str | None = None,
    warn: Callable[[str], None] = note,
    every: bool = False,
    window: bool = True,
) -> Iterator[tuple[Built, str | None]]:
    """Every record built (build_requests) and, with `checker`, its image URL preflighted:
    (built, why it is skipped for its image) in order."""
    builts = build_requests(records, step, data_key, response_key, warn, every, local, window)
    if checker is None:
        for built in builts:
            yield built, built.reason
        return
    from br.prompts.preflight import remote_url

    def url_of(built: Built) -> str | None:
        return remote_url(built.request) if built.request is not None else None

    for built, verdict in checker.filter(builts, url_of):
        yield (skipped(built, verdict), verdict) if verdict else (built, built.reason)


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


def inline_size_reason(line: str, limit: int = MAX_FILE_BYTES) -> str | None:
    """Why a request line with local images, sent inline, cannot go in any batch file."""
    if MARKER not in line:
        return None  # no local image: the request's own size is checked by Oversized
    size = materialised_size(line)
    if size > limit:
        return (
            f"the request is {size:,} bytes with its image inline, over the Batch API's "
            f"{limit:,}-byte file limit; set image_max_side"
        )
    return None


class Oversized:
    """Requests over the model's context window (a warning) or the per-file limit (an error).

    `window` False: no token estimate at all (the merge, which says no warning). Nor is a
    request whose bound fits the window: every rule in tokens.py counts a body at most one
    token per character of its JSON (a token per 4 characters of text, 4 per message of at
    least 14 characters), plus its image: a step has one image field, and one image is at
    most IMAGE_TOKENS_AT_MOST (Claude's cap 1,568; OpenAI's high detail 85 + 8 tiles x 170 =
    1,445). Gemini's tiles have no such cap: a Gemini step with an image is always estimated.
    """

    def __init__(self, step: Step, window: bool = True, images: bool = True) -> None:
        self.step = step
        self.window = step.context_window if window else None
        self.image_bound = IMAGE_TOKENS_AT_MOST if images else 0
        if images and is_gemini(step.model):
            self.image_bound = None
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
        window, image = self.window, self.image_bound
        if window is None or (image is not None and len(line) + image <= window):
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
    records: Iterable[dict[str, Any]],
    step: Step,
    data_key: str,
    response_key: str | None = None,
    warn: Callable[[str], None] = note,
    every: bool = False,
    local: LocalImages | None = None,
    window: bool = True,
) -> Iterator[Built]:
    """Every selected record, built or skipped, after checking data keys and the missing rule.

    Also warns about unclosed placeholders, requests over the context window and a `where:`
    that selects nothing; stops (UserError) on `where:` errors, a request over the file limit,
    missing or duplicate data keys, and a `response_key` a record to be sent already holds.
    `warn` prints the warnings (the merge, which builds the requests again, passes one that
    keeps them quiet: make_requests said them already), `every` yields the records `where:`
    leaves out too (selected=False), one Built a record, and `local` resolves the images
    (without it an image field's value is sent as it is: the original tool's way); `window`
    False skips the context-window estimate (the merge, whose warnings are quiet).
    """
    builder = RequestBuilder(step, data_key, local)
    for warning in builder.warnings:
        warn(warning)
    oversized = Oversized(step, window, images=builder.image is not None)
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
            if built.missing:
                streak.append(built)
                if len(streak) >= MAX_CONSECUTIVE_MISSING:
                    fields = sorted({f for b in streak for f in b.missing})
                    raise UserError(
                        f"{MAX_CONSECUTIVE_MISSING} consecutive records (index "
                        f"{streak[0].index} to {built.index}) lack the prompt field(s) "
                        f"{', '.join(fields)} of step '{step.name}'; check the placeholders in "
                        "the config against the dataset"
                    )
                yield built
                continue
            streak = []
            if built.request is not None:
                oversized.check(built)
                reason = inline_size_reason(built.line)
                built = skipped(built, reason) if reason else built
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
