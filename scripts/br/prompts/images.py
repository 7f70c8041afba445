"""Images of a request: local files sent inline, optional resizing, and token estimates.

The field a step's `image_key` names may hold a URL (`http(s)://` or `data:`, sent as is) or a
local path (relative to the dataset's folder, or absolute). A local file is read, its type
sniffed from its bytes (never its name), and sent as a base64 data URL if it is one the API
takes: PNG, JPEG, WebP or a still GIF. Anything else (another format, an animated GIF, a
missing or unreadable file, one over the API's image size limit) raises `ImageSkip` with a
one-line reason for skipped.jsonl; it is never sent.

Where the bytes live (so `build/` stays proportionate to the dataset):

- requests.jsonl never holds image bytes. A local image's `url` there is a compact marker,
  `br-image:<sha256>:<mime>:<bytes>:<W>x<H>:<absolute path>`, naming the final bytes by their
  sha256 and the file that holds them.
- An image sent unchanged is read from the user's own file: nothing is copied. A resized image
  is written once, raw (not base64), to a content-addressed cache, `<cache>/<sha256>.<ext>`
  (the step's `images/` directory); entries no longer referenced are removed on the next build.
- The data URL is materialised only when chunk files are written (`materialise`), and only for
  the requests still to send, after a check that the bytes still have the marker's digest.

So each image is stored inline (base64) only in the chunk that sends it, and beyond the chunk
files at most once more, raw, when it was resized. The alternative, inline data URLs in
requests.jsonl, would store every image twice in base64 (requests and chunks) and make every
stage that reads requests.jsonl (split, merge, plan) parse megabytes per record.

Identity: `canonical_url` maps a marker, and a data URL, to `sha256:<digest of the image
bytes>`, and `records.request_hash` hashes that: a request's reuse hash covers the image's
content (a changed file is sent again, an unchanged one is not), and the marker in
requests.jsonl and the data URL in its chunk hash alike. Resizing options change the bytes,
hence the hash.

An index (`<cache>/index.sqlite`) remembers, per source file and options, the file's size,
mtime, ctime and inode, and what it resolved to, so a rebuild reads and resizes only the files
that changed.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import UserError

# isort: split

import base64
import binascii
import contextlib
import hashlib
import io
import json
import math
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "br-image:"
ACCEPTED = {"image/png", "image/jpeg", "image/webp", "image/gif"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
# UNVERIFIED: OpenAI's vision docs once stated 20 MB per image; the current guide states only a
# per-request payload limit (512 MB, about 50 MB observed; FACTS.md section 4). We keep 20 MB.
MAX_IMAGE_BYTES = 20_000_000
MAX_READ_BYTES = 256_000_000  # a file to resize may be bigger, but not this big
API_FILE_LIMIT = 209_715_200  # a batch input file (FACTS.md: "up to 200 MB")
DEFAULT_QUALITY = 85
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# A marker as it appears in a JSON line: a JSON string starting with the marker prefix.
MARKER_IN_JSON = re.compile(r'"br-image:[0-9a-f]{64}:[^"\\]*(?:\\.[^"\\]*)*"')

# Token rules (OpenAI's "Images and vision" guide, for gpt-4o class models): low detail is a
# fixed 85 tokens; high (and auto, counted as high) fits the image within 2048 x 2048, scales
# its shortest side down to 768 px, and costs 170 per 512 px tile plus 85. UNVERIFIED: whether
# a small image is scaled *up* to 768 px; we follow the common reading that only larger images
# are scaled down. Other models weigh images differently (gpt-4o-mini: 2833 + 5667 a tile, the
# same dollar cost; gpt-4.1-mini and later: 32 px patches); these estimates use the figures above.
LOW_DETAIL_TOKENS = 85
TILE_TOKENS = 170
BASE_TOKENS = 85
# A remote URL's size is unknown until the API fetches it: assume a 3:2 photograph larger
# than 768 px (1536 x 1024), which at high detail is 6 tiles, 1105 tokens. A wider image costs
# up to 1445, a square or 4:3 one 765.
ASSUMED_REMOTE_SIZE = (1536, 1024)

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


@dataclass(frozen=True)
class Resolved:
    """What an image field resolves to: the url to put in the request, and what is known."""

    url: str
    local: bool = False
    sha256: str | None = None
    mime: str | None = None
    nbytes: int | None = None
    width: int | None = None
    height: int | None = None


# ----------------------------------------------------------------------------- bytes


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


# ----------------------------------------------------------------------------- markers


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


def with_image_urls(body: Any, change: Any) -> Any:
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


# ----------------------------------------------------------------------------- tokens


def image_tokens(width: int, height: int, detail: str | None) -> int:
    """Prompt tokens of one image by OpenAI's published rules (see the note at the top)."""
    if detail == "low":
        return LOW_DETAIL_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(round(w, 6) / 512) * math.ceil(round(h, 6) / 512)
    return BASE_TOKENS + TILE_TOKENS * max(tiles, 1)


def url_pixel_size(url: str) -> tuple[int, int] | None:
    """Width and height of a marker or data URL's image; None for a remote URL."""
    marker = Marker.parse(url)
    if marker:
        return marker.width, marker.height
    if url.startswith("data:"):
        data = decode_data_url(url)
        return pixel_size(data) if data is not None else None
    return None


def url_tokens(url: str, detail: str | None) -> int:
    """Estimated tokens of an image (its detail, its size; a remote one's assumed)."""
    if detail == "low":
        return LOW_DETAIL_TOKENS
    return image_tokens(*(url_pixel_size(url) or ASSUMED_REMOTE_SIZE), detail)


def part_tokens(part: dict[str, Any]) -> int:
    """Estimated tokens of an image content part (chat or Responses); 0 for another part."""
    found = part_image(part)
    return url_tokens(*found) if found else 0


def body_images(body: dict[str, Any]) -> tuple[int, int]:
    """(number of image parts, their estimated tokens) of a chat or Responses body."""
    found = [url_tokens(url, detail) for url, detail in image_parts(body)]
    return len(found), sum(found)


# ----------------------------------------------------------------------------- local images


def is_url(value: str) -> bool:
    return value.startswith("data:") or URL_SCHEME.match(value) is not None


class LocalImages:
    """Resolves image fields for one step: URLs as they are, local files to markers.

    `root` is the folder relative paths start from (the dataset's). With `cache_dir`, resized
    bytes are stored there and an index spares rereading unchanged files (the sent ones and the
    skipped ones); `read_only` (for `make plan`) uses an existing index and cache but writes
    nothing. `field` (the step's image_key) starts each skip reason.
    """

    def __init__(
        self,
        root: Path,
        options: ImageOptions,
        cache_dir: Path | None = None,
        field: str = "image",
        read_only: bool = False,
    ) -> None:
        self.root, self.options, self.field = Path(root), options, field
        self.cache_dir = cache_dir.resolve() if cache_dir is not None else None
        self.read_only = read_only
        self.referenced: set[str] = set()
        self.run_id = uuid.uuid4().hex
        self._db: sqlite3.Connection | None = None
        self.opened = False  # the index is opened (and created) at the first local file

    @property
    def db(self) -> sqlite3.Connection | None:
        if not self.opened:
            self.opened = True
            index = self.cache_dir / "index.sqlite" if self.cache_dir else None
            if index is not None and (index.exists() or not self.read_only):
                index.parent.mkdir(parents=True, exist_ok=True)
                mode = "?mode=ro" if self.read_only else ""
                self._db = sqlite3.connect(f"file:{index}{mode}", uri=True)
                if not self.read_only:
                    self._db.execute(
                        "CREATE TABLE IF NOT EXISTS images (path TEXT, options TEXT, stat TEXT, "
                        "reason TEXT, sha TEXT, mime TEXT, nbytes INT, width INT, height INT, "
                        "file TEXT, run TEXT, PRIMARY KEY (path, options))"
                    )
        return self._db

    def resolve(self, value: str) -> Resolved:
        """The image for a field's value; ImageSkip(reason) if it cannot be sent."""
        if is_url(value):
            scheme = value.split(":", 1)[0].lower()
            if scheme == "data":
                return self.inline(value)
            if scheme not in ("http", "https"):
                raise ImageSkip(
                    f"{self.field}: unsupported URL scheme '{scheme}' in {value[:80]}; use "
                    "http(s)://, a data: URL or a local path"
                )
            return Resolved(url=value)
        path = Path(value).expanduser()
        path = Path(os.path.abspath(path if path.is_absolute() else self.root / path))
        try:
            st = path.stat()
            stat = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
        except OSError:
            stat = "missing"
        try:
            found = self.lookup(path, stat) or self.load(path)
        except ImageSkip as e:
            self.remember(path, stat, str(e), None)
            raise ImageSkip(f"{self.field}: {value}: {e}")
        self.remember(path, stat, None, found)
        return found

    def inline(self, url: str) -> Resolved:
        """A data URL from the dataset, sent as is once its bytes are checked like a file's."""
        data = decode_data_url(url)
        if data is None:
            raise ImageSkip(f"{self.field}: {url[:40]}...: not a base64 data URL")
        try:
            mime, width, height = check_bytes(data)
        except ImageSkip as e:
            raise ImageSkip(f"{self.field}: data URL: {e}")
        declared = url[5 : url.index(";")].lower() if ";" in url[:100] else ""
        if declared != mime:
            raise ImageSkip(
                f"{self.field}: data URL says '{declared}' but its bytes are {mime}; fix the type"
            )
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageSkip(f"{self.field}: data URL: {self.too_big(len(data), False)}")
        sha = hashlib.sha256(data).hexdigest()
        return Resolved(url, False, sha, mime, len(data), width, height)

    def load(self, path: Path) -> Resolved:
        """Read, check and (if asked) resize one file."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(64)
                if sniff(head) is None:
                    check_bytes(head + f.read(4096))  # raises, naming the format
                limit = MAX_READ_BYTES if self.options.max_side else MAX_IMAGE_BYTES
                if size > limit:
                    raise ImageSkip(self.too_big(size))
                data = head + f.read()
        except FileNotFoundError:
            raise ImageSkip("file not found")
        except IsADirectoryError:
            raise ImageSkip("a directory, not an image file")
        except OSError as e:
            raise ImageSkip(f"cannot read ({e.strerror})")
        mime, width, height = check_bytes(data)
        resized = resize(data, mime, self.options)
        if resized:
            data, mime, width, height = resized
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageSkip(self.too_big(len(data), resized is not None))
        sha = hashlib.sha256(data).hexdigest()
        holder = self.store(sha, mime, data) if resized else path
        marker = make_marker(sha, mime, len(data), width, height, holder)
        return Resolved(marker, True, sha, mime, len(data), width, height)

    def too_big(self, size: int, resized: bool = False) -> str:
        hint = "set a smaller image_max_side" if resized else "set image_max_side to shrink it"
        if size > MAX_READ_BYTES:
            hint = "shrink it first"
        limit = f"{MAX_IMAGE_BYTES / 1e6:.0f} MB"
        return f"{size / 1e6:.1f} MB, over the API's {limit} image limit; {hint}"

    def store(self, sha: str, mime: str, data: bytes) -> Path:
        """Resized bytes in the content-addressed cache; without one (plan), a name only."""
        name = f"{sha}.{EXTENSIONS[mime]}"
        if self.cache_dir is None or self.read_only:
            return (self.cache_dir or Path(os.path.abspath("images"))) / name
        from br.files import atomic_output

        path = self.cache_dir / name
        if not (path.exists() and path.stat().st_size == len(data)):
            with atomic_output(path, "wb") as f:
                f.write(data)
        return path

    def lookup(self, path: Path, stat: str) -> Resolved | None:
        """What the index knows of this file as it is now; ImageSkip if it was skipped."""
        if self.db is None or stat == "missing":
            return None
        row = self.db.execute(
            "SELECT reason, sha, mime, nbytes, width, height, file FROM images "
            "WHERE path = ? AND options = ? AND stat = ?",
            (str(path), self.options.key, stat),
        ).fetchone()
        if row is None:
            return None
        reason, sha, mime, nbytes, width, height, holder = row
        if reason is not None:
            raise ImageSkip(reason)
        holder_path = Path(holder)
        if holder_path != path:  # a cached resized file: it must still be there
            try:
                if holder_path.stat().st_size != nbytes:
                    return None
            except OSError:
                return None
        marker = make_marker(sha, mime, nbytes, width, height, holder_path)
        return Resolved(marker, True, sha, mime, nbytes, width, height)

    def remember(self, path: Path, stat: str, reason: str | None, found: Resolved | None) -> None:
        marker = Marker.parse(found.url) if found else None
        if marker and self.cache_dir and marker.path.parent == self.cache_dir:
            self.referenced.add(marker.path.name)
        if self.db is None or self.read_only:
            return
        self.db.execute(
            "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(path),
                self.options.key,
                stat,
                reason,
                found and found.sha256,
                found and found.mime,
                found and found.nbytes,
                found and found.width,
                found and found.height,
                str(marker.path) if marker else None,
                self.run_id,
            ),
        )

    def close(self, complete: bool = True) -> None:
        """Commit the index; after a complete build, forget what this build did not use."""
        if complete and not self.read_only and self.cache_dir and self.cache_dir.is_dir():
            db = self.db  # opened even if no local file came: the old entries go
            if db is not None:
                db.execute("DELETE FROM images WHERE run != ?", (self.run_id,))
            self.prune()
        if self._db is not None:
            if not self.read_only:
                self._db.commit()
            self._db.close()
        self._db, self.opened = None, True

    def prune(self) -> None:
        """Remove cached resized files no request refers to any more."""
        assert self.cache_dir is not None
        for path in self.cache_dir.iterdir():
            if path.suffix.lstrip(".") in EXTENSIONS.values() and path.name not in self.referenced:
                path.unlink(missing_ok=True)

    def __enter__(self) -> LocalImages:
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        self.close(complete=kind is None)


def stamp(cache_dir: Path, preflight: Path | None = None) -> str:
    """A digest of the current stat of every file in the index: it changes when one changes.

    For a Makefile rule (`images.py stamp`, run on every make) that makes requests.jsonl depend
    on the images' contents without rebuilding the requests on every run. Skipped files are in
    the index too, so a missing file that appears also changes the stamp. If the preflight
    cache records URLs that failed, the stamp changes on every run, so they are checked again.
    """
    index = Path(cache_dir) / "index.sqlite"
    h = hashlib.sha256()
    if preflight is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(preflight.read_text(encoding="utf-8")).get("failed"):
                h.update(uuid.uuid4().bytes)
    if index.exists():
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        try:
            for (path,) in db.execute("SELECT DISTINCT path FROM images ORDER BY path"):
                try:
                    st = os.stat(path)
                    now = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
                except OSError:
                    now = "missing"
                h.update(f"{path}\0{now}\0".encode())
        finally:
            db.close()
    return h.hexdigest()
