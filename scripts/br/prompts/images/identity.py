"""What a request refers to and what makes it the same request: image markers, data URLs, the
image parts of a body, and `request_hash`.

Identity: `canonical_url` maps a `br-image:` marker, and a data URL, to `sha256:<digest of the
image bytes>`, and `request_hash` hashes the body with those: a request's reuse hash covers the
image's content (a changed file is sent again, an unchanged one is not), and the marker in
requests.jsonl and the data URL in its chunk hash alike. Resizing options change the bytes,
hence the hash.

Light on purpose (the standard library only, no Pillow): the split, the engine and the merge
hash every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from br.cli import UserError

MARKER = "br-image:"
# A marker as it appears in a JSON line: a JSON string starting with the marker prefix.
MARKER_IN_JSON = re.compile(r'"br-image:[0-9a-f]{64}:[^"\\]*(?:\\.[^"\\]*)*"')


# json.dumps(sort_keys=True, separators=(",", ":")), its encoder made once, not per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def request_hash(request: dict[str, Any], line: str | None = None) -> str:
    """Identity of a request for reuse: its url and body, not its custom_id.

    An inline or local image counts by the sha256 of its bytes (`canonical_body`), so the
    reference in requests.jsonl and the data URL in its chunk hash alike. `line`, the request's
    JSON text when the caller has it: without a marker or a data URL in it (nor a \\u escape,
    which could spell one) no image url can change, and the body is hashed as it is (the same
    hash, without walking it).
    """
    return hashlib.sha256(canonical_text(request, line).encode()).hexdigest()


def canonical_text(request: dict[str, Any], line: str | None = None) -> str:
    """The text `request_hash` hashes: [url, body], keys sorted, ASCII, image data canonical."""
    body = request.get("body")
    if line is None or MARKER in line or "data:" in line or "\\u" in line:
        body = canonical_body(body)
    return _CANONICAL([request.get("url"), body])


# ----------------------------------------------------------------------------- markers


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_url(url: str) -> bytes | None:
    """The bytes of a base64 data URL, or None if it is not one."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def make_marker(sha: str, mime: str, nbytes: int, width: int, height: int, path: Path) -> str:
    return f"{MARKER}{sha}:{mime}:{nbytes}:{width}x{height}:{path}"


@dataclass(frozen=True)
class Marker:
    sha256: str
    mime: str
    nbytes: int
    width: int
    height: int
    path: Path

    @classmethod
    def parse(cls, url: str) -> Marker | None:
        if not url.startswith(MARKER):
            return None
        try:
            sha, mime, nbytes, dims, path = url[len(MARKER) :].split(":", 4)
            width, height = dims.split("x")
            return cls(sha, mime, int(nbytes), int(width), int(height), Path(path))
        except ValueError:
            return None

    @property
    def data_url_length(self) -> int:
        return len(f"data:{self.mime};base64,") + 4 * math.ceil(self.nbytes / 3)


def canonical_url(url: str) -> str:
    """An image url for request identity: `sha256:<digest>` for local and inline images."""
    marker = Marker.parse(url)
    if marker:
        return f"sha256:{marker.sha256}"
    if url.startswith("data:"):
        data = decode_data_url(url)
        if data is not None:
            return f"sha256:{hashlib.sha256(data).hexdigest()}"
    return url


def canonical_body(body: Any) -> Any:
    """The body with each image part's url made canonical (a copy only where one changes)."""

    def canonical(url: str) -> str:
        return canonical_url(url) if url.startswith((MARKER, "data:")) else url

    return with_image_urls(body, canonical)


# ----------------------------------------------------------------------------- image parts


def message_lists(body: Any) -> Iterator[tuple[str, list[Any]]]:
    """The lists of messages of a chat (`messages`) or Responses (`input`) body."""
    for key in ("messages", "input"):
        items = body.get(key) if isinstance(body, dict) else None
        if isinstance(items, list):
            yield key, items


def part_image(part: Any) -> tuple[str, str | None] | None:
    """(url, detail) of an image part: chat's `image_url` or the Responses API's `input_image`."""
    if not isinstance(part, dict):
        return None
    if part.get("type") == "image_url":
        image = part.get("image_url")
        image = image if isinstance(image, dict) else {"url": image}
        url, detail = image.get("url"), image.get("detail")
    elif part.get("type") == "input_image":
        url, detail = part.get("image_url"), part.get("detail")
    else:
        return None
    return (url, detail) if isinstance(url, str) else None


def image_parts(body: Any) -> Iterator[tuple[str, str | None]]:
    """(url, detail) of every image part of a chat or Responses body."""
    for _, items in message_lists(body):
        for item in items:
            content = item.get("content") if isinstance(item, dict) else None
            for part in content if isinstance(content, list) else []:
                found = part_image(part)
                if found:
                    yield found


def with_url(part: dict[str, Any], url: str) -> dict[str, Any]:
    if part["type"] == "input_image":
        return {**part, "image_url": url}
    image = part["image_url"]
    return {**part, "image_url": {**image, "url": url} if isinstance(image, dict) else url}


def with_image_urls(body: Any, change: Callable[[str], str]) -> Any:
    """The body with `change(url)` for each image part's url (a copy only where one changes)."""
    for key, items in message_lists(body):
        new_items, changed = [], False
        for item in items:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, list):
                parts = []
                for part in content:
                    found = part_image(part)
                    new = change(found[0]) if found else None
                    if found and new != found[0]:
                        part, changed = with_url(part, new), True
                    parts.append(part)
                item = {**item, "content": parts}
            new_items.append(item)
        if changed:
            body = {**body, key: new_items}
    return body


# ----------------------------------------------------------------------------- chunk lines


def markers_in(line: str) -> Iterator[tuple[re.Match[str], Marker]]:
    if MARKER not in line:
        return
    for m in MARKER_IN_JSON.finditer(line):
        marker = Marker.parse(json.loads(m.group(0)))
        if marker:
            yield m, marker


def materialise(line: str) -> str:
    """A request line with each marker replaced by the image's data URL, for a chunk file.

    The bytes are read from the marker's file and checked against its digest: a file changed
    since requests.jsonl was built is one clear error, never a request with other content.
    """
    if MARKER not in line:
        return line
    out, last = [], 0
    for m, marker in markers_in(line):
        data = read_checked(marker)
        out += [line[last : m.start()], '"', data_url(marker.mime, data), '"']
        last = m.end()
    out.append(line[last:])
    return "".join(out)


def read_checked(marker: Marker) -> bytes:
    try:
        data = marker.path.read_bytes()
    except OSError as e:
        raise UserError(
            f"image {marker.path} is gone ({e.strerror}); rerun make to rebuild the requests"
        )
    if len(data) != marker.nbytes or hashlib.sha256(data).hexdigest() != marker.sha256:
        raise UserError(
            f"image {marker.path} changed since requests.jsonl was built; rerun make to rebuild "
            "the requests"
        )
    return data


def materialised_size(line: str) -> int:
    """The UTF-8 size of `materialise(line)`, computed from the markers without reading files."""
    size = len(line.encode())
    for m, marker in markers_in(line):
        size += marker.data_url_length + 2 - len(m.group(0).encode())
    return size
