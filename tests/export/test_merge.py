"""The export refuses what is not right: NaN weights or logits, a merge off in fp32, a save that is not a plain cast."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from glmtune.export.merge import ExportCheckFailed, merge_adapter
from helpers.settings import export_settings, model_settings


def test_a_half_precision_export_is_the_fp32_merge_rounded_and_its_check_is_tight(small_run: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    """The logit check runs in fp32 on every machine (bf16 logits differed by 0.14 on an AMD EPYC), and the saved
    bf16 tensors are exactly the fp32 merge rounded."""
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    worst = merge_adapter(small_run["adapter"], small_run["model"], bf16, small_run["test"],
                          export_settings(tolerance=1e-4, dtype="bfloat16"), model_settings(template="glm4"))
    assert worst < 1e-4
    merge_adapter(small_run["adapter"], small_run["model"], fp32, small_run["test"], export_settings(tolerance=1e-4), model_settings(template="glm4"))
    full, half = load_file(fp32 / "model.safetensors"), load_file(bf16 / "model.safetensors")
    assert full.keys() == half.keys()
    assert all(half[k].dtype == torch.bfloat16 and torch.equal(half[k], full[k].to(torch.bfloat16)) for k in full)


def _nan_adapter(small_run: dict[str, Path], folder: Path) -> Path:
    shutil.copytree(small_run["adapter"], folder)
    weights = load_file(folder / "adapter_model.safetensors")
    name = sorted(weights)[0]
    weights[name][0, 0] = float("nan")
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return folder


def test_a_nan_adapter_is_never_exported(small_run: dict[str, Path], tmp_path: Path) -> None:
    adapter = _nan_adapter(small_run, tmp_path / "adapter")
    out = tmp_path / "merged"
    with pytest.raises(ExportCheckFailed, match=r"adapter_model\.safetensors: tensor .* holds NaN or inf"):
        merge_adapter(adapter, small_run["model"], out, small_run["test"], export_settings(tolerance=1e3), model_settings(template="glm4"))
    assert not out.exists()


def test_nan_logits_fail_the_check_even_with_a_huge_tolerance(small_run: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN logits are refused; and `worst > tolerance` is False for a NaN worst, so the comparison itself must be
    written the other way round (checked with the finiteness check taken away)."""
    import glmtune.export.merge as export
    from glmtune.export.shards import Weights

    calls: list[int] = []

    def nan_when_merged(config, weights, weight, inputs, deltas=None):  # type: ignore[no-untyped-def]
        calls.append(1)
        return [torch.full((1, len(ids), 8), float("nan") if deltas is None else 0.0) for ids in inputs]

    monkeypatch.setattr(export, "streamed_logits", nan_when_merged)
    base = Weights(small_run["model"])
    with pytest.raises(ExportCheckFailed, match="the merged model gives NaN or inf logits on test prompt 0"):
        export.check_logits(small_run["model"], base, {}, [[1, 2, 3]], 1e3)
    monkeypatch.setattr(export, "require_finite_logits", lambda logits, what: logits)
    with pytest.raises(ExportCheckFailed, match="differ from the adapter model's by nan"):
        export.check_logits(small_run["model"], base, {}, [[1, 2, 3]], 1e3)
    assert len(calls) == 4


def test_a_shard_that_is_not_what_was_computed_is_refused(small_run: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every saved tensor is read back and must be bitwise the merged weight cast: a write that rounds one weight
    differently is caught, with the tensor named."""
    from glmtune.export.shards import ShardWriter

    real = ShardWriter.add

    def lossy(self, name, tensor):  # one weight written one step off what was computed
        real(self, name, tensor + 1 if name == "model.layers.0.self_attn.q_proj.weight" else tensor)

    monkeypatch.setattr(ShardWriter, "add", lossy)
    out = tmp_path / "merged"
    with pytest.raises(ExportCheckFailed, match=r"q_proj\.weight is not bitwise the merged weight cast to torch.bfloat16"):
        merge_adapter(small_run["adapter"], small_run["model"], out, small_run["test"],
                      export_settings(tolerance=1e-4, dtype="bfloat16"), model_settings(template="glm4"))
    assert not out.exists()


def test_a_fully_trained_model_with_nan_weights_is_never_exported(small_run: dict[str, Path], tmp_path: Path) -> None:
    from glmtune.export.merge import export_model

    trained = tmp_path / "full"
    shutil.copytree(small_run["model"], trained)  # a full-SFT output is a whole model folder
    weights = load_file(trained / "model.safetensors")
    weights[sorted(weights)[0]].view(-1)[0] = float("inf")
    save_file(weights, str(trained / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "merged"
    with pytest.raises(ExportCheckFailed, match="holds NaN or inf; nothing was written"):
        export_model(trained, small_run["model"], out, small_run["test"], export_settings(tolerance=1e-3), model_settings(template="glm4"))
    assert not out.exists()
