"""Batches of unpacked samples (packed rows have their own collator in glmtune.train.packing)."""

from __future__ import annotations

from collections import deque

import torch

from glmtune.chat_template import IGNORE_INDEX


def padded_width(longest: int, multiple: int) -> int:
    """`longest` rounded up to a multiple of `multiple`: a GPU run then meets a few batch shapes, each compiled or
    autotuned once, instead of one per length (train.pad_to_multiple_of; 1 on a CPU)."""
    return -(-longest // multiple) * multiple


class TrainedTokens:
    """The real tokens of the batches trained so far, for tokens/s (glmtune.train.callbacks.JsonlLogger).

    A collator notes each batch's count when it makes it, and the training step takes the oldest noted count
    (glmtune.train.loss.LossTrainer): the data loader makes a batch ahead of the step that trains it, so counting at
    collation put the next batch in a row (the first row held two batches, an epoch's last row none)."""

    def __init__(self) -> None:
        self.real_tokens = 0
        self.pending: deque[int] = deque()  # made, not trained yet (oldest first)

    def collated(self, features: list[dict[str, list[int]]]) -> None:
        # A row with no trained label is an empty row topping up a batch (glmtune.train.processes): not real tokens.
        self.pending.append(sum(len(f["input_ids"]) for f in features if any(x != IGNORE_INDEX for x in f["labels"])))

    def trained(self) -> None:
        if self.pending:
            self.real_tokens += self.pending.popleft()


class PadCollator(TrainedTokens):
    """Right-pads a batch: input ids with the pad id, labels with the ignore index (masked out of attention)."""

    def __init__(self, pad_id: int, pad_multiple: int = 1) -> None:
        super().__init__()
        self.pad_id, self.pad_multiple = pad_id, pad_multiple

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = padded_width(max(len(f["input_ids"]) for f in features), self.pad_multiple)
        self.collated(features)
        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])
        ids = pad("input_ids", self.pad_id)
        mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features])
        return {"input_ids": ids, "attention_mask": mask, "labels": pad("labels", IGNORE_INDEX)}
