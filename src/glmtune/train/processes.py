"""Training and validation on several processes, each record once a pass and every rank agreeing on the order.

accelerate deals each global batch of `processes x batch_size` rows from one sampler to the ranks and, where the
last one is short, fills it by looping back to the start of the pass: records trained (and validated) twice. Here
the training rows are topped up with empty rows (no trained token: no loss, no gradient) to whole global batches,
the length-grouped order is drawn from a generator seeded by train.seed and the epoch (the same on every rank), and
the validation loss is computed from each rank's own batches, each record once, as one process computes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from glmtune.chat_template import IGNORE_INDEX


def empty_row(row: dict[str, Any]) -> dict[str, Any]:
    """`row` cut to its first token with nothing trained: it fills a batch slot at almost no cost."""
    return {key: (value[:1] if isinstance(value, list) else value) for key, value in row.items()} | {"labels": [IGNORE_INDEX]}


def whole_global_batches(dataset: Dataset, world_size: int, batch_size: int) -> Dataset:
    """`dataset` topped up with empty rows to a multiple of world_size x batch_size rows (one process: unchanged),
    so that accelerate loops back to no record: each is trained once a pass, and the steps stay those of
    glmtune.train.trainer.steps_of."""
    missing = -len(dataset) % (world_size * batch_size) if world_size > 1 else 0
    if not missing:
        return dataset
    filler = Dataset.from_list([empty_row(dataset[0])] * missing, features=dataset.features)
    return concatenate_datasets([dataset, filler])


class SeededLengthSampler(LengthGroupedSampler):
    """The Trainer's length-grouped order, drawn from `seed` + the epoch rather than each rank's global RNG (which
    dropout moves apart on ranks that see batches of different shapes)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer (through accelerate) calls it at each epoch's start
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def spread_validation_loss(dataset: Dataset, batch_size: int, rank: int, world_size: int,
                           batch_loss: Callable[[list[dict[str, Any]]], torch.Tensor]) -> torch.Tensor:
    """(sum over this rank's batches of the batch's token-mean loss x its records, its records), float64.

    The batches are one process's (in order, `batch_size` records each, the last partial); rank r takes batches
    r, r + world_size, ...; a rank short of one in the last round computes the first again and counts nothing
    (every rank runs as many forwards: ZeRO-3 gathers weights in each)."""
    starts = range(0, len(dataset), batch_size)
    total = torch.zeros(2, dtype=torch.float64)
    for round_ in range(math.ceil(len(starts) / world_size)):
        index = round_ * world_size + rank
        start = starts[index] if index < len(starts) else 0
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        loss = batch_loss(rows)
        if index < len(starts):
            total += torch.tensor([loss.item() * len(rows), len(rows)], dtype=torch.float64)
    return total
