"""The splitter's one error for bad input (shared by the sequential split and the fan-out)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: the job ends with this message (file, line, reason) in the ledger."""
