"""The causal-LM loss without the full-vocabulary logits: Liger's fused linear cross-entropy (a Triton kernel, GPU
only) or a chunked torch one (any device; each chunk's logits are recomputed in backward, never kept).

The Trainer asks the model for one position's logits (`logits_to_keep=1`); a forward hook on the decoder keeps its
final hidden states, and the loss is computed from them and the output layer's weight, over the trained positions
only. It is the model's own loss, term for term: labels shifted by one, -100 ignored, the sum divided by the
Trainer's num_items_in_batch (or by the count of trained tokens), so what is trained does not change
(tests/train/test_loss.py, tests/gpu/test_loss_gpu.py).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput

from glmtune.chat_template import IGNORE_INDEX
from glmtune.train.collate import TrainedTokens
from glmtune.train.processes import SeededLengthSampler, spread_validation_loss

CHUNK_TOKENS = 2048  # 2048 x 151,552 fp32 logits: 1.2 GB at a time instead of the whole row's


def _chunk_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((hidden @ weight.t()).float(), labels, reduction="sum")


def trained_positions(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states, next-token labels) of the positions that predict a trained token, flattened."""
    shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    keep = shifted != IGNORE_INDEX
    return hidden.reshape(-1, hidden.shape[-1])[keep], shifted[keep]


def chunked_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                     chunk: int = CHUNK_TOKENS) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy, trained tokens) of `labels` given the decoder's `hidden` states and the output
    layer's `weight`, `chunk` positions at a time."""
    hidden, targets = trained_positions(hidden, labels)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), chunk):
        part = slice(start, start + chunk)
        total = total + checkpoint(_chunk_sum, hidden[part], weight, targets[part], use_reentrant=False)
    return total, targets.numel()


def liger_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """As chunked_loss_sum, with Liger's fused linear cross-entropy kernel (CUDA only)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    hidden, targets = trained_positions(hidden, labels)
    if hidden.dtype != weight.dtype:  # under autocast the decoder may hand fp32 states to a bf16 output layer
        hidden = hidden.to(weight.dtype)
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")(weight, hidden, targets), targets.numel()


def causal_lm_of(model: Any) -> Any:
    """The transformers causal LM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class HiddenStateLoss:
    """The Trainer's compute_loss_func: the loss from the decoder's final hidden states (kept by a forward hook)."""

    def __init__(self, model: Any, kind: str) -> None:
        if kind not in ("chunked", "liger"):
            raise ValueError(f"train.loss {kind!r}: HiddenStateLoss computes chunked or liger")
        causal_lm = causal_lm_of(model)
        self.head = causal_lm.get_output_embeddings()
        if type(self.head) is not torch.nn.Linear or self.head.bias is not None:
            raise ValueError(f"train.loss {kind}: the output layer is a {type(self.head).__name__} (wrapped by an adapter, or "
                             f"with a bias), which only train.loss: plain computes")
        self.kind = kind
        self.hidden: torch.Tensor | None = None
        self.hook = causal_lm.get_decoder().register_forward_hook(self._keep)

    def _keep(self, module: Any, args: Any, output: Any) -> None:
        self.hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        if self.hidden is None:
            raise RuntimeError("the decoder's hidden states were not captured (was the forward hook removed?)")
        hidden, self.hidden = self.hidden, None  # freed with the step's graph
        weight = self.head.weight
        total, count = (liger_loss_sum if self.kind == "liger" else chunked_loss_sum)(hidden, weight, labels.to(hidden.device))
        if num_items_in_batch is None:
            return total / count
        if isinstance(num_items_in_batch, torch.Tensor):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch

    def remove(self) -> None:
        self.hook.remove()


class LossTrainer(Trainer):
    """A Trainer whose model computes one position's logits when a compute_loss_func takes the loss from hidden
    states (HiddenStateLoss): the full-vocabulary logits are never made; whose validation leaves the trained
    tokens' count as it was; and whose order and validation on several processes are as one process's
    (glmtune.train.processes)."""

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        """group_by_length from a seeded generator (the Trainer's draws from each rank's own RNG)."""
        grouped = getattr(self.args, "train_sampling_strategy", None) == "group_by_length" or \
            getattr(self.args, "group_by_length", False)  # older transformers 5.x releases
        data = (args[0] if args else kwargs.get("train_dataset")) or self.train_dataset
        if not grouped or data is None:
            return super()._get_train_sampler(*args, **kwargs)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return SeededLengthSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                   [len(ids) for ids in data["input_ids"]], seed)

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """On several processes, the validation loss each record once (accelerate's loader repeats records to even
        the ranks' batches, and the Trainer weights each rank's loss by both ranks' tokens)."""
        if self.args.world_size <= 1:  # one process: the Trainer's own loop, unchanged
            return super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        model = self.model_wrapped if self.is_deepspeed_enabled else self.model  # not DDP's: its forward syncs buffers
        model.eval()

        def batch_loss(rows: list[dict[str, Any]]) -> torch.Tensor:
            inputs = self._prepare_inputs(self.data_collator(rows))
            with torch.no_grad(), self.compute_loss_context_manager():
                return self.compute_loss(model, inputs).detach()  # no num_items_in_batch: the batch's token mean

        total = spread_validation_loss(dataloader.dataset, self.args.eval_batch_size, self.args.process_index,
                                       self.args.world_size, batch_loss)
        total = self.accelerator.reduce(total.to(self.args.device), "sum").cpu()
        return EvalLoopOutput(predictions=None, label_ids=None, num_samples=int(total[1]),
                              metrics={f"{metric_key_prefix}_loss": float(total[0] / total[1])})

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if isinstance(getattr(self, "compute_loss_func", None), HiddenStateLoss):  # absent before transformers 4.46
            inputs = {**inputs, "logits_to_keep": 1}
        return super().compute_loss(model, inputs, *args, **kwargs)

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """The batch this step trains is the oldest the collator made and noted (glmtune.train.collate.TrainedTokens)."""
        if isinstance(self.data_collator, TrainedTokens):
            self.data_collator.trained()
        return super().training_step(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """The validation batches go through the training collator, which notes their tokens: its notes are set
        back, so validation tokens never count as trained ones (tokens/s, glmtune.train.callbacks.JsonlLogger)."""
        if not isinstance(self.data_collator, TrainedTokens):
            return super().evaluate(*args, **kwargs)
        pending = list(self.data_collator.pending)
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.data_collator.pending = deque(pending)
