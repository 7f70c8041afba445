"""A step's image fields resolved: URLs as they are, local files to `br-image:` markers, through an
SQLite index and a content-addressed cache of resized images (see this package's docstring).

The index (`<cache>/index.sqlite`) remembers, per source file and options, the file's size,
mtime, ctime and inode, and what it resolved to, so a rebuild reads and resizes only the files
that changed; `stamp` digests the same stat of every indexed file for make.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from br.files import atomic_output
from br.limits import MAX_IMAGE_BYTES
from br.prompts.images.formats import (
    EXTENSIONS,
    MAX_READ_BYTES,
    ImageOptions,
    ImageSkip,
    check_bytes,
    resize,
    sniff,
)
from br.prompts.images.identity import Marker, decode_data_url, make_marker

URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


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
        self.run_id = os.urandom(16).hex()
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
        if value.startswith(("https://", "http://")):  # the common case, decided at once
            return Resolved(url=value)
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

    For the Makefile's images.stamp (`write_if_changed.py --images`, run on every make), which
    makes requests.jsonl depend on the images' contents without rebuilding the requests on every
    run. Skipped files are in
    the index too, so a missing file that appears also changes the stamp. If the preflight
    cache records URLs that failed, the stamp changes on every run, so they are checked again.
    """
    index = Path(cache_dir) / "index.sqlite"
    h = hashlib.sha256()
    if preflight is not None:  # the file Preflight.save writes: {"passed": ..., "failed": ...}
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(preflight.read_text(encoding="utf-8")).get("failed"):
                h.update(os.urandom(16))
    for path, now in indexed(index, recorded=False):
        h.update(f"{path}\0{now}\0".encode())
    return h.hexdigest()


def recorded_stamp(cache_dir: Path) -> str:
    """`stamp` as the index recorded each file's stat when it read the file: equal to `stamp`
    (without a preflight) exactly while no indexed file changed since it was read."""
    h = hashlib.sha256()
    for path, then in indexed(Path(cache_dir) / "index.sqlite", recorded=True):
        h.update(f"{path}\0{then}\0".encode())
    return h.hexdigest()


def indexed(index: Path, recorded: bool) -> Iterator[tuple[str, str]]:
    """(path, stat) of every file in the index, by path: its stat now, or as recorded."""
    if not index.exists():
        return
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        if recorded:
            yield from db.execute("SELECT DISTINCT path, stat FROM images ORDER BY path, stat")
            return
        for (path,) in db.execute("SELECT DISTINCT path FROM images ORDER BY path"):
            try:
                st = os.stat(path)
                now = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
            except OSError:
                now = "missing"
            yield path, now
    finally:
        db.close()
