"""Non-finite numbers never pass silently: a NaN/inf loss stops training, a NaN weight is never saved or exported."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import TrainerCallback


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or an inf, or None."""
    for name, tensor in named:
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def nonfinite_in_file(path: str | Path) -> str | None:
    """The first tensor of a safetensors file holding a NaN or an inf (read one tensor at a time), or None."""
    with safe_open(str(path), framework="pt") as handle:
        return first_nonfinite((key, handle.get_tensor(key)) for key in handle.keys())


class StopOnNonFinite(TrainerCallback):
    """Stops training at the first logged NaN/inf loss or gradient norm, before anything more is saved.

    A logged loss is the mean since the previous log row, so a NaN at any step shows. Under fp16 an inf gradient
    norm is the GradScaler's normal overflow (that step is skipped, the scale lowered), so only the loss counts there.
    """

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate
        self.last_finite = 0  # the last step checked and found finite: a NaN appeared after it

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_finite = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        watched = ("loss",) if args.fp16 else ("loss", "grad_norm")
        bad = {key: (logs or {})[key] for key in watched if key in (logs or {}) and not math.isfinite((logs or {})[key])}
        if bad:
            raise TrainingDiverged(diverged_message(state.global_step, bad, self.learning_rate, self.last_finite))
        validation = (logs or {}).get("eval_loss")
        if validation is not None and not math.isfinite(validation):  # a NaN in the table, and a model that overflows
            raise TrainingDiverged(
                f"the validation loss at step {state.global_step} is {validation}"
                + (f", with the training loss finite at step {self.last_finite}" if self.last_finite else "")
                + ": the model's forward overflows on the validation data (fp16 has a small range), or a validation "
                "sample has no trained token; no adapter was written. Try train.precision bf16 or fp32")
        if "loss" in (logs or {}):
            self.last_finite = state.global_step


def steps_since(step: int, last_finite: int | None) -> str:
    """Where a NaN appeared: the step, or the steps since the last finite check (a logged loss is their mean)."""
    if last_finite is None or last_finite >= step - 1:
        return f"at step {step}"
    return f"between steps {last_finite + 1} and {step} (finite at step {last_finite}, the last check)"


def diverged_message(step: int, values: dict[str, float], learning_rate: float, last_finite: int | None = None) -> str:
    shown = ", ".join(f"{key} {value}" for key, value in values.items())
    return (f"training diverged {steps_since(step, last_finite)} ({shown}); no adapter was written. "
            "Try a lower train.learning_rate "
            f"(now {learning_rate}), more train.warmup_steps, train.precision bf16 or fp32 instead of fp16, "
            f"and check the training data for empty or extreme samples")
