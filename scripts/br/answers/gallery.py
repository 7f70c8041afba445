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

# isort: split

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
from br.prompts.build import RequestBuilder, custom_id_of, jq_first, key_function
from br.prompts.endpoints import describe_vector
from br.records import dumps, iter_jsonl, iter_records

LOCAL_IMAGE_FIELDS = ("image_path",)
MAX_FIELD_CHARS = 4000
EMBED_LIMIT = 20_000_000  # auto: embed local images as data: URIs up to this many bytes in all
REMOTE = ("http://", "https://", "data:")


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
    requests = directory / "requests.jsonl"
    sent = {r["custom_id"] for r in iter_jsonl(requests)} if requests.exists() else set()
    skipped_path, errors_path = directory / "skipped.jsonl", directory / "errors.jsonl"
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
    return re.sub(r"__(TITLE|STEP|DATA)__", lambda m: values[m.group(1)], PAGE)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
:root { --ok: #1a7f37; --bad: #cf222e; --skip: #8a6d00; --line: #d0d7de; --muted: #57606a; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: #1f2328; background: #f6f8fa; }
header { position: sticky; top: 0; z-index: 1; background: #fff;
  border-bottom: 1px solid var(--line); padding: 10px 20px; }
h1 { font-size: 17px; margin: 0 0 6px; }
#filters { display: inline-flex; gap: 6px; }
.bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
.bar button { font: inherit; padding: 3px 10px; border: 1px solid var(--line);
  border-radius: 14px; background: #fff; cursor: pointer; }
.bar button[aria-pressed="true"] { background: #0969da; border-color: #0969da; color: #fff; }
.bar input[type=search] { font: inherit; padding: 3px 8px; border: 1px solid var(--line);
  border-radius: 6px; min-width: 220px; }
.pager { margin-left: auto; display: flex; gap: 6px; align-items: center; color: var(--muted); }
main { padding: 14px 20px; display: grid; gap: 12px; }
.card { display: grid; grid-template-columns: 240px minmax(0, 1fr) minmax(0, 1.2fr); gap: 16px;
  background: #fff; border: 1px solid var(--line); border-left: 5px solid var(--ok);
  border-radius: 8px; padding: 12px; }
.card.failed { border-left-color: var(--bad); background: #fff8f8; }
.card.skipped { border-left-color: var(--skip); }
.pic { width: 240px; min-height: 120px; display: flex; align-items: flex-start; }
.pic img { width: 100%; height: auto; border-radius: 4px; background: #eee; }
.noimg { width: 100%; padding: 30px 8px; text-align: center; color: var(--muted);
  background: #eaeef2; border-radius: 4px; font-size: 12px; word-break: break-all; }
.meta { font-size: 12px; color: var(--muted); margin-bottom: 6px; word-break: break-all; }
.badge { display: inline-block; font-size: 11px; font-weight: 600; padding: 1px 8px;
  border-radius: 10px; color: #fff; background: var(--ok); margin-right: 6px; }
.failed .badge { background: var(--bad); }
.skipped .badge { background: var(--skip); }
.card.not_selected { border-left-color: var(--muted); }
.not_selected .badge { background: var(--muted); }
dl { margin: 0; }
dt { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
dd { margin: 0 0 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
h2 { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
  margin: 0 0 4px; font-weight: normal; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
pre { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px;
  background: #f6f8fa; padding: 6px; border-radius: 4px; }
ol.rounds { margin: 0; padding-left: 20px; } ol.rounds li { margin-bottom: 4px; }
.error { color: var(--bad); white-space: pre-wrap; overflow-wrap: anywhere; }
.why { color: var(--skip); }
.empty { color: var(--muted); padding: 40px; text-align: center; }
details { font-size: 12px; color: var(--muted); margin-top: 4px; }
details pre { color: #1f2328; }
@media (max-width: 800px) { .card { grid-template-columns: 1fr; } .pic { width: 100%; } }
</style>
</head>
<body>
<header>
<h1>__TITLE__</h1>
<div class="bar">
  <span id="filters" role="group" aria-label="filter"></span>
  <input type="search" id="q" placeholder="search id, fields, responses" aria-label="search">
  <span class="pager"><button id="prev" type="button">&#8249; prev</button>
  <span id="pageinfo"></span><button id="next" type="button">next &#8250;</button></span>
</div>
<details><summary>step __STEP__: prompt and settings</summary><pre id="prompt"></pre></details>
</header>
<main id="cards"></main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const KINDS = ["all", "answered", "failed", "skipped", "not_selected"];
const LABELS = {"not_selected": "not selected"};
const label = k => LABELS[k] || k;
const state = { filter: "all", page: 1, q: "" };
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
};
document.getElementById("prompt").textContent =
  "model: " + D.model + "\\nresponse key: " + D.response_key + "\\nmerged: " + D.merged +
  "\\n\\nuser prompt:\\n" + D.prompt;
function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  state.filter = KINDS.includes(h.get("filter")) ? h.get("filter") : "all";
  state.page = Math.max(1, parseInt(h.get("page") || "1", 10) || 1);
  state.q = h.get("q") || "";
  document.getElementById("q").value = state.q;
}
function writeHash() {
  const h = new URLSearchParams();
  if (state.filter !== "all") h.set("filter", state.filter);
  if (state.page > 1) h.set("page", String(state.page));
  if (state.q) h.set("q", state.q);
  const s = h.toString();
  history.replaceState(null, "", s ? "#" + s : location.pathname + location.search);
}
function haystack(r) {
  if (r._hay === undefined) {
    r._hay = [r.id, JSON.stringify(r.fields), r.response ? JSON.stringify(r.response.value) : "",
      r.error ? r.error.code + " " + r.error.message : "", r.why || ""].join(" ").toLowerCase();
  }
  return r._hay;
}
function selected() {
  const q = state.q.toLowerCase();
  return D.records.filter(r => (state.filter === "all" || r.status === state.filter) &&
    (!q || haystack(r).includes(q)));
}
function picture(r) {
  const box = el("div", "pic");
  if (!r.img) { box.append(el("div", "noimg", r.img_note || "no image")); return box; }
  const img = document.createElement("img");
  img.alt = r.id || ("record " + r.i);
  img.decoding = "async";
  img.addEventListener("load", () => { img.dataset.loaded = "yes"; });
  img.addEventListener("error", () => {
    img.dataset.loaded = "no";
    const note = el("div", "noimg", "image not available offline: " + r.img.slice(0, 200));
    box.replaceChildren(note);
  });
  img.src = r.img;
  box.append(img);
  return box;
}
function response(r) {
  const box = el("div", "resp");
  if (r.status === "failed") {
    box.append(el("h2", "", "failed"));
    const e = r.error || {};
    let msg = (e.code || "error") + ": " + (e.message || "");
    if (e.attempts) msg += "\\n(" + e.attempts + " attempt" + (e.attempts > 1 ? "s" : "") + ")";
    box.append(el("div", "error", msg));
    return box;
  }
  if (r.status === "skipped" || r.status === "not_selected") {
    box.append(el("h2", "", r.status === "skipped" ? "not sent" : "not selected"));
    box.append(el("div", "why", r.why));
    return box;
  }
  box.append(el("h2", "", "response (" + D.response_key + ")"));
  const v = r.response ? r.response.value : null;
  if (!r.response || v === null || v === undefined) box.append(el("div", "why", "(empty)"));
  else if (r.response.kind === "text") box.append(el("div", "text", v));
  else if (r.response.kind === "rounds") {
    const ol = el("ol", "rounds");
    for (const round of v) {
      const li = el("li");
      li.append(el("b", "", "Q: "), document.createTextNode(String(round.question)),
        el("br"), el("b", "", "A: "), document.createTextNode(String(round.answer)));
      ol.append(li);
    }
    box.append(ol);
  } else box.append(el("pre", "", JSON.stringify(v, null, 2)));
  return box;
}
function card(r) {
  const c = el("article", "card " + r.status);
  c.dataset.status = r.status;
  c.dataset.index = String(r.i);
  const mid = el("div", "fields");
  const meta = el("div", "meta");
  const text = "#" + r.i + "  " + (r.id ?? "");
  meta.append(el("span", "badge", label(r.status)), document.createTextNode(text));
  mid.append(meta);
  const dl = el("dl");
  for (const [k, v] of Object.entries(r.fields)) dl.append(el("dt", "", k), el("dd", "", v));
  mid.append(dl);
  c.append(picture(r), mid, response(r));
  return c;
}
function draw() {
  const rows = selected();
  const pages = Math.max(1, Math.ceil(rows.length / D.per_page));
  state.page = Math.min(state.page, pages);
  const start = (state.page - 1) * D.per_page;
  const main = document.getElementById("cards");
  main.replaceChildren();
  for (const r of rows.slice(start, start + D.per_page)) main.append(card(r));
  if (!rows.length) main.append(el("div", "empty", "no records match"));
  const shown = rows.length ? (start + 1) + "–" + Math.min(start + D.per_page, rows.length) : "0";
  document.getElementById("pageinfo").textContent =
    "page " + state.page + " of " + pages + " (" + shown + " of " + rows.length + ")";
  document.getElementById("prev").disabled = state.page <= 1;
  document.getElementById("next").disabled = state.page >= pages;
  for (const b of document.querySelectorAll("#filters button"))
    b.setAttribute("aria-pressed", String(b.dataset.filter === state.filter));
  document.body.dataset.page = String(state.page);
  document.body.dataset.pages = String(pages);
  document.body.dataset.filter = state.filter;
  writeHash();
}
const counts = Object.assign({ all: D.records.length }, D.counts);
for (const k of KINDS) {
  const b = el("button", "", label(k) + " (" + counts[k] + ")");
  b.type = "button";
  b.dataset.filter = k;
  b.addEventListener("click", () => { state.filter = k; state.page = 1; draw(); });
  document.getElementById("filters").append(b);
}
const on = (id, type, f) => document.getElementById(id).addEventListener(type, f);
on("prev", "click", () => { state.page--; draw(); scrollTo(0, 0); });
on("next", "click", () => { state.page++; draw(); scrollTo(0, 0); });
on("q", "input", e => { state.q = e.target.value; state.page = 1; draw(); });
window.addEventListener("hashchange", () => { readHash(); draw(); });
readHash();
draw();
</script>
</body>
</html>
"""
