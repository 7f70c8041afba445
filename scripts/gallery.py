"""Write gallery.html: each record's image, prompt fields and response side by side.

Reads the merged dataset (merged.json or .jsonl), the step of CONFIG, and the step's build files:
requests.jsonl (which records were sent), skipped.jsonl (left out, and why) and
errors.jsonl (failures, matched by record index). Writes one static, self-contained HTML file
(inline CSS and JS, no network needed, works from a file:// URL): failures are marked, a filter
shows all / answered / failed / skipped (skipped.jsonl: a missing field or a bad image) / not
selected (by the step's `where:`) records, a search box narrows them, and the records are
embedded as JSON and drawn a page at a time (--per-page), so a large dataset stays fast. Local
images (the record's image_path, relative to the INPUT dataset's folder) are embedded as data:
URIs when they are small in total, else linked by relative path; only files under that folder
(or --image-root, IMAGE_ROOT) are used, symlinks resolved, the others shown as "not embedded";
remote image URLs are linked and show a placeholder when they cannot load. The output has no
timestamp, so a rerun over the same files leaves gallery.html untouched.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.
from br.cli import ArgumentParser, UserError, run

# isort: split

import sys
from pathlib import Path

from br.answers.gallery import collect, render
from br.config import load_config
from br.files import write_text
from br.layout import moved, no_step, step_dir


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="the step's build directory")
    parser.add_argument("--merged", required=True, type=Path, help="merged.json(l)")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--step", required=True)
    parser.add_argument("--response-key", default="", help="default: the step's response_key")
    parser.add_argument("--data-key", default="image_path", help="field or jq expression")
    parser.add_argument(
        "--input", type=Path, default=None, help="the INPUT dataset: image paths are relative to it"
    )
    parser.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="IMAGE_ROOT: embed local images under this folder only (default: the INPUT's folder)",
    )
    parser.add_argument(
        "--images",
        choices=("auto", "embed", "link"),
        default="auto",
        help="local images: embed as data: URIs, link by relative path, or auto (embed if small)",
    )
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("-o", "--output", required=True, type=Path, help="gallery.html")
    args = parser.parse_args(argv)
    args.per_page = max(1, args.per_page)
    found = step_dir(args.dir)  # after make pipeline: its NN-<step>, and the files in it
    args.merged, args.output = (moved(p, args.dir, found) for p in (args.merged, args.output))
    args.dir = found
    if not args.merged.exists():
        if not args.dir.exists():
            raise UserError(no_step(args.dir))
        raise UserError(f"{args.merged} does not exist; run make caption for this step first")

    step = load_config(args.config).step(args.step)
    data = collect(args, step)
    write_text(args.output, render(data))
    c = data["counts"]
    print(
        f"{args.output}: {len(data['records'])} records ({c['answered']} answered, "
        f"{c['failed']} failed, {c['skipped']} skipped, {c['not_selected']} not selected); "
        f"open file://{args.output.resolve()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
