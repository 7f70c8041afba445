"""Image inputs: what a valid image part is, and what it costs in tokens.

docs/api-facts.md "Images": the accepted types are PNG, JPEG, WebP and non-animated GIF; a
``data:`` URL carries the image inline as base64. The token rule is OpenAI's published one:
``detail: low`` costs 85 tokens; ``high`` and ``auto`` fit the image within 2048x2048, scale it
so its shortest side is 768 px, and cost 170 per 512-px tile plus 85.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

LOW_DETAIL_TOKENS = 85
TILE_TOKENS = 170
BASE_TOKENS = 85
# UNVERIFIED: a remote URL is not fetched; it is counted as a 512x512 image.
REMOTE_SIZE = (512, 512)
DATA_URL_RE = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,")
# The MIME types a data URL may declare, by the format Pillow reads from the bytes.
FORMATS = {"PNG": ("image/png",), "JPEG": ("image/jpeg", "image/jpg"), "WEBP": ("image/webp",)}
FORMATS["GIF"] = ("image/gif",)


class ImageRejected(ValueError):
    """An image part the API refuses: ``code`` and ``message`` for the 400 envelope."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImagePart:
    size: tuple[int, int]
    detail: str


def image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """Tokens for one image by OpenAI's published rule for its detail level."""
    if detail == "low":
        return LOW_DETAIL_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    # UNVERIFIED: an image whose shortest side is under 768 px is not scaled up.
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return TILE_TOKENS * tiles + BASE_TOKENS


def check_url(url: object, detail: object = "auto") -> ImagePart:
    """The size and detail of an image URL, or ImageRejected as the API would refuse it.

    UNVERIFIED codes: ``invalid_image_format`` for a type outside the four, or bytes that do
    not match the declared type; ``invalid_image`` for what does not decode at all or a URL
    that does not look like one.
    """
    if detail not in ("auto", "low", "high", "original"):
        raise ImageRejected(
            "invalid_value",
            f"Invalid value: '{detail}'. Supported values are: 'auto', 'low' and 'high'.",
        )
    if not isinstance(url, str) or not url:
        raise ImageRejected("invalid_image", "Invalid image URL: expected a non-empty string.")
    if url.startswith("data:"):
        return ImagePart(_data_url_size(url), str(detail))
    if _looks_like_http_url(url):
        return ImagePart(REMOTE_SIZE, str(detail))
    raise ImageRejected(
        "invalid_image",
        "Invalid image URL: expected a URL (http or https) or a base64-encoded data URL.",
    )


def _looks_like_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and port_ok
        and (not any(c.isspace() for c in url))
    )


def _data_url_size(url: str) -> tuple[int, int]:
    head = DATA_URL_RE.match(url)
    if head is None:
        raise ImageRejected(
            "invalid_image", "Invalid base64 image URL: expected 'data:<image type>;base64,<data>'."
        )
    declared = (head.group("mime") or "").lower()
    try:
        raw = base64.b64decode(url[head.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("invalid_image", "Invalid base64 image data: it does not decode.")
    try:
        with Image.open(io.BytesIO(raw)) as image:
            kind, size = image.format or "", image.size
            animated = bool(getattr(image, "is_animated", False))
            image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        raise ImageRejected(
            "invalid_image", "The image data you provided does not represent a valid image."
        )
    if kind not in FORMATS or (kind == "GIF" and animated):
        raise ImageRejected(
            "invalid_image_format",
            "Invalid image format: supported formats are PNG, JPEG, WEBP and non-animated GIF.",
        )
    if declared not in FORMATS[kind]:
        raise ImageRejected(
            "invalid_image_format",
            f"The image's data is {FORMATS[kind][0]}, but the URL declares '{declared}'.",
        )
    return size


def part_tokens(part: ImagePart) -> int:
    return image_tokens(part.size[0], part.size[1], part.detail)
