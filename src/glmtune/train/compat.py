"""TrainingArguments' names across the transformers releases the train stage runs on (5.x by default; 4.40.2 in
workflow/envs/glmtune_remote_code.yaml with `model.trust_remote_code: true`): each helper gives the name that release
knows."""

from __future__ import annotations

from typing import Any


def eval_strategy_arg() -> str:
    """`eval_strategy` (4.41 and later) or `evaluation_strategy` (older) of TrainingArguments."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return next(name for name in ("eval_strategy", "evaluation_strategy") if name in fields)


def checkpointing_arg() -> str:
    """`activation_checkpointing` (5.2x) or `gradient_checkpointing` (older 5.x, as the lent GPU machines run)."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return next(name for name in ("activation_checkpointing", "gradient_checkpointing") if name in fields)


def sampling_args(sampling: str) -> dict[str, Any]:
    """random, sequential, or group_by_length (batches of similar lengths: little padding)."""
    from transformers import TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": sampling}
    if sampling == "group_by_length":  # older transformers 5.x releases
        return {"group_by_length": True}
    if sampling != "random":
        raise ValueError(f"train.sampling: {sampling!r} needs a newer transformers (train_sampling_strategy)")
    return {}
