"""What stops an export: a check that fails, or an artifact with nothing to merge."""

from __future__ import annotations


class ExportCheckFailed(RuntimeError):
    """The merged model does not reproduce the adapter model's logits, holds NaN/inf, or was not saved as it is."""


class CannotMerge(ValueError):
    """The trained artifact has nothing that can be merged into the weights."""
