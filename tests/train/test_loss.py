"""The chunked loss equals the model's own, value and gradients, and training with it trains the same."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TRAIN_SETTINGS
from helpers.settings import train_settings
from datasets import load_from_disk
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from glmtune.io import read_jsonl
from glmtune.train.collate import PadCollator
from glmtune.train.loss import HiddenStateLoss, chunked_loss_sum
from glmtune.train.trainer import train_model


def lora_model(small_run: dict[str, Path]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(small_run["model"])
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))


def test_chunked_loss_equals_the_models_own_with_gradients(small_run: dict[str, Path]) -> None:
    model = lora_model(small_run)
    samples = load_from_disk(str(small_run["tokenized"] / "train")).select(range(5))
    batch = PadCollator(0, 64)(list(samples))
    assert batch["input_ids"].shape[1] % 64 == 0
    plain = model(**batch).loss
    plain.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    fused = HiddenStateLoss(model, "chunked")
    labels = batch.pop("labels")
    outputs = model(**batch, logits_to_keep=1)
    assert outputs.logits.shape[1] == 1  # the full-vocabulary logits were never made
    loss = fused(outputs, labels)
    loss.backward()
    assert loss.item() == pytest.approx(plain.item(), abs=1e-5)
    for name, grad in want.items():
        assert torch.allclose(dict(model.named_parameters())[name].grad, grad, atol=1e-5), name
    fused.remove()


def test_chunks_add_up_whatever_their_size() -> None:
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 9, 8), torch.randn(50, 8)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, :3] = -100
    whole, count = chunked_loss_sum(hidden, weight, labels, chunk=10_000)
    reference = torch.nn.functional.cross_entropy((hidden[:, :-1] @ weight.t()).reshape(-1, 50), labels[:, 1:].reshape(-1),
                                                  reduction="sum", ignore_index=-100)
    assert count == 2 * 8 - 2 and whole.item() == pytest.approx(reference.item(), rel=1e-6)
    assert chunked_loss_sum(hidden, weight, labels, chunk=3)[0].item() == pytest.approx(whole.item(), rel=1e-6)


def test_training_with_the_chunked_loss_logs_the_same_losses(small_run: dict[str, Path], tmp_path: Path) -> None:
    tok = small_run["tokenized"]
    losses = {}
    for kind in ("plain", "chunked"):
        out = tmp_path / kind
        settings = train_settings(**{**TRAIN_SETTINGS, "max_steps": 6, "logging_steps": 3, "save_steps": 100, "loss": kind})
        train_model(tok / "train", tok / "validation", small_run["model"], out / "adapter", out / "log.jsonl",
                    out / "loss.png", out / "ckpt", settings, trust_remote_code=False, family="glm4")
        losses[kind] = [row["loss"] for row in read_jsonl(out / "log.jsonl") if "loss" in row]
    assert len(losses["plain"]) == 2 and losses["chunked"] == pytest.approx(losses["plain"], abs=1e-4)
