"""The training speed path per device, decided in one place: attention, loss, fused kernels, padding multiple.

    setting                    CUDA device                              CPU (any other device)
    train.attention: auto      flex_attention when packing (a block     the model's own (sdpa; packed rows get
                               mask from the restarting position ids:   transformers' dense block-diagonal mask)
                               no dense mask), else sdpa
    train.loss: auto           liger (fused linear cross-entropy, no    plain (the model's own loss)
                               full-vocabulary logits) when
                               liger-kernel is installed, else chunked
    train.liger_kernels        Liger's RMSNorm and SwiGLU kernels       refused (Triton kernels: GPU only)
    train.pad_to_multiple_of   rows padded to a multiple (few shapes    rows padded to the batch's longest
                               to compile)                              (nothing compiles on a CPU)

Flex attention has no backward on a CPU (NotImplementedError), which is why the CPU keeps the dense mask; the CPU
column is the model's own path throughout, so a CPU run trains as plain transformers would. The loss paths
are equal to the plain one (tests/train/test_loss.py on CPU, tests/gpu/test_loss_gpu.py on a GPU), and packed
flex attention equals separate samples (tests/gpu/test_packing_gpu.py).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import torch

from glmtune.settings import TrainSettings
from glmtune.train.method_registry import get_method

log = logging.getLogger(__name__)

ATTENTION = ("auto", "sdpa", "eager", "flex_attention")
LOSSES = ("auto", "plain", "chunked", "liger")


@dataclass(frozen=True)
class SpeedPath:
    """What one training run uses: attn_implementation (None: the model's own), loss, Liger kernels, pad multiple."""

    attention: str | None
    loss: str
    liger_kernels: bool
    pad_multiple: int


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def speed_path(settings: TrainSettings, device: str | None = None) -> SpeedPath:
    """The table above for `settings` on `device` (default: cuda when visible). Raises for a choice the device
    cannot run (flex attention or a Liger kernel on a CPU, liger without liger-kernel installed)."""
    cuda = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type == "cuda"
    attention: str | None = settings.attention
    if attention == "auto":
        attention = ("flex_attention" if settings.packing else "sdpa") if cuda else None
    elif attention == "flex_attention" and not cuda:
        raise ValueError("train.attention: flex_attention needs a CUDA GPU (it has no backward on a CPU); use auto")
    loss = settings.loss
    if loss == "auto":
        loss = ("liger" if liger_installed() else "chunked") if cuda else "plain"
    if (loss == "liger" or settings.liger_kernels) and not (cuda and liger_installed()):
        raise ValueError("train.loss: liger and train.liger_kernels need a CUDA GPU and liger-kernel installed "
                         "(pip install -c constraints.txt -e '.[liger]'); use train.loss: auto / chunked and liger_kernels: false")
    if loss != "plain" and get_method(settings.method).kv_prefix:
        loss = "plain"  # the prefix reaches the model as its KV cache: the loss takes the model's own path
    return SpeedPath(attention, loss, settings.liger_kernels, settings.pad_to_multiple_of if cuda else 1)


def set_attention(model: Any, attention: str | None) -> None:
    """Switch the (possibly PEFT-wrapped) model's attention implementation; None keeps the model's own."""
    if attention is None:
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(attention)
    log.info("attention: %s", attention)


def apply_liger_kernels(model: Any) -> int:
    """Liger's Triton RMSNorm and fused SwiGLU in place of every GLM RMSNorm / MLP forward; returns how many were
    replaced. (Liger's RoPE is for the usual half-split rotary; GLM rotates interleaved pairs of half the head, so
    its RoPE stays.)"""
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    from liger_kernel.ops.swiglu import LigerFusedGateUpSiLUMulFunction

    def norm_forward(module: Any) -> Any:
        return lambda x: LigerRMSNormFunction.apply(x, module.weight, module.variance_epsilon, 0.0, "llama", False)

    def mlp_forward(module: Any) -> Any:
        return lambda x: module.down_proj(LigerFusedGateUpSiLUMulFunction.apply(module.gate_up_proj(x)))

    replaced = 0
    for module in model.modules():
        kind = type(module).__name__
        if kind.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
            module.forward = norm_forward(module)
            replaced += 1
        elif kind.endswith("MLP") and hasattr(module, "gate_up_proj") and module.config.hidden_act in ("silu", "swish"):
            module.forward = mlp_forward(module)
            replaced += 1
    log.info("liger kernels: %d modules", replaced)
    return replaced
