"""Image bytes: their type sniffed from the bytes, checked against what the API takes, resized.

Pillow is imported only by the functions that decode an image, so sniffing and the rest of the
package stay cheap to import.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

ACCEPTED = {"image/png", "image/jpeg", "image/webp", "image/gif"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
DEFAULT_QUALITY = 85
MAX_READ_BYTES = 256_000_000  # a file to resize may be bigger than the API's limit, not this big

OTHER_FORMATS = [  # named in skip reasons, so a user knows what to convert
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
]


class ImageSkip(Exception):
    """An image that cannot be sent; the message is the reason for skipped.jsonl."""


@dataclass(frozen=True)
class ImageOptions:
    """A step's resizing options: `image_max_side` (pixels) and `image_quality` (JPEG/WebP)."""

    max_side: int | None = None
    quality: int = DEFAULT_QUALITY

    @classmethod
    def from_step(cls, step: Any) -> ImageOptions:
        quality = getattr(step, "image_quality", None)
        return cls(getattr(step, "image_max_side", None), quality or DEFAULT_QUALITY)

    @property
    def key(self) -> str:
        return f"max_side={self.max_side or 0};quality={self.quality}"


def sniff(data: bytes) -> str | None:
    """The MIME type of image bytes the API accepts, from their magic number; else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def describe_format(data: bytes) -> str:
    """A name for bytes that are not an accepted image, for a skip reason."""
    for magic, name in OTHER_FORMATS:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "HEIC"
        if brand in (b"avif", b"avis"):
            return "AVIF"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:2048].lower():
        return "SVG"
    if head.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if not data:
        return "an empty file"
    return "not an image"


def open_image(data: bytes, mime: str) -> Any:
    """A lazily decoded Pillow image (header read only), or ImageSkip if the data is corrupt."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data))  # parses the header only
    except Image.DecompressionBombError as e:
        raise ImageSkip(f"too many pixels ({e})")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageSkip(f"corrupt {EXTENSIONS[mime].upper()} data ({e})")


def pixel_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of image bytes (header only), or None if they are not an image."""
    mime = sniff(data)
    if mime is None:
        return None
    try:
        width, height = open_image(data, mime).size
    except ImageSkip:
        return None
    return width, height


def resize(data: bytes, mime: str, options: ImageOptions) -> tuple[bytes, str, int, int] | None:
    """Image bytes shrunk to fit `max_side`, re-encoded; None if they already fit.

    JPEG and WebP stay JPEG and WebP, at `quality`. PNG stays PNG: it is lossless, and PNGs are
    often charts, screenshots and logos with text and transparency that JPEG would blur (a photo
    saved as PNG stays larger; convert it to JPEG yourself if that matters). A still GIF becomes
    PNG (lossless, keeps transparency; the API takes both). The EXIF orientation is applied
    first, since the re-encoded file carries no EXIF.
    """
    from PIL import Image, ImageOps

    img = open_image(data, mime)
    width, height = img.size
    if not options.max_side or max(width, height) <= options.max_side:
        return None
    target = (options.max_side, options.max_side)
    try:
        if mime == "image/jpeg":
            img.draft("RGB", target)  # decode at 1/2, 1/4 or 1/8 scale: fast for big photos
        img = ImageOps.exif_transpose(img)
        if img.mode in ("P", "PA", "1", "LA", "I;16", "I", "F") or (
            mime == "image/jpeg" and img.mode not in ("RGB", "L")
        ):
            alpha = "A" in img.mode or "transparency" in img.info
            img = img.convert("RGBA" if alpha and mime != "image/jpeg" else "RGB")
        img.thumbnail(target, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if mime == "image/jpeg":
            img.save(out, "JPEG", quality=options.quality, optimize=True)
        elif mime == "image/webp":
            img.save(out, "WEBP", quality=options.quality)
        else:
            img.save(out, "PNG")
            mime = "image/png"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageSkip(f"cannot decode the {EXTENSIONS[mime].upper()} data to resize it ({e})")
    return out.getvalue(), mime, img.size[0], img.size[1]


def check_bytes(data: bytes) -> tuple[str, int, int]:
    """(mime, width, height) of bytes the API accepts; ImageSkip with the reason otherwise."""
    mime = sniff(data)
    if mime is None:
        what = describe_format(data)
        kind = what if what in ("not an image", "an empty file") else f"a {what} file"
        raise ImageSkip(f"{kind}, not PNG, JPEG, WebP or GIF; convert it")
    img = open_image(data, mime)
    if mime == "image/gif" and getattr(img, "is_animated", False):
        raise ImageSkip("an animated GIF; the API takes only still GIFs (send one frame as PNG)")
    return mime, img.size[0], img.size[1]
