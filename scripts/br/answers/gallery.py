"""The gallery's content: each record of the merged dataset with its image, prompt fields,
response or why it has none (the step's requests.jsonl, skipped.jsonl and errors.jsonl, named
by layout.StepDir), drawn into the page gallery.html beside this module.

Only local images under the image root are embedded or linked (`Images`), and the records go
into the page as JSON that cannot close its <script> (`script_json`). Nothing in the output
depends on the time, so the same files give the same bytes.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import mimetypes
import os
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from br.config import Step
from br.layout import StepDir
from br.prompts.build import RequestBuilder, custom_id_of, jq_first, key_function
from br.prompts.endpoints import describe_vector
from br.records import dumps, iter_jsonl, iter_records

LOCAL_IMAGE_FIELDS = ("image_path",)
MAX_FIELD_CHARS = 4000
EMBED_LIMIT = 20_000_000  # auto: embed local images as data: URIs up to this many bytes in all
REMOTE = ("http://", "https://", "data:")
# The page: inline CSS and JS around __TITLE__, __STEP__ and __DATA__ (the records as JSON).
PAGE = Path(__file__).with_name("gallery.html")


def prompt_fields(builder: RequestBuilder) -> dict[str, Any]:
    """The placeholders of the step's prompts, name -> compiled jq program (or None)."""
    fields: dict[str, Any] = {}
    for template in builder.parts:
        fields.update(template.fields)
    return fields


def shorten(value: Any) -> Any:
    text = value if isinstance(value, str) else dumps(value)
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + " …"


class Images:
    """Finds each record's image: a local file under the image root if there is one, else a URL.

    Only files under `root` (the INPUT's folder, or --image-root) are embedded or linked, after
    resolving symlinks: a record naming /home/me/private.png or ../../x.png gets a "not
    embedded" note instead, so a gallery never carries files from outside the dataset.
    """

    def __init__(self, base: Path, root: Path, out_dir: Path, step: Step) -> None:
        self.base = base.resolve()  # relative paths are relative to the dataset's folder
        self.root = root.resolve()
        self.out_dir = out_dir
        self.step = step
        self.local: dict[str, Path] = {}  # as written in the record -> resolved file
        self.refused: dict[str, str] = {}  # as written -> why it is not embedded

    def candidates(self, record: dict[str, Any]) -> Iterator[str]:
        for key in (*LOCAL_IMAGE_FIELDS, self.step.image_key, "image_url"):
            value = record.get(key)
            if isinstance(value, str) and value:
                yield value

    def find(self, record: dict[str, Any]) -> tuple[str | None, str | None]:
        """A local path (key of self.local) or a URL, and why a local file was refused."""
        remote = refused = None
        for value in self.candidates(record):
            if value.startswith(REMOTE):
                remote = remote or value
                continue
            if value in self.local:
                return value, None
            if value in self.refused:
                refused = refused or self.refused[value]
                continue
            file = (self.base / value).resolve()  # an absolute value stays itself
            if not file.is_relative_to(self.root):
                self.refused[value] = (
                    f"not embedded: {value} is outside {self.root} (the dataset's folder; "
                    "set IMAGE_ROOT to a folder that holds it)"
                )
                refused = refused or self.refused[value]
            elif file.is_file():
                self.local[value] = file
                return value, None
        return remote, None if remote else refused

    def sources(self, mode: str) -> dict[str, str]:
        """Local image -> the src to use: a data: URI, or a path relative to the output."""
        if mode == "auto":
            total = sum(p.stat().st_size for p in self.local.values())
            mode = "embed" if total <= EMBED_LIMIT else "link"
        srcs = {}
        for value, file in self.local.items():
            mime = mimetypes.guess_type(file.name)[0] or ""
            if mode == "embed" and mime.startswith("image/"):
                data = base64.b64encode(file.read_bytes()).decode()
                srcs[value] = f"data:{mime};base64,{data}"
            else:
                rel = os.path.relpath(file, self.out_dir.resolve())
                srcs[value] = urllib.parse.quote(Path(rel).as_posix())
        return srcs


def response_of(value: Any) -> dict[str, Any]:
    size = describe_vector(value)  # an embedding: its size, not its numbers
    if size is not None:
        return {"kind": "text", "value": size}
    if isinstance(value, str):
        return {"kind": "text", "value": value}
    if isinstance(value, list) and all(isinstance(r, dict) and "question" in r for r in value):
        return {"kind": "rounds", "value": value}
    return {"kind": "json", "value": value}


def collect(args: argparse.Namespace, step: Step) -> dict[str, Any]:
    directory: Path = args.dir
    response_key = args.response_key or step.response_key or ""
    builder = RequestBuilder(step, args.data_key)
    fields = prompt_fields(builder)
    key = key_function(args.data_key)
    files = StepDir(directory)
    requests, skipped_path, errors_path = files.requests, files.skipped, files.errors
    sent = {r["custom_id"] for r in iter_jsonl(requests)} if requests.exists() else set()
    skipped = {r["index"]: r for r in iter_jsonl(skipped_path)} if skipped_path.exists() else {}
    errors = {r["index"]: r for r in iter_jsonl(errors_path)} if errors_path.exists() else {}
    base = args.input.parent if args.input else args.merged.parent
    images = Images(base, args.image_root or base, args.output.parent, step)
    rows: list[dict[str, Any]] = []
    counts = {"answered": 0, "failed": 0, "skipped": 0, "not_selected": 0}
    for index, record in enumerate(iter_records(args.merged)):
        cid = custom_id_of(record, key)
        img, img_note = images.find(record)
        row: dict[str, Any] = {"i": index, "id": cid, "img": img, "img_note": img_note}
        values = {}
        for name, program in fields.items():
            value = jq_first(program, record) if program else record.get(name)
            if value is not None:
                values[name.strip()] = shorten(value)
        row["fields"] = values
        if index in errors:
            e = errors[index]
            row["status"] = "failed"
            row["error"] = {k: e.get(k) for k in ("code", "message", "stage", "attempts")}
        elif index in skipped:
            row["status"] = "skipped"
            # An image's reason (a missing file, `image_url: HTTP 403` from the preflight), or
            # the prompt fields the record lacks.
            reason = skipped[index].get("reason")
            row["why"] = reason or "missing " + ", ".join(skipped[index].get("missing") or [])
        elif cid is not None and cid in sent:
            row["status"] = "answered"
            row["response"] = response_of(record.get(response_key))
        else:  # "skipped" is kept for skipped.jsonl's records
            row["status"] = "not_selected"
            row["why"] = (
                f"not selected by where: {step.where}"
                if step.where
                else "not sent (not in requests.jsonl)"
            )
        counts[row["status"]] += 1
        rows.append(row)
    srcs = images.sources(args.images)
    for row in rows:
        img = row["img"]
        row["img"] = None if img is None else srcs.get(img, img)
        row["local"] = img in srcs
    return {
        "step": step.name,
        "name": f"{directory.resolve().parent.name}/{directory.resolve().name}",
        "model": step.model,
        "response_key": response_key,
        "prompt": step.user or "",
        "merged": str(args.merged),
        "per_page": args.per_page,
        "counts": counts,
        "records": rows,
    }


def script_json(data: Any) -> str:
    """JSON that is safe inside <script>: no '<', '>' or '&' survive literally."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(data: dict[str, Any]) -> str:
    title = f"gallery: {data['name']} ({len(data['records'])} records)"
    values = {
        "TITLE": html.escape(title),
        "STEP": html.escape(data["step"]),
        "DATA": script_json(data),
    }
    page = PAGE.read_text(encoding="utf-8")
    return re.sub(r"__(TITLE|STEP|DATA)__", lambda m: values[m.group(1)], page)
