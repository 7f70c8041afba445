"""Token estimates for the plan, the budget and batch metadata: text, and images by OpenAI's rules.

Images (OpenAI's "Images and vision" guide, for gpt-4o class models): low detail is a fixed 85
tokens; high (and auto, counted as high) fits the image within 2048 x 2048, scales its shortest
side down to 768 px, and costs 170 per 512 px tile plus 85. UNVERIFIED: whether a small image
is scaled *up* to 768 px; we follow the common reading that only larger images are scaled down.
Other models weigh images differently (gpt-4o-mini: 2833 + 5667 a tile, the same dollar cost;
gpt-4.1-mini and later: 32 px patches); these estimates use the figures above.

Gemini models (`gemini-...`) are counted by Gemini's rule instead (`gemini_tokens`; FACTS.md
of the Gemini Batch API, §8): an image with both sides at most 384 px is 258 tokens; a larger
one is cut into square tiles of side min(w, h) / 1.5, kept within 256-768 px, 258 tokens each;
the same whether it travels inline or as a file. Text is a token per 4 characters, with no
per-message overhead (the emulator counts the same way).

Claude models (a model named claude-*, whatever the provider) follow Anthropic's rule instead
(https://platform.claude.com/docs/en/build-with-claude/vision, in
../shared/reference/anthropic-message-batches/FACTS.md §8.2): 28 x 28 px patches,
ceil(w/28) x ceil(h/28) tokens, after scaling down (aspect kept) to at most 1568 px on the long
edge and 1568 tokens; `image_detail` means nothing there. Opus 4.7 and later allow 2576 px and
4784 tokens: UNVERIFIED which later models do, so every claude model is estimated at 1568 (an
estimate on the low side for those few).
"""

from __future__ import annotations

import base64
import math
from typing import Any

from br.openai_api import EMBEDDINGS
from br.prompts.images.formats import pixel_size
from br.prompts.images.identity import Marker, decode_data_url, image_parts, part_image

LOW_DETAIL_TOKENS = 85
TILE_TOKENS = 170
BASE_TOKENS = 85
# A remote URL's size is unknown until the API fetches it: assume a 3:2 photograph larger
# than 768 px (1536 x 1024), which at high detail is 6 tiles, 1105 tokens. A wider image costs
# up to 1445, a square or 4:3 one 765.
ASSUMED_REMOTE_SIZE = (1536, 1024)
CLAUDE_PATCH, CLAUDE_MAX_SIDE, CLAUDE_MAX_TOKENS = 28, 1568, 1568


def is_claude(model: Any) -> bool:
    return str(model or "").startswith("claude")


def estimate_tokens(body: dict[str, Any], url: str | None = None) -> int:
    """Estimated prompt tokens: 4 per message, a token per 4 characters of text, and each image
    by OpenAI's rule for its detail (part_tokens: 85 at low; tiles at high and auto).

    By the body's shape (`url` settles a bare string input): chat `messages`; a Responses body's
    `instructions` and `input` (4 per input message); an embedding's inputs (a token per 4
    characters of each, a token per token of a token array). The same rules the emulator
    applies; real tokenizers differ, so a budget should keep a margin.
    """
    if is_gemini(body.get("model")):
        return gemini_tokens(body)
    if "messages" in body:
        claude = is_claude(body.get("model"))
        return chat_tokens(body.get("messages") or [], claude) + system_tokens(body)
    if is_embedding(body, url):
        return embedding_tokens(body.get("input"))
    return response_tokens(body)


def is_embedding(body: dict[str, Any], url: str | None) -> bool:
    if url is not None:
        return url == EMBEDDINGS
    given = body.get("input")
    if isinstance(given, list) and given and all(isinstance(x, dict) for x in given):
        return False
    return "embedding" in str(body.get("model")) or "dimensions" in body


def chat_tokens(messages: list[dict[str, Any]], claude: bool = False) -> int:
    """Chat messages (and Anthropic's: its image blocks by Anthropic's rule)."""
    chars, image_tokens = 0, 0
    for message in messages:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                chars += len(part.get("text") or "")
            elif part.get("type") == "image_url":
                image_tokens += part_tokens(part, claude)
            elif part.get("type") == "image":
                image_tokens += block_tokens(part)
    return math.ceil(chars / 4) + 4 * len(messages) + image_tokens


def system_tokens(body: dict[str, Any]) -> int:
    """Anthropic's top-level `system` (a string or text blocks); 0 for a chat body."""
    system = body.get("system")
    if isinstance(system, list):
        system = "".join(str(b.get("text") or "") for b in system if isinstance(b, dict))
    return math.ceil(len(system) / 4) + 4 if isinstance(system, str) and system else 0


def response_tokens(body: dict[str, Any]) -> int:
    """A /v1/responses body: instructions and input texts, 4 per input message, images."""
    instructions = body.get("instructions")
    chars = len(instructions) if isinstance(instructions, str) else 0
    given = body.get("input")
    if isinstance(given, str):
        return math.ceil((chars + len(given)) / 4) + 4
    items = [item for item in given if isinstance(item, dict)] if isinstance(given, list) else []
    image_tokens = 0
    for item in items:
        content = item.get("content")
        for part in [{"text": content}] if isinstance(content, str) else content or []:
            if part.get("type") == "input_image":
                image_tokens += part_tokens(part)
            elif isinstance(part.get("text"), str):
                chars += len(part["text"])
    return math.ceil(chars / 4) + 4 * len(items) + image_tokens


def embedding_tokens(given: Any) -> int:
    """An embedding request's input: a string, strings, a token array or token arrays."""
    items = given if isinstance(given, list) else [given]
    if items and all(isinstance(x, int) for x in items):
        return len(items)
    return sum(
        math.ceil(len(x) / 4) if isinstance(x, str) else len(x) if isinstance(x, list) else 0
        for x in items
    )


# ----------------------------------------------------------------------------- images


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


def claude_image_tokens(width: int, height: int) -> int:
    """Prompt tokens of one image by Anthropic's rule (see the note at the top): the largest
    scale of at most 1 whose long edge fits 1568 px and whose patches fit 1568 tokens."""

    def tokens(scale: float) -> int:
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        return math.ceil(w / CLAUDE_PATCH) * math.ceil(h / CLAUDE_PATCH)

    if max(width, height) <= CLAUDE_MAX_SIDE and tokens(1.0) <= CLAUDE_MAX_TOKENS:
        return tokens(1.0)
    low, high = 0.0, min(1.0, CLAUDE_MAX_SIDE / max(width, height))
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if tokens(mid) <= CLAUDE_MAX_TOKENS else (low, mid)
    return tokens(low)


def block_tokens(block: dict[str, Any]) -> int:
    """An Anthropic image block: its base64 bytes' size, or a URL's assumed size."""
    source = block.get("source") or {}
    size = None
    if source.get("type") == "base64":
        size = pixel_size(base64.b64decode(str(source.get("data") or "")))
    elif isinstance(source.get("url"), str):
        size = url_pixel_size(source["url"])
    return claude_image_tokens(*(size or ASSUMED_REMOTE_SIZE))


def url_tokens(url: str, detail: str | None, claude: bool = False) -> int:
    """Estimated tokens of an image (its detail, its size; a remote one's assumed)."""
    if claude:
        return claude_image_tokens(*(url_pixel_size(url) or ASSUMED_REMOTE_SIZE))
    if detail == "low":
        return LOW_DETAIL_TOKENS
    return image_tokens(*(url_pixel_size(url) or ASSUMED_REMOTE_SIZE), detail)


def part_tokens(part: dict[str, Any], claude: bool = False) -> int:
    """Estimated tokens of an image content part (chat or Responses); 0 for another part."""
    found = part_image(part)
    return url_tokens(*found, claude) if found else 0


def image_rule(provider: str | None, model: Any) -> str:
    """Whose image rule prices a request's images: its provider's (Anthropic's, Gemini's),
    else, on OpenAI's API (or a server speaking it), the model's family."""
    if provider == "anthropic" or (provider in (None, "openai") and is_claude(model)):
        return "claude"
    if provider == "gemini" or (provider in (None, "openai") and is_gemini(model)):
        return "gemini"
    return "openai"


def body_images(body: dict[str, Any], provider: str | None = None) -> tuple[int, int]:
    """(number of image parts, their estimated tokens) of a chat or Responses body, by the
    image rule of its provider (`image_rule`)."""
    rule = image_rule(provider, body.get("model"))
    found = []
    for url, detail in image_parts(body):
        if rule == "gemini":
            found.append(gemini_image_tokens(*(url_pixel_size(url) or ASSUMED_REMOTE_SIZE)))
        else:
            found.append(url_tokens(url, detail, rule == "claude"))
    return len(found), sum(found)


# ----------------------------------------------------------------------------- Gemini

GEMINI_TILE_TOKENS = 258
GEMINI_SMALL_SIDE = 384


def is_gemini(model: Any) -> bool:
    return isinstance(model, str) and model.removeprefix("models/").startswith("gemini")


def gemini_image_tokens(width: int, height: int) -> int:
    """Prompt tokens of one image for Gemini 2.0 and later (see the top)."""
    if width <= GEMINI_SMALL_SIDE and height <= GEMINI_SMALL_SIDE:
        return GEMINI_TILE_TOKENS
    tile = min(768.0, max(256.0, min(width, height) / 1.5))
    return GEMINI_TILE_TOKENS * math.ceil(width / tile) * math.ceil(height / tile)


def gemini_tokens(body: dict[str, Any]) -> int:
    """A chat or Responses body (as requests.jsonl holds it) bound for a Gemini model: a token
    per 4 characters of text, each image by Gemini's tile rule (a remote one's size assumed)."""
    images = 0
    texts: list[Any] = [body.get("instructions")]
    given = body.get("input")
    items = body.get("messages") or ([{"content": given}] if given is not None else [])
    for item in items if isinstance(items, list) else []:
        content = item.get("content") if isinstance(item, dict) else None
        for part in [{"text": content}] if isinstance(content, str) else content or []:
            if not isinstance(part, dict):
                continue
            found = part_image(part)
            if found:
                size = url_pixel_size(found[0]) or ASSUMED_REMOTE_SIZE
                images += gemini_image_tokens(*size)
            else:
                texts.append(part.get("text"))
    chars = sum(len(t) for t in texts if isinstance(t, str))
    return math.ceil(chars / 4) + images


def gemini_request_tokens(request: dict[str, Any]) -> int:
    """A Gemini GenerateContentRequest (a chunk's line, gemini_shape.py), by the same rule as
    `gemini_tokens` of the body it was shaped from: its texts, and each image, inline bytes by
    their size, a `file_data` URL by its size where known (else assumed)."""
    images, chars = 0, 0
    system = request.get("system_instruction") or request.get("systemInstruction") or {}
    for content in [system, *(request.get("contents") or [])]:
        for part in (content.get("parts") if isinstance(content, dict) else None) or []:
            if not isinstance(part, dict):
                continue
            inline = part.get("inline_data") or part.get("inlineData")
            file = part.get("file_data") or part.get("fileData")
            if isinstance(inline, dict):
                size = pixel_size(base64.b64decode(str(inline.get("data") or "")))
                images += gemini_image_tokens(*(size or ASSUMED_REMOTE_SIZE))
            elif isinstance(file, dict):
                url = str(file.get("file_uri") or file.get("fileUri") or "")
                images += gemini_image_tokens(*(url_pixel_size(url) or ASSUMED_REMOTE_SIZE))
            elif isinstance(part.get("text"), str):
                chars += len(part["text"])
    return math.ceil(chars / 4) + images
