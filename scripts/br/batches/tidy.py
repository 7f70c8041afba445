"""Delete a step's files on the server once their results are safe in answers/: `make tidy`.

For every batch in the step's ledger that ended and was fetched (its rows are in answers/), the
batch's input, output and error files are deleted on the server, each named on stdout, and the
ledger notes it so a second tidy asks nothing. A batch still running, or ended but not yet
fetched, keeps its files (and is listed as kept, with why). `--dry-run` (DRY_RUN=1) lists what
would go and deletes nothing. Batches themselves cannot be deleted through the API; they stay.
"""

from __future__ import annotations

# cli first: its Ctrl+C handling then covers the imports below.

# isort: split

from typing import Any


def files_of(client: Any, batch_id: str) -> list[str]:
    """The input, output and error files of a batch (none if the server lost it)."""
    import openai

    try:
        batch = client.batches.retrieve(batch_id)
    except openai.NotFoundError:
        return []
    return [f for f in (batch.input_file_id, batch.output_file_id, batch.error_file_id) if f]
