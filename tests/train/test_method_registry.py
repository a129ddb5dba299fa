"""The method registry: the schema's methods are its entries, and a new method is one entry that the config rules, the
train stage and the export take without any other change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TRAIN_SETTINGS
from helpers.settings import evaluate_settings, export_settings, model_settings, schema, train_settings

from glmtune.config_rules import MethodError, check_cache, check_method
from glmtune.train import method_registry
from glmtune.train.method_registry import METHODS, Method, get_method, register


def test_the_schema_offers_exactly_the_registered_methods() -> None:
    assert list(METHODS) == schema()["properties"]["train"]["properties"]["method"]["enum"]


def test_each_entry_says_what_it_writes_and_whether_it_merges() -> None:
    assert {name: (m.writes, m.mergeable, m.four_bit, m.lora_targets, m.kv_prefix) for name, m in METHODS.items()} == {
        "lora": ("adapter", True, False, True, False),
        "qlora": ("adapter", True, True, True, False),
        "ptuning": ("adapter", False, False, False, True),
        "full": ("model", True, False, False, False),
    }


def test_an_unknown_method_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(MethodError, match=r"train.method: unknown method 'dpo'; use lora, qlora, ptuning, full"):
        check_method(train_settings(method="dpo"), trust_remote_code=False, family="glm4")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (Method("lora", "LoRA again", "adapter", "LORA", mergeable=True, wrap=None), "'lora' is already registered"),
        (Method("x", "X", "model", "LORA", mergeable=True, wrap=None), "an adapter has a peft_type, a whole model none"),
        (Method("x", "X", "adapter", "IA3", mergeable=False, wrap=None), "say why it cannot be merged"),
        # trained and evaluated, it failed at the end of the job on KeyError: 'lora_alpha' (h12)
        (Method("x", "X", "adapter", "IA3", mergeable=True, wrap=None),
         "'x': the export merges LoRA adapters .* only .*, not IA3: register it mergeable=False"),
    ],
    ids=["taken-name", "model-with-peft-type", "no-reason", "mergeable-not-lora"],
)
def test_an_entry_that_would_mislead_is_refused(entry: Method, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        register(entry)
    assert METHODS["lora"].title == "LoRA" and "x" not in METHODS


def wrap_q_only(model, settings, trust_remote_code, family):  # type: ignore[no-untyped-def]
    """A made-up method: rank-2 LoRA on the query projection alone."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=2, lora_alpha=4, target_modules=["q_proj"]))


def refuse_packing(settings, trust_remote_code, gpu_from_scheduler):  # type: ignore[no-untyped-def]
    if settings.packing:
        raise MethodError("train.packing cannot be combined with train.method: q-only (made up for this test)")


def test_a_new_method_is_one_entry(monkeypatch: pytest.MonkeyPatch, small_run: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from glmtune.export.merge import export_model
    from glmtune.io import read_jsonl
    from glmtune.train.trainer import train_model

    monkeypatch.setattr(method_registry, "METHODS", dict(METHODS))  # the entry leaves with the test
    register(Method("q-only", "LoRA on q_proj", "adapter", "LORA", mergeable=True, wrap=wrap_q_only, check=refuse_packing))
    assert get_method("q-only").wrapper() is wrap_q_only
    # the config rules: its own check runs, and otherwise it is accepted (a static cache too: it feeds no prefix)
    with pytest.raises(MethodError, match="train.method: q-only"):
        check_method(train_settings(method="q-only", packing=True), trust_remote_code=False, family="glm4")
    settings = train_settings(**{**TRAIN_SETTINGS, "method": "q-only", "max_steps": 20, "save_steps": 20})
    check_method(settings, trust_remote_code=False, family="glm4")
    check_cache(settings, evaluate_settings(cache="static"))
    # the train stage wraps with the entry's function: only the query projections got an adapter
    tok = small_run["tokenized"]
    train_model(tok / "train", tok / "validation", small_run["model"], tmp_path / "out", tmp_path / "log.jsonl",
                tmp_path / "loss.png", tmp_path / "ckpt", settings, trust_remote_code=False, family="glm4")
    losses = [row["loss"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row]
    assert losses[-1] < losses[0]
    tensors = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert tensors and all(".q_proj.lora_" in name for name in tensors)
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["r"] == 2
    # the export merges it (mergeable), verified as any LoRA: the query weights changed, nothing else did
    export_model(tmp_path / "out", small_run["model"], tmp_path / "merged", small_run["test"],
                 export_settings(tolerance=1e-3), model_settings(template="glm4"))
    base = load_file(small_run["model"] / "model.safetensors")
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    changed = {name for name in base if not base[name].to(merged[name].dtype).equal(merged[name])}
    assert changed and all(name.endswith("q_proj.weight") for name in changed)


def test_the_tables_method_names_the_lora_variants() -> None:
    """A DoRA or rsLoRA run read as plain lora beside a LoRA run in the comparison."""
    from glmtune.train.method_registry import method_label

    assert method_label({"method": "lora", "lora": {"use_dora": False, "use_rslora": False}}) == "lora"
    assert method_label({"method": "lora", "lora": {"use_dora": True, "use_rslora": False}}) == "lora (DoRA)"
    assert method_label({"method": "qlora", "lora": {"use_dora": True, "use_rslora": True}}) == "qlora (rsLoRA, DoRA)"
    assert method_label({"method": "ptuning", "lora": {"use_dora": True}}) == "ptuning"  # its lora section is unread
