"""Packing several samples into one row, with position ids that restart per sample.

With no attention mask and restarting position ids, transformers keeps samples apart (attention never crosses
samples) — as long as the KV cache is off, which the collator makes sure of: with flex attention (the GPU default,
glmtune.train.attention) as a block mask from the sequence ids, with sdpa / eager as a dense block-diagonal mask.
Rows carry no padding inside, so a batch of a few long rows wastes far less compute than many padded samples.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from glmtune.chat_template import IGNORE_INDEX
from glmtune.train.collate import TrainedTokens, padded_width

if TYPE_CHECKING:
    from datasets import Dataset


def plan_rows(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """Best-fit decreasing: sample indices per row, no row over row_length tokens."""
    if lengths and max(lengths) > row_length:
        raise ValueError(f"train.pack_length {row_length} is shorter than the longest sample ({max(lengths)} tokens); "
                         f"raise it to {max(lengths)} or more (the tokenize limit, tokenize.cutoff_len or "
                         f"max_input_length + max_output_length + 1, is the longest a sample can be), or lower that limit")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row index), sorted
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        spot = bisect.bisect_left(free, (lengths[index], -1))
        if spot == len(free):
            rows.append([index])
            bisect.insort(free, (row_length - lengths[index], len(rows) - 1))
        else:
            space, row = free.pop(spot)
            rows[row].append(index)
            bisect.insort(free, (space - lengths[index], row))
    return rows


def pack_rows(ids: Sequence[list[int]], labels: Sequence[list[int]], row_length: int) -> dict[str, list[list[int]]]:
    """Concatenate samples into rows; each sample's first label is ignored so no token predicts across a boundary."""
    packed: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for row in plan_rows([len(x) for x in ids], row_length):
        packed["input_ids"].append([token for i in row for token in ids[i]])
        packed["labels"].append([label for i in row for label in [IGNORE_INDEX, *labels[i][1:]]])
        packed["position_ids"].append([p for i in row for p in range(len(ids[i]))])
    return packed


def pack_dataset(dataset: Dataset, row_length: int) -> Dataset:
    """A tokenized dataset packed into rows (pack_rows)."""
    from datasets import Dataset

    return Dataset.from_dict(pack_rows(dataset["input_ids"], dataset["labels"], row_length))


class PackedCollator(TrainedTokens):
    """Pads packed rows at the end (a separate, untrained block; to a multiple of `pad_multiple` tokens) and turns
    the KV cache off."""

    def __init__(self, pad_id: int, pad_multiple: int = 1) -> None:
        super().__init__()
        self.pad_id, self.pad_multiple = pad_id, pad_multiple

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor | bool]:
        width = padded_width(max(len(f["input_ids"]) for f in features), self.pad_multiple)
        self.collated(features)
        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])
        positions = torch.tensor([f["position_ids"] + list(range(width - len(f["position_ids"]))) for f in features])
        return {"input_ids": pad("input_ids", self.pad_id), "labels": pad("labels", IGNORE_INDEX),
                "position_ids": positions, "use_cache": False}
