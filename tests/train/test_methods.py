"""The three methods train on the tiny model and their artifacts reload; bad combinations are refused early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TRAIN_SETTINGS
from helpers.settings import evaluate_settings, export_settings, model_settings, train_settings

from glmtune.evaluate.predict import evaluate_model
from glmtune.export.merge import CannotMerge, export_model, trained_kind
from glmtune.model.loading import load_trained
from glmtune.io import read_jsonl
from glmtune.config_rules import MethodError, check_cache, check_method, lora_targets
from glmtune.train.trainer import train_model


def test_original_chatglm_names_map_to_glm_layers() -> None:
    assert lora_targets(["query_key_value"]) == ["q_proj", "k_proj", "v_proj"]
    assert lora_targets(["dense_h_to_4h", "dense_4h_to_h", "dense"]) == ["gate_up_proj", "down_proj", "o_proj"]
    assert lora_targets(["all"]) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"]


def test_unknown_module_is_rejected_naming_the_key() -> None:
    with pytest.raises(MethodError, match=r"train.lora.target_modules: 'qkv' matches no GLM layer"):
        lora_targets(["qkv"])


def test_ptuning_with_gradient_checkpointing_is_refused_before_loading() -> None:
    with pytest.raises(MethodError, match="gradient_checkpointing cannot be combined with train.method: ptuning"):
        check_method(train_settings(method="ptuning", gradient_checkpointing=True), trust_remote_code=False)


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
        check_method(train_settings(**settings), remote_code)


@pytest.mark.parametrize(
    ("method", "extra", "kind"),
    [
        ("lora", {"lora": {**TRAIN_SETTINGS["lora"], "target_modules": ["query_key_value"], "use_rslora": True}}, "lora"),
        ("lora", {"lora": {**TRAIN_SETTINGS["lora"], "use_dora": True}}, "lora"),
        ("ptuning", {"ptuning": {"num_virtual_tokens": 8, "prefix_projection": True, "encoder_hidden_size": 32}}, "prefix"),
        ("full", {"learning_rate": 1e-3, "gradient_checkpointing": True}, "full"),
    ],
    ids=["lora-qkv-rslora", "dora", "ptuning-projection", "full-checkpointing"],
)
def test_each_method_lowers_the_loss_and_its_artifact_reloads(small_run: dict[str, Path], tmp_path: Path, method: str,
                                                              extra: dict, kind: str) -> None:
    settings = train_settings(**{**TRAIN_SETTINGS, "method": method, "max_steps": 20, "save_steps": 20, **extra})
    tok = small_run["tokenized"]
    summary = train_model(tok / "train", tok / "validation", small_run["model"], tmp_path / "out", tmp_path / "log.jsonl",
                         tmp_path / "loss.png", tmp_path / "ckpt", settings, trust_remote_code=False)
    losses = [row["loss"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row]
    assert losses[-1] < losses[0] and summary["steps"] == 20
    assert all(row["tokens_per_second"] > 0 for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row)
    assert trained_kind(tmp_path / "out") == kind
    model, _ = load_trained(tmp_path / "out", trust_remote_code=False)
    assert model is not None
    # The evaluate stage on it: batched, left-padded greedy generation (a prefix adapter's prefixes sit before the padding).
    dynamic = evaluate_settings(max_samples=6, batch_size=4, max_new_tokens=8, cache="dynamic")
    scores = evaluate_model(tmp_path / "out", small_run["test"], tmp_path / "predictions.jsonl", tmp_path / "scores.json",
                            dynamic, model_settings(template="glm4"), 64)
    assert scores["num_samples"] == 6 and len(list(read_jsonl(tmp_path / "predictions.jsonl"))) == 6
    # The static cache gives the same answers; a prefix adapter's prefix is itself the cache, so that combination is
    # refused before the run (check_cache), and the stage stops rather than decide otherwise.
    static = evaluate_settings(max_samples=6, batch_size=4, max_new_tokens=8, cache="static")
    if kind == "prefix":
        with pytest.raises(MethodError, match="evaluate.cache: static cannot be used with train.method: ptuning"):
            check_cache(settings, static)
        with pytest.raises(ValueError, match="static cannot hold a P-Tuning v2"):
            evaluate_model(tmp_path / "out", small_run["test"], tmp_path / "static.jsonl", tmp_path / "static.json",
                           static, model_settings(template="glm4"), 64)
    else:
        check_cache(settings, static)
        evaluate_model(tmp_path / "out", small_run["test"], tmp_path / "static.jsonl", tmp_path / "static.json",
                       static, model_settings(template="glm4"), 64)
        assert list(read_jsonl(tmp_path / "static.jsonl")) == list(read_jsonl(tmp_path / "predictions.jsonl"))
    if kind == "prefix":
        with pytest.raises(CannotMerge, match="P-Tuning v2"):
            export_model(tmp_path / "out", small_run["model"], tmp_path / "merged", small_run["test"],
                         export_settings(tolerance=1e-3), model_settings(template="glm4"))
        assert not (tmp_path / "merged").exists()
    else:
        export_model(tmp_path / "out", small_run["model"], tmp_path / "merged", small_run["test"],
                     export_settings(tolerance=1e-3), model_settings(template="glm4"))
        assert json.loads((tmp_path / "merged" / "config.json").read_text())["model_type"] == "glm"
