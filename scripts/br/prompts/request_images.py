"""The images of built requests: local files resolved, sizes checked, URLs preflighted.

make_requests.py (and plan.py, which builds the same requests in memory) pass the requests of
`build_requests` through `with_images`: each image part's value becomes what images.py
resolves it to (a URL as is, a local file as a `br-image:` reference), and a request whose
image cannot be sent comes back without its request and with the reason for skipped.jsonl:

    for built, reason in with_images(build_requests(...), local, checker):
        if built.request is None: ...skipped, with `reason` when it is the image's fault

Image skips do not count toward the five-missing-fields-in-a-row rule: that rule catches a
wrong prompt, while a missing photo is the data's business.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

from br.prompts.images import (
    API_FILE_LIMIT,
    MARKER,
    ImageSkip,
    LocalImages,
    image_parts,
    materialised_size,
    with_image_urls,
)
from br.prompts.preflight import Preflight, remote_url
from br.records import dumps


class BuiltLike(Protocol):
    request: dict[str, Any] | None


B = TypeVar("B", bound=BuiltLike)


def resolve_request(request: dict[str, Any], local: LocalImages) -> None:
    """Each image url of the request replaced by what it resolves to; ImageSkip if one fails."""
    request["body"] = with_image_urls(request.get("body"), lambda url: local.resolve(url).url)


def size_reason(request: dict[str, Any], limit: int = API_FILE_LIMIT) -> str | None:
    """Why a request with inline images cannot go in any batch file, if it cannot."""
    line = dumps(request)
    if MARKER not in line:
        return None  # no local image: the request's own size is checked where it is written
    size = materialised_size(line) + 1
    if size > limit:
        return (
            f"the request is {size:,} bytes with its image inline, over the Batch API's "
            f"{limit:,}-byte file limit; set image_max_side"
        )
    return None


def skip(built: B) -> B:
    return dataclasses.replace(built, request=None)  # type: ignore[type-var]


def with_images(
    builts: Iterable[B], local: LocalImages | None, checker: Preflight | None = None
) -> Iterator[tuple[B, str | None]]:
    """Each built request with its images resolved, or skipped with the reason (in order)."""

    def resolved() -> Iterator[tuple[B, str | None]]:
        for built in builts:
            request = built.request
            if request is None or local is None:
                yield built, None
                continue
            if not any(True for _ in image_parts(request.get("body"))):
                yield built, None
                continue
            try:
                resolve_request(request, local)
            except ImageSkip as e:
                yield skip(built), str(e)
                continue
            reason = size_reason(request)
            # A copy: what was derived from the request before (a cached line) is derived again.
            yield (skip(built), reason) if reason else (dataclasses.replace(built), None)

    if checker is None:
        yield from resolved()
        return

    def url_of(item: tuple[B, str | None]) -> str | None:
        request = item[0].request
        return remote_url(request) if request is not None else None

    for (built, reason), verdict in checker.filter(resolved(), url_of):
        if verdict:
            yield skip(built), verdict
        else:
            yield built, reason


def reason_kinds(reasons: Iterable[str]) -> str:
    """A short tally of skip reasons for a summary line: '2 file not found, 1 HTTP 403'."""
    kinds: Counter[str] = Counter()
    for reason in reasons:
        # "image_path: img/a.png: file not found" -> "file not found"; keep "HTTP 403" whole.
        kind = reason.rsplit(": ", 1)[-1].split(";")[0].split(" (")[0]
        kinds[kind] += 1
    return ", ".join(f"{n} {k}" for k, n in kinds.most_common(4)) + (
        ", ..." if len(kinds) > 4 else ""
    )
