"""Shard by shard: a kill leaves no folder, a corrupt or NaN shard stops with the tensor named, full SFT is re-saved
verified, every base weight is accounted for."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from glmtune.export.errors import ExportCheckFailed
from glmtune.export.merge import export_model, merge_adapter
from glmtune.export.shards import ShardWriter, UnreadableWeights, Weights
from helpers.settings import export_settings, model_settings


def _sharded_base(small_run: dict[str, Path], folder: Path) -> Path:
    from transformers import AutoModelForCausalLM

    shutil.copytree(small_run["model"], folder)
    (folder / "model.safetensors").unlink()
    AutoModelForCausalLM.from_pretrained(small_run["model"]).save_pretrained(folder, max_shard_size=60_000)
    return folder


def test_shards_are_written_as_safetensors_reads_them(tmp_path: Path) -> None:
    tensors = {"b": torch.randn(3, 5).to(torch.bfloat16), "a": torch.arange(7, dtype=torch.float32), "e": torch.zeros(0, 4)}
    writer = ShardWriter(tmp_path / "x.safetensors", {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()})
    for name, tensor in tensors.items():
        writer.add(name, tensor)
    writer.close()
    again = load_file(tmp_path / "x.safetensors")
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], v) and again[k].dtype == v.dtype for k, v in tensors.items())


def unrecorded(adapter: Path, tmp_path: Path) -> Path:
    """A copy of the adapter without its base record: these tests re-shard or damage the base on purpose, which the
    base check (tests/model/test_base_identity.py) would refuse before the shard checks under test."""
    copy = tmp_path / "adapter-unrecorded"
    shutil.copytree(adapter, copy)
    (copy / "base_model.json").unlink()
    return copy


def test_a_sharded_base_merges_into_shards_under_the_limit(small_run: dict[str, Path], tmp_path: Path) -> None:
    base = _sharded_base(small_run, tmp_path / "base")
    out = tmp_path / "merged"
    merge_adapter(unrecorded(small_run["adapter"], tmp_path), base, out, small_run["test"],
                  export_settings(tolerance=1e-4, dtype="bfloat16", export_size=0.00005), model_settings(template="glm4"))
    saved, original = Weights(out), Weights(base)
    assert len({e.file for e in saved.entries.values()}) > 2
    assert {n: e.shape for n, e in saved.entries.items()} == {n: e.shape for n, e in original.entries.items()}
    # the same weights as the single-file base gives
    single = tmp_path / "single"
    merge_adapter(small_run["adapter"], small_run["model"], single, small_run["test"],
                  export_settings(tolerance=1e-4, dtype="bfloat16"), model_settings(template="glm4"))
    whole = load_file(single / "model.safetensors")
    assert all(torch.equal(saved.get(name), whole[name]) for name in whole)


def test_a_kill_in_the_middle_of_the_shards_leaves_no_folder(small_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    script = (
        "import os, signal\n"
        "from glmtune.export.shards import ShardWriter\n"
        "import glmtune.export.merge as e\n"
        "real, count = ShardWriter.add, []\n"
        "def dying(self, name, tensor):\n"
        "    count.append(name)\n"
        "    if len(count) == 5: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real(self, name, tensor)\n"
        "ShardWriter.add = dying\n"
        "from glmtune.settings import ExportSettings, ModelSettings\n"
        f"settings = ExportSettings.from_config({export_settings(tolerance=1e-4, export_size=0.00005).to_config()!r})\n"
        f"model = ModelSettings.from_config({model_settings(template='glm4').to_config()!r})\n"
        f"e.merge_adapter({str(small_run['adapter'])!r}, {str(small_run['model'])!r}, {str(out)!r}, "
        f"{str(small_run['test'])!r}, settings, model)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr[-2000:]
    leftovers = list(tmp_path.iterdir())
    assert not out.exists() and leftovers and all(p.name.startswith(".merged.partial-") for p in leftovers)
    assert list(leftovers[0].rglob("*.safetensors"))  # it died with shards on disk
    merge_adapter(small_run["adapter"], small_run["model"], out, small_run["test"], export_settings(tolerance=1e-4),
                  model_settings(template="glm4"))
    assert list(tmp_path.iterdir()) == [out]


def test_a_truncated_shard_is_named(small_run: dict[str, Path], tmp_path: Path) -> None:
    base = _sharded_base(small_run, tmp_path / "base")
    shard = sorted(base.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    out = tmp_path / "merged"
    with pytest.raises(UnreadableWeights, match=rf"{shard.name}: not a readable safetensors file"):
        merge_adapter(unrecorded(small_run["adapter"], tmp_path), base, out, small_run["test"], export_settings(), model_settings(template="glm4"))
    assert not out.exists()


def test_a_nan_in_a_base_shard_is_named(small_run: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(small_run["model"], base)
    weights = load_file(base / "model.safetensors")
    weights["model.layers.1.mlp.gate_up_proj.weight"][3, 4] = float("nan")  # a weight the LoRA touches
    weights["model.norm.weight"][0] = float("inf")
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "merged"
    with pytest.raises(ExportCheckFailed, match=r"model\.layers\.1\.mlp\.gate_up_proj\.weight holds NaN or inf in fp32"):
        merge_adapter(unrecorded(small_run["adapter"], tmp_path), base, out, small_run["test"], export_settings(), model_settings(template="glm4"))
    assert not out.exists()


def test_a_full_sft_export_carries_the_base_folders_generation_config(small_run: dict[str, Path], tmp_path: Path) -> None:
    """The export rule reads the base's generation_config.json: edited, the export re-ran but kept the trained
    folder's copy from training time (h19); the LoRA export took the base's."""
    import json

    trained = _sharded_base(small_run, tmp_path / "full")
    base = tmp_path / "base"
    shutil.copytree(small_run["model"], base)
    edited = {**json.loads((base / "generation_config.json").read_text(encoding="utf-8")), "top_p": 0.8}
    (base / "generation_config.json").write_text(json.dumps(edited), encoding="utf-8")
    export_model(trained, base, tmp_path / "merged", small_run["test"], export_settings(), model_settings(template="glm4"))
    assert json.loads((tmp_path / "merged" / "generation_config.json").read_text(encoding="utf-8"))["top_p"] == 0.8


def test_full_sft_is_resaved_as_the_cast_of_each_weight_and_must_be_the_bases_weights(small_run: dict[str, Path],
                                                                                    tmp_path: Path) -> None:
    trained = _sharded_base(small_run, tmp_path / "full")  # a full-SFT output is a whole model folder
    out = tmp_path / "merged"
    export_model(trained, small_run["model"], out, small_run["test"], export_settings(dtype="bfloat16", export_size=0.00005),
                 model_settings(template="glm4"))
    source, saved = Weights(trained), Weights(out)
    assert saved.entries.keys() == source.entries.keys()
    assert all(torch.equal(saved.get(n), source.get(n).to(torch.bfloat16)) for n in source.entries)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16
    # a trained folder that lost a weight is not the base retrained
    weights = load_file(small_run["model"] / "model.safetensors")
    del weights["model.norm.weight"]
    lost = tmp_path / "lost"
    shutil.copytree(small_run["model"], lost)
    save_file(weights, str(lost / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ExportCheckFailed, match=r"1 missing \(first \['model\.norm\.weight'\]\)"):
        export_model(lost, small_run["model"], tmp_path / "again", small_run["test"], export_settings(), model_settings(template="glm4"))
    assert not (tmp_path / "again").exists()
