"""The synthetic dataset and config every part of `make bench` runs on: news records of about
620 bytes, seeded, so two runs measure the same data."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CONFIG = """\
model: gpt-4o-mini
caption:
  system: You write factual, detailed captions for news photographs.
  user: |
    Headline: {title}
    Published caption: {caption}
    Article: {article}
    Describe the photograph in two or three sentences, using the headline and caption.
  image_detail: low
  response_key: generated_caption
  max_tokens: 300
"""
# Runs a script like `.venv/bin/python`, then appends its wall time, CPU and peak RSS to a log.
# fmt: off
WORDS = [
    "harbour", "council", "minister", "river", "festival", "storm", "election", "museum",
    "railway", "school", "court", "market", "bridge", "hospital", "village", "coast", "stadium",
    "airport", "factory", "farmers", "police", "union", "protest", "parliament", "mayor",
    "rescue", "flood", "wildfire", "summit", "treaty", "exhibition", "concert", "orchestra",
    "striker", "coach", "season", "record", "drought", "harvest", "volcano", "glacier", "São",
    "Paulo", "Zoë", "Müller", "Kraków", "Reykjavík", "Nairobi", "Jakarta", "Montréal", "Oaxaca",
    "Tromsø",
]
# fmt: on


def records(n: int, seed: int, fixed: bool = False) -> Iterator[dict[str, Any]]:
    """n news records of about 620 bytes. fixed: every text field the same length."""
    rng = random.Random(seed)

    def pool(k: int, words: tuple[int, int]) -> list[str]:
        return [
            " ".join(rng.choices(WORDS, k=rng.randint(*words))).capitalize() + "." for _ in range(k)
        ]

    titles, sentences = pool(4000, (5, 10)), pool(8000, (7, 15))
    for i in range(n):
        title, caption = rng.choice(titles), rng.choice(sentences)
        article = " ".join(rng.choices(sentences, k=rng.randint(2, 4)))
        if fixed:
            title, caption, article = (
                f"{title:<60.60}",
                f"{caption:<100.100}",
                f"{article:<300.300}",
            )
        yield {
            "image_path": f"images/{i:07d}.jpg",
            "image_url": f"https://images.example-news.org/2026/{i % 12 + 1:02d}/{i:07d}.jpg",
            "title": title,
            "date": f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
            "caption": caption,
            "article": article,
            "source": f"https://www.example-news.org/story/{i:07d}",
        }


def write_dataset(path: Path, n: int, seed: int = 7, fixed: bool = False) -> Path:
    """JSONL, or a JSON list (one record a line) when the name ends in .json."""
    jsonl = path.suffix == ".jsonl"
    with open(path, "w", encoding="utf-8") as f:
        if not jsonl:
            f.write("[\n")
        for i, record in enumerate(records(n, seed, fixed)):
            line = json.dumps(record, ensure_ascii=False)
            f.write(line + "\n" if jsonl else ("" if i == 0 else ",\n") + line)
        if not jsonl:
            f.write("\n]\n")
    return path
