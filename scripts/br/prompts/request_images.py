"""Where a step's images come from, for the commands that build its requests: the arguments
(--image-root, --images, --preflight-cache), the step's resolver and URL checker made from
them, and the tally of skip reasons for a summary line.

make_requests.py writes the index and cache of local images and checks image URLs; plan.py
reads them only (`read_only`); merge_results.py resolves the images again to recognise the
requests it sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from br.config import Step

if TYPE_CHECKING:
    # The resolver: loaded only by step_images, so a command that takes these arguments but
    # reads no image (plan.py's cost check) stays light; the checker (http.client, threads)
    # only when a run checks image URLs.
    from br.prompts.images.cache import LocalImages
    from br.prompts.preflight import Preflight


def image_arguments(parser: Any) -> None:
    """Where local images are found and kept, and the preflight of image URLs."""
    parser.add_argument(
        "--image-root", type=Path, help="local image paths are relative to this (INPUT's folder)"
    )
    parser.add_argument("--images", type=Path, help="resized images and their index (images/)")
    parser.add_argument(
        "--preflight-cache", type=Path, help="check image URLs first, remembering passes here"
    )
    parser.add_argument("--preflight-timeout", type=float, default=10.0, help="seconds a URL")


def local_root(args: Any) -> Path:
    """Where a relative image path is found: IMAGE_ROOT, else INPUT's folder."""
    return Path(args.image_root) if args.image_root is not None else Path(args.input).parent


def step_images(
    args: Any, step: Step, cache: Path | None, read_only: bool = False
) -> tuple[LocalImages, Preflight | None]:
    """The step's local-image resolver and, with --preflight-cache, its URL checker."""
    from br.prompts.images.cache import LocalImages
    from br.prompts.images.formats import ImageOptions

    field = "image_url" if step.kind == "question" else step.image_key
    local = LocalImages(local_root(args), ImageOptions.from_step(step), cache, field, read_only)
    checker = None
    if args.preflight_cache is not None:
        from br.prompts.preflight import Preflight

        # read_only (make plan): the cache's verdicts only; nothing is checked or saved.
        checker = Preflight(args.preflight_cache, field, args.preflight_timeout, offline=read_only)
    return local, checker


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
