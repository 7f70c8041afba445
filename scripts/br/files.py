"""Build files appear whole or not at all, and are rewritten only when their bytes change."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from br.cli import UserError
from br.records import dumps

UMASK = os.umask(0o022)
os.umask(UMASK)


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write `path` whole or not at all, and leave it untouched if the bytes did not change.

    The temporary file sits beside the target with a unique name, so parallel make jobs
    never share one; it is fsynced before `os.replace`, and unlinked on any failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; build files are as shareable as any
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        commit(Path(tmp), path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write names no file
            e.filename = str(path)
        raise


def commit(tmp: Path, path: Path) -> bool:
    """Move a finished, fsynced temporary file onto `path` unless the bytes are the same."""
    if path.exists() and same_bytes(tmp, path):
        os.unlink(tmp)
        return False
    os.replace(tmp, path)
    return True


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def check_target(name: str, text: str) -> None:
    """One line (UserError) when `text` cannot be written as a file, such as OUTPUT=...: checked
    before a run sends anything, so a mistyped path never costs a paid run. A missing directory
    is made when the file is written."""
    path = Path(text)
    if text.endswith("/") or path.is_dir():
        raise UserError(
            f"{name}={text} is a directory; give a file path, e.g. {name}={path / 'merged.json'}"
        )
    ancestor = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not ancestor.is_dir():
        raise UserError(f"{name}={text} is under {ancestor}, which is a file; give another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{name}={text} cannot be written: {ancestor} is not writable")


def write_text(path: Path, text: str) -> None:
    """`path` holding `text`, whole; a file that holds it already is left alone without even a
    temporary file beside it (make writes its stamps on every run: most runs change none)."""
    data = text.encode("utf-8")
    with contextlib.suppress(OSError):
        if os.stat(path).st_size == len(data) and Path(path).read_bytes() == data:
            return
    with atomic_output(path) as f:
        f.write(text)


def write_jsonl(path: Path, rows: Iterable[Any], encode: Callable[[Any], str] = dumps) -> int:
    n = 0
    with atomic_output(path) as f:
        for row in rows:
            f.write(encode(row) + "\n")
            n += 1
    return n


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_of(f)


def sha256_of(f: IO[bytes]) -> str:
    """The sha256 of an open file's bytes from its start; left at its start again."""
    f.seek(0)
    digest = hashlib.file_digest(f, "sha256").hexdigest()
    f.seek(0)
    return digest


def move_aside(path: Path) -> Path:
    """Move a file into superseded/ beside it, stamped: records of batches are never deleted."""
    aside = path.parent / "superseded" / f"{time.strftime('%Y%m%dT%H%M%S')}-{path.name}"
    aside.parent.mkdir(exist_ok=True)
    os.replace(path, aside)
    return aside


def chunk_name(path: Path) -> str:
    """`chunk_007.jsonl` -> `007`."""
    return Path(path).stem.split("_", 1)[-1]
