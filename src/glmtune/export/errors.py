"""What stops an export: a check that fails, or an artifact with nothing to merge."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class ExportCheckFailed(RuntimeError):
    """The merged model does not reproduce the adapter model's logits, holds NaN/inf, or was not saved as it is."""


def check_within_tolerance(worst: float, tolerance: float, prompts: int) -> float:
    """The merged-vs-adapter check both exports make: refused above `export.tolerance` (a NaN too), logged within."""
    if not worst <= tolerance:  # written so that a NaN fails too
        raise ExportCheckFailed(f"merged logits differ from the adapter model's by {worst:.3g} (> export.tolerance "
                                f"{tolerance}, both in fp32); nothing was written")
    log.info("merged weights match the adapter model in fp32 (before the cast to export.dtype): max |logit "
             "difference| %.3g on %d prompts", worst, prompts)
    return worst


class CannotMerge(ValueError):
    """The trained artifact has nothing that can be merged into the weights."""
