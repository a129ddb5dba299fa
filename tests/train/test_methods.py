"""The methods train on the tiny model and their artifacts reload; bad combinations are refused early."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import NEEDS_BITSANDBYTES, TRAIN_SETTINGS
from helpers.settings import evaluate_settings, export_settings, model_settings, tokenize_settings, train_settings

from glmtune.evaluate.predict import evaluate_model
from glmtune.export.merge import CannotMerge, export_model
from glmtune.model.base_identity import fingerprint, fingerprint_files
from glmtune.model.loading import load_model, load_trained
from glmtune.io import read_jsonl
from glmtune.config_rules import MethodError, check_cache, check_method, lora_targets
from glmtune.train.method_registry import method_of_folder
from glmtune.settings import TrainSettings
from glmtune.train.trainer import train_model


def test_original_chatglm_names_map_to_glm_layers() -> None:
    assert lora_targets(["query_key_value"], trust_remote_code=False, family="glm4") == ["q_proj", "k_proj", "v_proj"]
    assert lora_targets(["dense_h_to_4h", "dense_4h_to_h", "dense"], trust_remote_code=False, family="glm4") == ["gate_up_proj", "down_proj", "o_proj"]
    assert lora_targets(["all"], trust_remote_code=False, family="glm4") == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"]


def test_unknown_module_is_rejected_naming_the_key() -> None:
    with pytest.raises(MethodError, match=r"train.lora.target_modules: 'qkv' matches no GLM-4 layer"):
        lora_targets(["qkv"], trust_remote_code=False, family="glm4")


def test_ptuning_with_gradient_checkpointing_is_refused_before_loading() -> None:
    with pytest.raises(MethodError, match="gradient_checkpointing cannot be combined with train.method: ptuning"):
        check_method(train_settings(method="ptuning", gradient_checkpointing=True), trust_remote_code=False, family="glm4")


@pytest.mark.parametrize(
    ("settings", "remote_code", "message"),
    [
        ({"method": "ptuning", "packing": True}, False, "train.packing cannot be combined with train.method: ptuning"),
        ({"method": "full", "packing": True}, True, "train.packing needs transformers' own GLM model"),
    ],
    ids=["packing-ptuning", "packing-remote-code"],
)
def test_packing_where_the_per_sample_mask_would_be_lost_is_refused(settings: dict, remote_code: bool, message: str) -> None:
    with pytest.raises(MethodError, match=message):
        check_method(train_settings(**settings), remote_code, family="glm4")


@pytest.mark.parametrize(
    ("method", "extra", "kind"),
    [
        ("lora", {"lora": {**TRAIN_SETTINGS["lora"], "target_modules": ["query_key_value"], "use_rslora": True}}, "lora"),
        # LLaMA-Factory's lora_target as one string: assert_trained_as checks that exactly q_proj and v_proj trained
        ("lora", {"lora": {**TRAIN_SETTINGS["lora"], "use_dora": True, "target_modules": "q_proj, v_proj"}}, "lora"),
        ("ptuning", {"ptuning": {"num_virtual_tokens": 8, "prefix_projection": True, "encoder_hidden_size": 32}}, "ptuning"),
        ("full", {"learning_rate": 1e-3, "gradient_checkpointing": True}, "full"),
    ],
    ids=["lora-qkv-rslora", "dora-targets-as-one-string", "ptuning-projection", "full-checkpointing"],
)
def test_each_method_lowers_the_loss_and_its_artifact_reloads(small_run: dict[str, Path], tmp_path: Path, method: str,
                                                              extra: dict, kind: str) -> None:
    settings = train_settings(**{**TRAIN_SETTINGS, "method": method, "max_steps": 20, "save_steps": 20, **extra})
    tok = small_run["tokenized"]
    summary = train_model(tok / "train", tok / "validation", small_run["model"], tmp_path / "out", tmp_path / "log.jsonl",
                         tmp_path / "loss.png", tmp_path / "ckpt", settings, trust_remote_code=False, family="glm4")
    losses = [row["loss"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row]
    assert losses[-1] < losses[0] and summary["steps"] == 20
    assert all(row["tokens_per_second"] > 0 for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row)
    assert method_of_folder(tmp_path / "out").name == kind
    model, _ = load_trained(tmp_path / "out", trust_remote_code=False)
    assert_trained_as(model, kind, settings, small_run["model"])
    # The evaluate stage on it: batched, left-padded greedy generation (a prefix adapter's prefixes sit before the padding).
    dynamic = evaluate_settings(max_samples=6, batch_size=4, max_new_tokens=8, cache="dynamic")
    scores = evaluate_model(tmp_path / "out", small_run["test"], tmp_path / "predictions.jsonl", tmp_path / "scores.json",
                            dynamic, model_settings(template="glm4"), tokenize_settings(max_input_length=64))
    assert scores["num_samples"] == 6 and len(list(read_jsonl(tmp_path / "predictions.jsonl"))) == 6
    # The static cache gives the same answers; a prefix adapter's prefix is itself the cache, so that combination is
    # refused before the run (check_cache), and the stage stops rather than decide otherwise.
    static = evaluate_settings(max_samples=6, batch_size=4, max_new_tokens=8, cache="static")
    if kind == "ptuning":
        with pytest.raises(MethodError, match="evaluate.cache: static cannot be used with train.method: ptuning"):
            check_cache(settings, static)
        with pytest.raises(ValueError, match="static cannot hold a P-Tuning v2"):
            evaluate_model(tmp_path / "out", small_run["test"], tmp_path / "static.jsonl", tmp_path / "static.json",
                           static, model_settings(template="glm4"), tokenize_settings(max_input_length=64))
    else:
        check_cache(settings, static)
        evaluate_model(tmp_path / "out", small_run["test"], tmp_path / "static.jsonl", tmp_path / "static.json",
                       static, model_settings(template="glm4"), tokenize_settings(max_input_length=64))
        assert list(read_jsonl(tmp_path / "static.jsonl")) == list(read_jsonl(tmp_path / "predictions.jsonl"))
    if kind == "ptuning":
        with pytest.raises(CannotMerge, match="P-Tuning v2"):
            export_model(tmp_path / "out", small_run["model"], tmp_path / "merged", small_run["test"],
                         export_settings(tolerance=1e-3), model_settings(template="glm4"))
        assert not (tmp_path / "merged").exists()
    else:
        export_model(tmp_path / "out", small_run["model"], tmp_path / "merged", small_run["test"],
                     export_settings(tolerance=1e-3), model_settings(template="glm4"))
        assert json.loads((tmp_path / "merged" / "config.json").read_text())["model_type"] == "glm"
        # the merged folder says what it was made from: the trained folder, its run, the base, the dtype saved
        info = json.loads((tmp_path / "merged" / "export_info.json").read_text())
        assert info["exported_from"] == str(tmp_path / "out") and info["method"] == kind
        assert info["train_summary"] == summary and info["dtype"] == export_settings().dtype
        assert info["base"] == {"path": str(small_run["model"].resolve()),
                                "fingerprint": fingerprint(fingerprint_files(small_run["model"]))}


def assert_trained_as(model: torch.nn.Module, kind: str, settings: TrainSettings, base_dir: Path) -> None:
    """What the method trained, reloaded: LoRA / DoRA weights on exactly the target layers of every decoder layer,
    moved from their zero start, over the base's own weights; P-Tuning v2 a prefix of num_virtual_tokens keys and
    values for every layer; full SFT every weight of the base's, none of them left as it was."""
    base = dict(load_model(base_dir, dtype="auto", trust_remote_code=False).named_parameters())
    weights = dict(model.named_parameters())
    layers = model.config.num_hidden_layers
    if kind == "full":
        assert weights.keys() == base.keys()
        assert [name for name, weight in weights.items() if torch.equal(weight, base[name])] == []
        return
    config = model.peft_config["default"]
    if kind == "lora":
        targets = set(lora_targets(settings.lora.target_modules, trust_remote_code=False, family="glm4"))
        adapted = {name.split(".lora_")[0] for name in weights if ".lora_" in name}
        assert {name.rsplit(".", 1)[1] for name in adapted} == targets and len(adapted) == layers * len(targets)
        assert (config.use_rslora, config.use_dora) == (settings.lora.use_rslora, settings.lora.use_dora)
        assert len([name for name in weights if "lora_magnitude_vector" in name]) == (len(adapted) if config.use_dora else 0)
        assert all(weight.abs().max() > 0 for name, weight in weights.items() if ".lora_B." in name)
        unchanged = {name.replace(".base_layer", "").removeprefix("base_model.model."): weight
                     for name, weight in weights.items() if ".lora_" not in name}
        assert unchanged.keys() == base.keys() and all(torch.equal(unchanged[n], base[n]) for n in base)
        return
    assert kind == "ptuning" and config.num_virtual_tokens == settings.ptuning.num_virtual_tokens
    cache = model.get_prompt(batch_size=2)  # the prefix as the decoder layers get it: a key / value cache
    assert len(cache.layers) == layers
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    for layer in cache.layers:
        assert layer.keys.shape == layer.values.shape == (2, model.config.num_key_value_heads,
                                                          settings.ptuning.num_virtual_tokens, head_dim)


# QLoRA: the refusals run everywhere; the stage runs on the CPU where bitsandbytes is installed (NEEDS_BITSANDBYTES;
# the workflow itself refuses qlora without a GPU). tests/gpu/test_qlora.py runs it on a GPU.


def test_qlora_is_a_method_of_the_schema_and_loads_its_base_in_four_bit() -> None:
    from glmtune.train.method_registry import METHODS
    from glmtune.train.methods import uses_four_bit
    from helpers.settings import schema

    assert list(METHODS) == schema()["properties"]["train"]["properties"]["method"]["enum"]
    assert [method for method in METHODS if uses_four_bit(train_settings(method=method))] == ["qlora"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_qlora_without_a_gpu_is_refused_before_loading() -> None:
    with pytest.raises(MethodError, match=r"train.method: qlora needs a CUDA GPU \(bitsandbytes 4-bit\)"):
        check_method(train_settings(method="qlora"), trust_remote_code=False, family="glm4")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize(("settings", "message"), [({"attention": "flex_attention"}, "train.attention: flex_attention needs a CUDA GPU"),
                                                   ({"loss": "liger"}, "train.loss: liger and train.liger_kernels need a CUDA GPU"),
                                                   ({"liger_kernels": True}, "train.loss: liger and train.liger_kernels need a CUDA GPU")],
                         ids=["flex-attention", "liger-loss", "liger-kernels"])
def test_gpu_only_speed_choices_without_a_gpu_are_refused_before_any_job(settings: dict, message: str) -> None:
    """As qlora: the train job would stop on them only after every data job. A cluster's train job gets its GPU."""
    with pytest.raises(MethodError, match=message + r".*--set-resources train:gpu=1"):
        check_method(train_settings(**settings), trust_remote_code=False, family="glm4")
    if "attention" in settings:  # the Liger ones also need liger-kernel installed, which this machine may lack
        check_method(train_settings(**settings), trust_remote_code=False, gpu_from_scheduler=True, family="glm4")


def test_qlora_without_bitsandbytes_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))
    # A cluster's train job gets the GPU (gpu_from_scheduler): the package is still needed in this environment.
    with pytest.raises(MethodError, match=r'needs bitsandbytes, which is not installed: pip install -e "\.\[qlora\]"'):
        check_method(train_settings(method="qlora"), trust_remote_code=False, gpu_from_scheduler=True, family="glm4")


@pytest.mark.parametrize(
    ("settings", "remote_code", "message"),
    [
        ({}, True, "train.method: qlora is not supported with model.trust_remote_code: true"),
        ({"deepspeed": "config/deepspeed/ds_zero_2.json"}, False, "train.deepspeed cannot be combined with train.method: qlora"),
        ({"precision": "fp16"}, False, "train.precision: fp16 cannot be combined with train.method: qlora"),
        ({"precision": "fp32"}, False, "train.precision: fp32 cannot be combined with train.method: qlora"),
        ({"lora": {"target_modules": ["qkv"]}}, False, "train.lora.target_modules: 'qkv' matches no GLM-4 layer"),
    ],
    ids=["remote-code", "deepspeed", "fp16", "fp32", "unknown-lora-module"],
)
def test_qlora_combinations_that_cannot_work_are_refused(monkeypatch: pytest.MonkeyPatch, settings: dict,
                                                          remote_code: bool, message: str) -> None:
    find_spec = importlib.util.find_spec  # as if bitsandbytes were installed: these refusals come whatever it is
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else find_spec(name, *a))
    with pytest.raises(MethodError, match=re.escape(message)):
        check_method(train_settings(method="qlora", **settings), remote_code, gpu_from_scheduler=True, family="glm4")


@NEEDS_BITSANDBYTES
def test_qlora_base_is_nf4_with_double_quantisation_and_only_lora_trains(small_run: dict[str, Path]) -> None:
    import torch
    from bitsandbytes.nn import Linear4bit

    from glmtune.model.loading import load_model
    from glmtune.train.methods import apply_method

    model = load_model(small_run["model"], dtype="auto", trust_remote_code=False, device="cpu", four_bit=True)
    four_bit = [module for module in model.modules() if isinstance(module, Linear4bit)]
    assert len(four_bit) == 2 * 6  # every linear layer of both blocks; the output layer stays a plain layer
    state = four_bit[0].weight.quant_state
    assert (state.quant_type, state.nested, four_bit[0].compute_dtype) == ("nf4", True, torch.bfloat16)
    settings = train_settings(**{**TRAIN_SETTINGS, "method": "qlora"})
    wrapped = apply_method(model, settings, trust_remote_code=False, family="glm4")
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert len(trainable) == 2 * 2 * 6  # A and B of every linear layer of both blocks
    assert wrapped.get_input_embeddings().weight.dtype == torch.bfloat16  # kept bf16 (prepare_four_bit)
    assert wrapped.get_output_embeddings().weight.dtype == torch.float32  # fp32 logits, as peft prepares it


@NEEDS_BITSANDBYTES
def test_qlora_trains_evaluates_on_the_bf16_base_and_merges_into_it(small_run: dict[str, Path], tmp_path: Path) -> None:
    settings = train_settings(**{**TRAIN_SETTINGS, "method": "qlora", "max_steps": 20, "save_steps": 20})
    tok = small_run["tokenized"]
    summary = train_model(tok / "train", tok / "validation", small_run["model"], tmp_path / "out", tmp_path / "log.jsonl",
                          tmp_path / "loss.png", tmp_path / "ckpt", settings, trust_remote_code=False, family="glm4")
    losses = [row["loss"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row]
    assert losses[-1] < losses[0] and summary["steps"] == 20
    assert method_of_folder(tmp_path / "out").name == "lora"  # qlora writes the same LoRA adapter
    scores = evaluate_model(tmp_path / "out", small_run["test"], tmp_path / "predictions.jsonl", tmp_path / "scores.json",
                            evaluate_settings(max_samples=6, batch_size=4, max_new_tokens=8), model_settings(template="glm4"), tokenize_settings(max_input_length=64))
    assert scores["num_samples"] == 6
    export_model(tmp_path / "out", small_run["model"], tmp_path / "merged", small_run["test"],
                 export_settings(tolerance=1e-3), model_settings(template="glm4"))
    merged = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert merged["model_type"] == "glm" and "quantization_config" not in merged  # a plain, unquantised model
