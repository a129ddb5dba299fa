"""Batches of unpacked samples (packed rows have their own collator in glmtune.train.packing)."""

from __future__ import annotations

import torch

from glmtune.chat_template import IGNORE_INDEX


def padded_width(longest: int, multiple: int) -> int:
    """`longest` rounded up to a multiple of `multiple`: a GPU run then meets a few batch shapes, each compiled or
    autotuned once, instead of one per length (train.pad_to_multiple_of; 1 on a CPU)."""
    return -(-longest // multiple) * multiple


class PadCollator:
    """Right-pads a batch: input ids with the pad id, labels with the ignore index (masked out of attention)."""

    def __init__(self, pad_id: int, pad_multiple: int = 1) -> None:
        self.pad_id, self.pad_multiple = pad_id, pad_multiple
        self.real_tokens = 0  # tokens of real samples collated so far, for tokens/s

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = padded_width(max(len(f["input_ids"]) for f in features), self.pad_multiple)
        self.real_tokens += sum(len(f["input_ids"]) for f in features)
        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])
        ids = pad("input_ids", self.pad_id)
        mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features])
        return {"input_ids": ids, "attention_mask": mask, "labels": pad("labels", IGNORE_INDEX)}
