"""What both export paths check with: a few real test prompts, their logits (finite), a finite adapter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from glmtune.chat_template import encode_prompt, get_template, split_for_generation
from glmtune.export.errors import ExportCheckFailed
from glmtune.finite import nonfinite_in_file
from glmtune.io import read_jsonl


def sample_inputs(test_path: str | Path, tokenizer: Any, template_name: str, count: int = 4) -> list[list[int]]:
    """A few real prompts from the test split to compare logits on."""
    template = get_template(template_name)
    rows = [row for _, row in zip(range(count), read_jsonl(test_path))]
    return [encode_prompt(tokenizer, template, split_for_generation(row["conversations"])[0]) for row in rows]


def logits_of(forward: Callable[[list[int]], torch.Tensor], inputs: list[list[int]], what: str) -> list[torch.Tensor]:
    """forward(ids) for each prompt, refused when any is NaN or inf."""
    with torch.inference_mode():
        logits = [forward(ids).clone() for ids in inputs]
    return require_finite_logits(logits, what)


def require_finite_logits(logits: list[torch.Tensor], what: str) -> list[torch.Tensor]:
    for number, values in enumerate(logits):
        if not bool(torch.isfinite(values).all()):
            raise ExportCheckFailed(f"{what} gives NaN or inf logits on test prompt {number}; nothing was written")
    return logits


def require_finite_adapter(adapter_dir: Path) -> None:
    for path in sorted(adapter_dir.glob("*.safetensors")):
        bad = nonfinite_in_file(path)
        if bad:
            raise ExportCheckFailed(f"{path}: tensor {bad} holds NaN or inf (training diverged, or the file is "
                                    f"corrupt); nothing was written. Train again.")
