"""A request's line and hash written from its step's shape, not encoded whole each time.

Every request of a step has the same body but for its values: the custom_id, the filled texts
and the image URL. Which of them appear, and where, depends only on which texts are empty and
whether there is an image (endpoints.py's only choices that look at a value), and whether
records.dumps has switched to its ExactFloat mode (which writes keys its own way): that is a
request's shape. For each shape the request is built once with stand-ins for its values and
encoded as its line (records.dumps) and as its identity's canonical form (the text
identity.request_hash hashes); each request's line and hash are then those encodings with its
own values escaped in the stand-ins' places, by the very escapes the encoders use
(json.encoder's encode_basestring and encode_basestring_ascii). The same bytes, without
walking the body twice: tests/test_shapes.py compares them with the whole encodings for every
shape of every endpoint.
"""

from __future__ import annotations

import hashlib
import os
import re
from json.encoder import encode_basestring, encode_basestring_ascii

import orjson

from br.config import Step
from br.prompts.endpoints import request_body
from br.prompts.images.identity import MARKER, canonical_text, canonical_url
from br.records import dumps, exact_floats

# (each text non-empty, image is None, image non-empty, records.dumps in its ExactFloat mode)
Key = tuple[tuple[bool, ...], bool, bool, bool]


class Encoding:
    """One encoding of a shape: its text cut at the stand-ins, and which value each cut takes."""

    def __init__(self, text: str, pattern: re.Pattern[str]) -> None:
        parts = pattern.split(text)
        self.pieces, self.slots = parts[0::2], [int(s) for s in parts[1::2]]

    def fill(self, escaped: list[str]) -> str:
        """The text with each value, escaped, in its places."""
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            out += (escaped[slot], piece)
        return "".join(out)


class Shapes:
    """The line and the hash of each request of `step` (`encode`), one shape at a time."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.token = os.urandom(16).hex()  # no config or record holds it: a stand-in is that
        self.stand_in = f"br-slot-{self.token}-{{}}".format
        self.pattern = re.compile(f'"br-slot-{self.token}-([0-9]+)"')
        self.shapes: dict[Key, tuple[Encoding, Encoding] | None] = {}

    def encode(self, custom_id: str, texts: list[str], image: str | None) -> tuple[str, str] | None:
        """(the request's line with its newline, its request_hash); None for a shape that cannot
        be written so (the caller encodes the request whole)."""
        key = (tuple(map(bool, texts)), image is None, bool(image), exact_floats())
        shape = self.shapes[key] if key in self.shapes else self.learn(key)
        if shape is None:
            return None
        line, canonical = shape
        values = [custom_id, *texts, image or ""]
        escaped = [escape(v) for v in values]
        # The canonical form escapes every character past ~: a value without one is escaped
        # the same both ways.
        pairs = zip(values, escaped, strict=True)
        ascii_escaped = [e if plain(v) else encode_basestring_ascii(v) for v, e in pairs]
        if image and image.startswith((MARKER, "data:")):  # its bytes' digest (identity.py)
            ascii_escaped[-1] = encode_basestring_ascii(canonical_url(image))
        return line.fill(escaped) + "\n", sha256(canonical.fill(ascii_escaped))

    def learn(self, key: Key) -> tuple[Encoding, Encoding] | None:
        stand_ins = [self.stand_in(i) for i in range(len(key[0]) + 2)]
        texts = [s if full else "" for s, full in zip(stand_ins[1:-1], key[0], strict=True)]
        image = None if key[1] else stand_ins[-1] if key[2] else ""
        body = request_body(self.step, texts, image)
        request = {"custom_id": stand_ins[0], "method": "POST", "url": self.step.endpoint}
        request["body"] = body
        line = Encoding(dumps(request), self.pattern)
        canonical = Encoding(canonical_text(request), self.pattern)
        # A stand-in left in a piece is a value the body holds other than whole (inside a
        # longer string): such a shape is encoded whole, request by request.
        pieces = line.pieces + canonical.pieces
        shape = None if any(self.token in piece for piece in pieces) else (line, canonical)
        self.shapes[key] = shape
        return shape


def escape(value: str) -> str:
    """`encode_basestring(value)`, through orjson: its escapes are json's (ensure_ascii=False),
    at a third of the time for text that is not ASCII; a lone surrogate, which it refuses,
    through json."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return encode_basestring(value)


def plain(value: str) -> bool:
    """Only characters from space to ~ (and controls): json's two escapes agree on it."""
    return value.isascii() and "\x7f" not in value


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
