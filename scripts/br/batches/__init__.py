"""Requests -> chunks -> paid batches, exactly once, and what the account holds.

Above the provider seam, written once: `split` (requests -> chunks), `chunk` (a chunk read
once, and its state), `engine` (the run's loop: submit, poll), `ended` (what an ended batch
means for its chunk), `earlier` (--collect), `submission` (exactly once: which batch holds a
chunk), `ledger` and `machine` (the step's and the machine's records), `polling` (when to ask),
`account` (status, check, cancel), `tidy`. The seam: `provider` (the interface and its types).
Below it: `openai` and its `client`, the first provider.
"""
