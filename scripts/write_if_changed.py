"""Write small files (parameter stamps, or a copy of another file) only if their bytes change.

Make tracks time, not content: a stamp holding what shapes an output (STEP, DATA_KEY, the
sha256 of INPUT and CONFIG, ...) keeps its mtime while they stay the same, so Make rebuilds
exactly when one of them really changed, whatever the files' mtimes say (`cp -p`, `tar x` and
`rsync -a` keep old ones). `--hash NAME=PATH` adds the line `NAME=<sha256 of PATH>`; a digest is
reused while the file's inode, size, mtime and ctime stay the same (ctime cannot be set back).
`--provider CONFIG STEP` adds the line `PROVIDER=<the step's provider:>` (the split's stamp: a
provider's chunks hold its own lines, so changing `provider:` alone splits again).
`--run CONFIG STEP MODE MAX_COST` adds `RUN=batch` for a step in batch mode with no cost cap,
else `RUN=check` (run.params: make caption starts run_batches.py without plan.py's check when
there is nothing to check).
`--images CACHE PREFLIGHT` adds a digest of every image the step's index (its images/) holds,
which changes when one of them does, or on every run while image URLs fail the preflight (the
images' stamp: requests.jsonl follows the images' bytes; br/prompts/images/cache.py).

Several stamps in one process, one after `--and` each (make writes a step's four stamps on
every run, and a process each would cost more than the stamps): every stamp is worked out
first, so a mistake (a config whose provider cannot be read) writes none of them, then each is
rewritten only if its bytes changed. `--check` writes nothing and stops with one line naming
what changed if a stamp would change: make caption checks that INPUT and CONFIG are still what
its requests were built from before it says "up to date".

`--from FILE` copies a file instead (make caption OUTPUT=...), after the stamps beside it are
checked (make caption's last step: the check, then the copy); `--writable` only checks that
the target can be written, before a run that will copy to it sends anything.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, UserError, run

# isort: split

import argparse
import functools
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from br.files import atomic_output, check_target, sha256_file, write_text

if TYPE_CHECKING:
    from br.config import Config

AND = "--and"  # starts the next stamp


def digest(name: str, path: Path, cache: dict[str, list[object]]) -> str:
    try:
        st = path.stat()
    except OSError:
        raise UserError(f"{name}={path} does not exist; set {name}=path/to/the/file")
    if not path.is_file():
        raise UserError(f"{name}={path} is not a file; set {name}=path/to/the/file")
    key = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    seen = cache.get(str(path.resolve()))
    if seen and seen[:4] == key:
        return str(seen[4])
    try:
        sha = sha256_file(path)
    except OSError as e:
        raise UserError(f"{name}={path} cannot be read ({e.strerror}); check its permissions")
    cache[str(path.resolve())] = [*key, sha]
    return sha


def parser_() -> ArgumentParser:
    parser = ArgumentParser(
        description=__doc__,
        epilog=f"Several stamps: TARGET LINES... {AND} TARGET LINES... (--check checks each)",
    )
    parser.add_argument("target")  # text: a trailing / says "a directory"
    parser.add_argument("lines", nargs="*", help="lines of the stamp, e.g. DATA_KEY=image_path")
    parser.add_argument("--hash", action="append", default=[], help="NAME=PATH: add its sha256")
    parser.add_argument("--from", dest="source", type=Path, help="copy this file instead")
    parser.add_argument("--check", action="store_true", help="fail if the stamp would change")
    parser.add_argument(
        "--provider", nargs=2, metavar=("CONFIG", "STEP"), help="add the step's provider:"
    )
    parser.add_argument(
        "--run",
        nargs=4,
        metavar=("CONFIG", "STEP", "MODE", "MAX_COST"),
        help="add RUN=batch (batch mode, no cost cap) or RUN=check (plan.py decides)",
    )
    parser.add_argument(
        "--images",
        nargs=2,
        type=Path,
        metavar=("CACHE", "PREFLIGHT"),
        help="add the digest of the images indexed in CACHE (and of PREFLIGHT's failures)",
    )
    parser.add_argument("--writable", action="store_true", help="only check the target is writable")
    return parser


def stamps_of(argv: list[str]) -> list[list[str]]:
    """The argument lists of each stamp, split at `--and`."""
    groups: list[list[str]] = [[]]
    for arg in argv:
        if arg == AND:
            groups.append([])
        else:
            groups[-1].append(arg)
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = parser_()
    argv = sys.argv[1:] if argv is None else argv
    groups = [parser.parse_intermixed_args(g) for g in stamps_of(argv)]
    if len(groups) > 1 and any(a.writable for a in groups):
        parser.error(f"--writable takes one target, not several ({AND})")
    copies = [a for a in groups if a.source]
    for args in groups:
        if args.writable or args.source:
            check_target("OUTPUT", args.target)  # --from is make's OUTPUT=...
    if groups[0].writable:
        return 0
    check = any(a.check for a in groups)
    caches: dict[Path, dict[str, list[object]]] = {}
    stamps = [(Path(a.target), stamp_lines(a, caches)) for a in groups if not a.source]
    if not check:
        for store, cache in caches.items():
            os.makedirs(store.parent, exist_ok=True)
            write_text(store, json.dumps(cache, sort_keys=True) + "\n")
    for target, lines in stamps:
        if check:
            check_stamp(target, lines)
        else:
            write_text(target, "".join(line + "\n" for line in lines))
    for args in copies:  # after the stamps: a copy only once they are checked
        copy(args.source, Path(args.target))
    return 0


def copy(source: Path, target: Path) -> None:
    if not source.exists():
        raise UserError(f"{source} does not exist; run the step first")
    with open(source, "rb") as src, atomic_output(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    print(f"wrote {target}", file=sys.stderr)


def stamp_lines(args: argparse.Namespace, caches: dict[Path, dict[str, list[object]]]) -> list[str]:
    """A stamp's lines, in the order today's stamps hold them: the given lines, the provider,
    the images' digest, then each --hash. Digests of --hash files are cached beside the stamp
    (.hashes.json), in `caches` until written."""
    lines = list(args.lines)
    if args.provider:
        config, step = args.provider
        lines.append(f"PROVIDER={config_of(config).provider(step or None)}")
    if args.run:
        from br.live.modes import plain_batch

        config, step, mode, max_cost = args.run
        plain = plain_batch(config_of(config), step, mode, max_cost)
        lines.append(f"RUN={'batch' if plain else 'check'}")
    if args.images:
        from br.prompts.images.cache import stamp  # only the images' stamp reads their index

        lines.append(stamp(*args.images))
    if args.hash:
        store = Path(args.target).parent / ".hashes.json"
        if store not in caches:
            try:
                caches[store] = json.loads(store.read_text())
            except (OSError, ValueError):
                caches[store] = {}
        for item in args.hash:
            name, _, path = item.partition("=")
            lines.append(f"{name}_SHA256={digest(name, Path(path), caches[store])}")
    return lines


@functools.cache
def config_of(path: str) -> Config:
    """The config, read once (the split's stamp and the run's read it: no other stamp), and
    kept parsed for the run's later scripts beside the stamps ($BR_CONFIG_CACHE)."""
    from br.config import load_config

    return load_config(Path(path), keep=True)


def check_stamp(target: Path, lines: list[str]) -> None:
    """One line naming what changed since the stamp was written (INPUT, not INPUT_SHA256)."""
    try:
        written = dict(line.partition("=")[::2] for line in target.read_text().splitlines())
    except OSError:
        written = {}
    now = dict(line.partition("=")[::2] for line in lines)
    changed = [name.removesuffix("_SHA256") for name in now if written.get(name) != now[name]]
    if changed:
        raise UserError(
            f"{' and '.join(changed)} changed while make ran: {target.parent} was built from "
            "the earlier one, so it is not up to date; rerun the same make command"
        )


if __name__ == "__main__":
    sys.exit(run(main))
