"""Requests -> chunks -> paid batches, exactly once, and what the account holds."""
