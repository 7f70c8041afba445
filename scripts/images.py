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
from br.cli import run

# isort: split

import sys
from pathlib import Path

from br.prompts.images import stamp


def main(argv: list[str] | None = None) -> int:
    import argparse

    from br.files import write_text

    parser = argparse.ArgumentParser(description="images.py stamp: see stamp()")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stamp", help="write a stamp that changes when an indexed image changes")
    p.add_argument("--cache", required=True, type=Path, help="the step's images/ directory")
    p.add_argument("--preflight", type=Path, help="the step's preflight.json, if any")
    p.add_argument("-o", "--output", required=True, type=Path)
    args = parser.parse_args(argv)
    write_text(args.output, stamp(args.cache, args.preflight) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
