"""Batches of unpacked samples (packed rows have their own collator in glmtune.train.packing)."""

from __future__ import annotations

import torch

from glmtune.data.templates import IGNORE_INDEX


class PadCollator:
    """Right-pads a batch: input ids with the pad id, labels with the ignore index."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id
        self.real_tokens = 0  # tokens of real samples collated so far, for tokens/s

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        self.real_tokens += sum(len(f["input_ids"]) for f in features)
        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])
        ids = pad("input_ids", self.pad_id)
        mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features])
        return {"input_ids": ids, "attention_mask": mask, "labels": pad("labels", IGNORE_INDEX)}
