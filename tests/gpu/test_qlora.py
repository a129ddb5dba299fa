"""train.method: qlora on a GPU through the package: the config check passes here, the base loads in 4-bit NF4 on
the GPU, training learns, the adapter is evaluated on the bf16 base (as the evaluate stage does) and merged into
the unquantised base by the export stage (its logit check in fp32, as for LoRA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.gpu_stages import char_overlap, default_config, differences, mean_loss, predict, prompts_of
from helpers.settings import export_settings, model_settings, train_settings

from glmtune.io import read_jsonl

MAX_STEPS = 100


def qlora_settings(**overrides: Any) -> Any:
    return train_settings(**{**default_config()["train"], "method": "qlora", **overrides})


def test_the_config_check_passes_on_this_gpu() -> None:
    from glmtune.config_rules import check_method

    check_method(qlora_settings(), trust_remote_code=False, family="glm4")  # a CUDA GPU with bf16, and bitsandbytes


def test_the_base_loads_in_nf4_with_double_quantisation_on_the_gpu(default_job: dict[str, Path]) -> None:
    from bitsandbytes.nn import Linear4bit

    from glmtune.model.loading import load_model

    model = load_model(default_job["model"], dtype="auto", trust_remote_code=False, four_bit=True)
    layers = [module for module in model.modules() if isinstance(module, Linear4bit)]
    assert len(layers) == 6 * model.config.num_hidden_layers, [type(m).__name__ for m in model.modules()]
    state = layers[0].weight.quant_state
    assert (state.quant_type, state.nested, layers[0].compute_dtype) == ("nf4", True, torch.bfloat16)
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert layers[0].weight.dtype == torch.uint8  # packed 4-bit values: quantised, not merely wrapped


@pytest.fixture(scope="module")
def qlora_run(default_job: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from glmtune.train.trainer import train_model

    root = tmp_path_factory.mktemp("qlora")
    settings = qlora_settings(max_steps=MAX_STEPS, save_steps=MAX_STEPS)
    summary = train_model(default_job["train"], default_job["validation"], default_job["model"], root / "adapter",
                          root / "log.jsonl", root / "loss.png", root / "checkpoints", settings, trust_remote_code=False, family="glm4")
    return {"root": root, "summary": summary, "adapter": root / "adapter"}


def test_qlora_trains_in_bf16_and_learns(qlora_run: dict[str, Any]) -> None:
    summary, root = qlora_run["summary"], qlora_run["root"]
    losses = [row["loss"] for row in read_jsonl(root / "log.jsonl") if "loss" in row]
    assert summary["steps"] == MAX_STEPS, summary
    assert losses[-1] < 0.8 * losses[0], f"training losses: {losses}"
    assert summary["peak_gpu_memory_gb"] > 0, summary
    args = torch.load(next((root / "checkpoints").glob(f"*/checkpoint-{MAX_STEPS}/training_args.bin")), weights_only=False)
    assert (args.bf16, args.fp16) == (True, False), (args.bf16, args.fp16)
    adapter = json.loads((qlora_run["adapter"] / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == qlora_settings().lora.r, adapter


def test_the_adapter_learned_on_the_4bit_base_helps_the_bf16_base(qlora_run: dict[str, Any],
                                                                   default_job: dict[str, Path]) -> None:
    # The evaluate stage puts the adapter on the bf16 base (what export merges into); the adapter was trained on
    # the 4-bit base. It must lower the loss on the bf16 base too.
    from glmtune.model.loading import load_adapter, load_model, load_tokenizer

    tokenizer = load_tokenizer(default_job["model"], trust_remote_code=False)
    pad, validation = tokenizer.pad_token_id, default_job["validation"]
    base = load_model(default_job["model"], dtype="auto", trust_remote_code=False).to("cuda").eval()
    base_loss = mean_loss(base, validation, pad)
    on_bf16 = mean_loss(load_adapter(base, qlora_run["adapter"]).eval(), validation, pad)
    four_bit = load_model(default_job["model"], dtype="auto", trust_remote_code=False, four_bit=True).eval()
    on_four_bit = mean_loss(load_adapter(four_bit, qlora_run["adapter"]).eval(), validation, pad)
    print(f"validation loss: bf16 base {base_loss:.3f}, adapter on the bf16 base {on_bf16:.3f}, "
          f"adapter on the 4-bit base (as trained) {on_four_bit:.3f}")
    assert on_bf16 < 0.8 * base_loss, (base_loss, on_bf16, on_four_bit)


def test_qlora_evaluates_on_the_bf16_base_and_merges_into_it(qlora_run: dict[str, Any],
                                                             default_job: dict[str, Path]) -> None:
    from glmtune.export.merge import export_model
    from glmtune.model.loading import load_trained

    config = default_config()
    model, tokenizer = load_trained(qlora_run["adapter"], trust_remote_code=False)  # as the evaluate stage loads it
    assert not any(type(m).__name__ == "Linear4bit" for m in model.modules())
    assert next(model.parameters()).dtype == torch.bfloat16
    prompts, references = prompts_of(default_job["test"], tokenizer, "glm4", config["tokenize"]["max_input_length"], 32)
    tuned = predict(model, tokenizer, "glm4", prompts, 32, 48)
    base_model, _ = load_trained(default_job["model"], trust_remote_code=False)
    base = predict(base_model, tokenizer, "glm4", prompts, 32, 48)
    empty = [i for i, text in enumerate(tuned) if not text]
    assert not empty, f"empty predictions at rows {empty}"
    assert char_overlap(tuned, references) > char_overlap(base, references), (tuned[:3], references[:3])

    merged = qlora_run["root"] / "merged"
    export_model(qlora_run["adapter"], default_job["model"], merged, default_job["test"], export_settings(),
                 model_settings())
    saved = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in saved, saved  # merged into the unquantised base
    # The merged folder answers as the adapter on its base (both fp32 on the GPU).
    adapter_model, _ = load_trained(qlora_run["adapter"], trust_remote_code=False, dtype="float32")
    merged_model, _ = load_trained(merged, trust_remote_code=False, dtype="float32")
    with_adapter = predict(adapter_model, tokenizer, "glm4", prompts[:16], 16, 32)
    from_merged = predict(merged_model, tokenizer, "glm4", prompts[:16], 16, 32)
    assert from_merged == with_adapter, differences(with_adapter, from_merged, ("adapter on the base", "merged"))
