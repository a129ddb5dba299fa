"""The shard-by-shard merge is PEFT's merge_and_unload, bitwise, weight by weight (LoRA and rsLoRA)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glmtune.export.lora_math import UnsupportedAdapter, merged_weight, read_deltas
from glmtune.export.merge import merge_adapter
from glmtune.export.shards import Weights
from helpers.settings import export_settings, model_settings


def _peft_merged(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    return {name: tensor.clone() for name, tensor in model.merge_and_unload().state_dict().items()}


def _with_config(small_run: dict[str, Path], folder: Path, **changes: object) -> Path:
    shutil.copytree(small_run["adapter"], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return folder


@pytest.mark.parametrize("rslora", [False, True])
def test_each_merged_weight_is_peft_merge_and_unload_bitwise(small_run: dict[str, Path], tmp_path: Path, rslora: bool) -> None:
    adapter = _with_config(small_run, tmp_path / "adapter", use_rslora=rslora)
    expected = _peft_merged(small_run["model"], adapter)
    base = Weights(small_run["model"])
    deltas = read_deltas(adapter, set(base.entries))
    assert len(deltas) == 6 * 2  # six target modules in each of the tiny model's two layers
    for name, delta in deltas.items():
        assert torch.equal(merged_weight(base.get(name), delta), expected[name]), name
    # the exported folder: every weight is PEFT's fp32 merge cast to bf16, touched or not
    out = tmp_path / "merged"
    merge_adapter(adapter, small_run["model"], out, small_run["test"], export_settings(tolerance=1e-4, dtype="bfloat16"),
                  model_settings(template="glm4"))
    saved = load_file(out / "model.safetensors")
    assert saved.keys() == set(base.entries) == expected.keys()
    for name, tensor in saved.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, expected[name].to(torch.bfloat16)), name


def test_rslora_scales_by_the_square_root_of_the_rank(small_run: dict[str, Path], tmp_path: Path) -> None:
    base = Weights(small_run["model"])
    plain = read_deltas(small_run["adapter"], set(base.entries))
    rs = read_deltas(_with_config(small_run, tmp_path / "rs", use_rslora=True), set(base.entries))
    name = next(iter(plain))
    assert plain[name].scaling == 16 / 8 and rs[name].scaling == pytest.approx(16 / 8 ** 0.5)


@pytest.mark.parametrize("key, value, why", [("rank_pattern", {"q_proj": 4}, "per-module ranks"),
                                             ("modules_to_save", ["lm_head"], "fully trained extra modules")])
def test_what_is_not_merged_per_weight_is_refused_with_the_reason(small_run: dict[str, Path], tmp_path: Path,
                                                                   key: str, value: object, why: str) -> None:
    adapter = _with_config(small_run, tmp_path / "adapter", **{key: value})
    with pytest.raises(UnsupportedAdapter, match=rf"adapter_config.json: {key} \({why}\)"):
        read_deltas(adapter, set(Weights(small_run["model"]).entries))


def test_an_adapter_of_another_model_is_refused(small_run: dict[str, Path]) -> None:
    names = set(Weights(small_run["model"]).entries) - {"model.layers.1.mlp.down_proj.weight"}
    with pytest.raises(UnsupportedAdapter, match=r"adapts model\.layers\.1\.mlp\.down_proj\.weight, which the base"):
        read_deltas(small_run["adapter"], names)
