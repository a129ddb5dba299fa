"""The default job's stages on a GPU, through the package (Snakemake does not run here): train in bf16 ->
evaluate (predictions, checked but not scored) -> export; and static-cache predictions equal dynamic ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.gpu_stages import char_overlap, default_config, differences, predict, prompts_of
from helpers.settings import evaluate_settings, export_settings, model_settings, train_settings

from glmtune.io import read_jsonl

MAX_STEPS = 200  # the default job trains 500; this is enough to learn the synthetic data's words


@pytest.fixture(scope="module")
def trained(default_job: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from glmtune.train.trainer import train_model

    config = default_config()
    root = tmp_path_factory.mktemp("stages")
    settings = train_settings(**{**config["train"], "max_steps": MAX_STEPS, "save_steps": MAX_STEPS, "eval_steps": 100})
    summary = train_model(default_job["train"], default_job["validation"], default_job["model"], root / "adapter",
                          root / "log.jsonl", root / "loss.png", root / "checkpoints", settings, trust_remote_code=False, family="glm4")
    return {"root": root, "summary": summary, "config": config, "adapter": root / "adapter"}


def test_training_runs_on_the_gpu_in_bf16_and_learns(trained: dict[str, Any]) -> None:
    summary, root = trained["summary"], trained["root"]
    losses = [row["loss"] for row in read_jsonl(root / "log.jsonl") if "loss" in row]
    assert summary["steps"] == MAX_STEPS, summary
    assert losses[-1] < 0.7 * losses[0], f"training losses: {losses}"
    assert summary["validation_loss"] < losses[0], summary
    assert summary["peak_gpu_memory_gb"] > 0, summary
    args = torch.load(next((root / "checkpoints").glob(f"*/checkpoint-{MAX_STEPS}/training_args.bin")), weights_only=False)
    assert (args.bf16, args.fp16, args.use_cpu) == (True, False, False), (args.bf16, args.fp16, args.use_cpu)


def test_evaluation_generates_in_bf16_on_the_gpu_and_beats_the_base(trained: dict[str, Any],
                                                                      default_job: dict[str, Path]) -> None:
    from glmtune.model.loading import load_trained

    config = trained["config"]
    evaluate = evaluate_settings(**config["evaluate"])
    model, tokenizer = load_trained(trained["adapter"], trust_remote_code=False)  # as the stage: default device, auto dtype
    weight = next(model.parameters())
    assert (weight.device.type, weight.dtype) == ("cuda", torch.bfloat16)
    prompts, references = prompts_of(default_job["test"], tokenizer, "glm4", config["tokenize"]["max_input_length"])
    batch = evaluate.batch_size if isinstance(evaluate.batch_size, int) else 32
    tuned = predict(model, tokenizer, "glm4", prompts, batch, evaluate.max_new_tokens)
    base_model, _ = load_trained(default_job["model"], trust_remote_code=False)
    base = predict(base_model, tokenizer, "glm4", prompts, batch, evaluate.max_new_tokens)
    empty = [i for i, text in enumerate(tuned) if not text]
    assert len(tuned) == len(prompts) > 20 and not empty, f"empty predictions at rows {empty}"
    tuned_overlap, base_overlap = char_overlap(tuned, references), char_overlap(base, references)
    print(f"character F1 with the references: trained {tuned_overlap:.3f}, base {base_overlap:.3f}; e.g. {tuned[0]!r}")
    assert tuned_overlap > base_overlap + 0.05, (tuned_overlap, base_overlap, tuned[:3], references[:3])


def test_static_cache_predictions_equal_dynamic_ones(trained: dict[str, Any], default_job: dict[str, Path]) -> None:
    # fp32: the static path (one preallocated cache, decode step compiled into CUDA graphs) must change nothing but
    # speed; in bf16 the two paths' different kernels round differently and may flip a near-tied greedy choice.
    from glmtune.model.loading import load_trained

    config = trained["config"]
    evaluate = evaluate_settings(**config["evaluate"])
    model, tokenizer = load_trained(trained["adapter"], trust_remote_code=False, dtype="float32")
    assert next(model.parameters()).device.type == "cuda"
    prompts, _ = prompts_of(default_job["test"], tokenizer, "glm4", config["tokenize"]["max_input_length"])
    dynamic = predict(model, tokenizer, "glm4", prompts, 16, evaluate.max_new_tokens, "dynamic")
    static = predict(model, tokenizer, "glm4", prompts, 16, evaluate.max_new_tokens, "static")
    assert static == dynamic, differences(dynamic, static, ("dynamic", "static"))
    assert len(set(dynamic)) > 1  # distinct answers, so rows out of order would show


def test_export_merges_the_gpu_trained_adapter_into_a_plain_model(trained: dict[str, Any],
                                                                   default_job: dict[str, Path]) -> None:
    from glmtune.export.merge import export_model
    from glmtune.model.loading import load_trained

    config, merged = trained["config"], trained["root"] / "merged"
    export_model(trained["adapter"], default_job["model"], merged, default_job["test"],
                 export_settings(**(config.get("export") or {})), model_settings())
    assert json.loads((merged / "config.json").read_text())["model_type"] == "glm"
    # The merged folder answers as the adapter on its base (both fp32 on the GPU).
    adapter_model, tokenizer = load_trained(trained["adapter"], trust_remote_code=False, dtype="float32")
    merged_model, _ = load_trained(merged, trust_remote_code=False, dtype="float32")
    prompts, _ = prompts_of(default_job["test"], tokenizer, "glm4", config["tokenize"]["max_input_length"], 16)
    with_adapter = predict(adapter_model, tokenizer, "glm4", prompts, 16, 32)
    from_merged = predict(merged_model, tokenizer, "glm4", prompts, 16, 32)
    assert from_merged == with_adapter, differences(with_adapter, from_merged, ("adapter", "merged"))
