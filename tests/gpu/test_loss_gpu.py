"""On a GPU, Liger's fused linear cross-entropy and the chunked loss equal the model's own, value and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from glmtune.train.attention import apply_liger_kernels, liger_installed
from glmtune.train.collate import PadCollator
from glmtune.train.loss import HiddenStateLoss

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def losses_and_grads(small_run: dict[str, Path], kind: str, liger_kernels: bool = False) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(small_run["model"], dtype=torch.float32).cuda()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    if liger_kernels:
        assert apply_liger_kernels(model) > 0
    samples = load_from_disk(str(small_run["tokenized"] / "train")).select(range(4))
    batch = {k: v.cuda() for k, v in PadCollator(0, 64)(list(samples)).items()}
    if kind == "plain":
        loss = model(**batch).loss
    else:
        fused = HiddenStateLoss(model, kind)
        labels = batch.pop("labels")
        loss = fused(model(**batch, logits_to_keep=1), labels)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", ["chunked", "liger"])
def test_fused_loss_equals_the_plain_one(small_run: dict[str, Path], kind: str) -> None:
    if kind == "liger" and not liger_installed():
        pytest.skip("liger-kernel is not installed")
    plain, plain_grads = losses_and_grads(small_run, "plain")
    fused, grads = losses_and_grads(small_run, kind)
    assert fused == pytest.approx(plain, abs=1e-4)
    for name, grad in plain_grads.items():
        assert torch.allclose(grads[name], grad, atol=1e-4), name


def test_liger_kernels_keep_the_loss(small_run: dict[str, Path]) -> None:
    if not liger_installed():
        pytest.skip("liger-kernel is not installed")
    plain, _ = losses_and_grads(small_run, "plain")
    fused, _ = losses_and_grads(small_run, "liger", liger_kernels=True)
    assert fused == pytest.approx(plain, abs=1e-3)
