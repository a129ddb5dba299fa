"""Evaluation split over the processes torchrun starts (one per GPU of a node), around any generation backend.

Every rank runs every N-th batch of one plan (glmtune.evaluate.backend.make_plan), cut at the smallest rank's batch
limit, and gets every rank's predictions back: the same predictions as one process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from glmtune.evaluate.backend import GenerationBackend, Plan


def join_process_group() -> tuple[int, int, str | None]:
    """(rank, world size, device) in a process torchrun started with several ranks; (0, 1, None) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    import torch
    import torch.distributed as dist

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device != "cpu" else "gloo")
    return dist.get_rank(), world, device


def gather_predictions(part: dict[int, str], world: int) -> dict[int, str]:
    """Every rank's predictions, merged (the same on every rank)."""
    if world == 1:
        return part
    import torch.distributed as dist

    parts: list[dict[int, str] | None] = [None] * world
    dist.all_gather_object(parts, part)
    return {index: text for piece in parts for index, text in (piece or {}).items()}


def agree_on_batch_size(rows: int, world: int, device: str | None) -> int:
    """The smallest rank's batch size on every rank: all ranks must cut the same plan."""
    if world == 1:
        return rows
    import torch
    import torch.distributed as dist

    value = torch.tensor([rows], device=device or "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


class RankSplit:
    """`backend` on rank `rank` of `world`: a backend itself, whose generate gives the whole plan's predictions."""

    def __init__(self, backend: GenerationBackend, rank: int, world: int, device: str | None) -> None:
        self.backend, self.rank, self.world, self.device = backend, rank, world, device

    def batch_limit(self, prompts: Sequence[list[int]], max_new_tokens: int) -> int:
        rows = agree_on_batch_size(self.backend.batch_limit(prompts, max_new_tokens), self.world, self.device)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank has loaded its model: the caller times generation only
        return rows

    def generate(self, plan: Plan, part: slice = slice(None)) -> dict[int, str]:
        """This rank's share of `plan.batches[part]` (every world-th batch), then every rank's predictions."""
        batches = range(len(plan.batches))[part][self.rank :: self.world]
        mine = self.backend.generate(plan, slice(batches.start, batches.stop, batches.step))
        return gather_predictions(mine, self.world)
