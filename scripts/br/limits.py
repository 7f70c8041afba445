"""The Batch API's limits, each in one place (../shared/reference/openai-batch-api/FACTS.md)."""

from __future__ import annotations

MAX_REQUESTS = 50_000  # requests per batch
MAX_EMBEDDING_INPUTS = 50_000  # embedding inputs across all requests of one batch
MAX_FILE_BYTES = 209_715_200  # a batch input file: "up to 200 MB" (200 MiB)
DEFAULT_MAX_BYTES = 180_000_000  # MAX_BYTES' default: safely under MAX_FILE_BYTES
MAX_IMAGE_BYTES = 20_000_000  # one image in a request
MIN_OUTPUT_TOKENS = 16  # the least max_output_tokens of a Responses request
