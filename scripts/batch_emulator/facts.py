"""The API's fixed values and limits that the emulator follows.

Each one is stated, with its source, in docs/api-facts.md (the section is named in the comment).
"""

from __future__ import annotations

# docs/api-facts.md "Endpoints a batch may target".
BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
# Endpoints the emulator answers; a batch to another allowed endpoint runs, and each of its
# requests fails with `unsupported_endpoint`.
ANSWERED_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")
# docs/api-facts.md "Files".
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
# docs/api-facts.md "Input lines".
MAX_BATCH_REQUESTS = 50_000
MAX_EMBEDDING_INPUTS = 50_000
MAX_BATCH_FILE_BYTES = 209_715_200  # 200 MiB, the figure in the one observed refusal
MAX_FILE_BYTES = 512 * 1024 * 1024  # "individual files up to 512 MB"; UNVERIFIED: MB or MiB
# docs/api-facts.md "Request bodies": a JSON body to the Files/Batches endpoints is a few KB
# (16 metadata pairs of 64 + 512 characters is under 10 KB), so 1 MiB refuses nonsense early.
MAX_JSON_BODY = 1024 * 1024
# A live model call may carry images inline; the limit observed is 50 MB of images per request.
MAX_MODEL_BODY = 64 * 1024 * 1024
# Multipart framing around an upload's bytes (boundaries, the purpose field).
MULTIPART_SLACK = 64 * 1024
# docs/api-facts.md "Validation failures": errors reported on a failed batch (UNVERIFIED cap).
MAX_REPORTED_ERRORS = 100
# docs/api-facts.md "Files" and "Batches".
BATCH_FILE_TTL = 2_592_000  # purpose=batch files expire after 30 days
BATCH_WINDOW_SECONDS = 86_400  # completion_window "24h"
EXPIRES_AFTER_RANGE = (3600, 2_592_000)
METADATA_MAX_PAIRS, METADATA_MAX_KEY, METADATA_MAX_VALUE = 16, 64, 512
ORGANIZATION = "org-emulator"
# docs/api-facts.md "Lists".
BATCH_LIST_LIMIT = (1, 100, 20)  # low, high, default
FILE_LIST_LIMIT = (1, 10_000, 10_000)
# docs/api-facts.md "Batch statuses".
ACTIVE_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")
ENQUEUED_STATUSES = ("in_progress", "finalizing")
