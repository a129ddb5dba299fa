"""On a GPU, packed rows through flex attention (the GPU default for packing) compute what separate samples do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM

from glmtune.train.attention import set_attention
from glmtune.train.collate import PadCollator
from glmtune.train.packing import PackedCollator, pack_dataset

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_flex_attention_packed_row_equals_separate_samples_with_gradients(small_run: dict[str, Path]) -> None:
    model = AutoModelForCausalLM.from_pretrained(small_run["model"], dtype=torch.float32).cuda()
    samples = load_from_disk(str(small_run["tokenized"] / "train")).select(range(6))
    separate_sum, count = 0.0, 0
    for sample in samples:
        batch = {k: v.cuda() for k, v in PadCollator(0)([sample]).items()}
        n = int((batch["labels"][0, 1:] != -100).sum())
        separate_sum = separate_sum + model(**batch).loss * n
        count += n
        (model(**batch).loss * n).backward()
    want = model.lm_head.weight.grad.clone() / count
    model.zero_grad()
    set_attention(model, "flex_attention")
    batch = PackedCollator(0, 64)([pack_dataset(samples, 1024)[0]])
    assert batch["input_ids"].shape[1] % 64 == 0
    loss = model(**{k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}).loss
    loss.backward()
    assert loss.item() == pytest.approx(separate_sum.item() / count, abs=1e-4)
    assert torch.allclose(model.lm_head.weight.grad, want, atol=1e-5)
