"""Merge a LoRA adapter into its base model and save a plain transformers folder, verified.

The check is split so that its tolerance follows from the precision, not from the machine:

1. the merge, in fp32: the base is loaded in fp32, the adapter model's logits on a few test prompts are taken, the
   adapter is merged in place and the merged logits must match within `export.tolerance` (fp32 rounding of two
   orders of the same sums: ~1e-6 on the tiny model; bf16 would give ~0.1, and differently on each CPU);
2. the cast: the merged weights are cast in place to `export.dtype`, and the saved folder, reloaded, must hold
   exactly those tensors (a cast is a cast: bitwise equal, no tolerance);
3. nothing non-finite: adapter weights, logits, merged weights and cast weights (fp16 overflows to inf) are checked.

Memory: the model is held once in fp32 (4 bytes a parameter: ~38 GB for GLM-4-9B), merged and cast in place one
tensor at a time, then reloaded once in the export dtype for step 2 (~19 GB in bf16); the peak is the fp32 model.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from glmtune.finite import first_nonfinite, nonfinite_in_file
from glmtune.io import atomic_path, read_jsonl
from glmtune.data.templates import encode_prompt, get_template, split_for_generation
from glmtune.model.loading import load_adapter, load_generation_config, load_model, load_tokenizer
from glmtune.model.tokenizer_files import save_tokenizer
from glmtune.settings import ExportSettings, ModelSettings

log = logging.getLogger(__name__)


class ExportCheckFailed(RuntimeError):
    """The merged model does not reproduce the adapter model's logits, holds NaN/inf, or was not saved as it is."""


class CannotMerge(ValueError):
    """The trained artifact has nothing that can be merged into the weights."""


def trained_kind(trained_dir: str | Path) -> str:
    """"lora", "prefix" (P-Tuning v2) or "full" for a training output folder."""
    config = Path(trained_dir) / "adapter_config.json"
    if not config.is_file():
        return "full"
    peft_type = json.loads(config.read_text(encoding="utf-8")).get("peft_type", "")
    return "prefix" if peft_type == "PREFIX_TUNING" else "lora"


def export_model(trained_dir: str | Path, base_dir: str | Path, out_dir: str | Path, test_path: str | Path,
                 settings: ExportSettings, model: ModelSettings, extra_files: dict[str, str | Path] | None = None) -> None:
    """The export stage: merge a LoRA, re-save a fully fine-tuned model, refuse P-Tuning v2 with the reason.

    `model.trust_remote_code`: the model runs its folder's own modeling code, and the saved folder keeps that code
    (*.py, config auto_map) so it loads again with trust_remote_code. `extra_files`: name -> file copied in.
    """
    kind = trained_kind(trained_dir)
    if kind == "prefix":
        raise CannotMerge(
            f"{trained_dir} is a P-Tuning v2 (prefix tuning) adapter: its learned prefixes are extra attention inputs, "
            f"not weight deltas, so there is nothing to merge and results/merged_model is not made. Use the adapter "
            f"as it is: `glmtune infer {trained_dir} --prompt ...` (it loads the base through adapter_config.json)."
        )
    if kind == "lora":
        merge_adapter(trained_dir, base_dir, out_dir, test_path, settings, model, extra_files)
        return
    remote = model.trust_remote_code
    full = load_model(trained_dir, dtype=settings.dtype, trust_remote_code=remote)
    _require_finite_weights(full, f"the trained model {trained_dir} loaded in {settings.dtype}")
    tokenizer = load_tokenizer(trained_dir, trust_remote_code=remote)
    _save_checked(full, tokenizer, out_dir, base_dir, extra_files, settings.export_size, remote)


def sample_inputs(test_path: str | Path, tokenizer: Any, template_name: str, count: int = 4) -> list[list[int]]:
    """A few real prompts from the test split to compare logits on."""
    template = get_template(template_name)
    rows = [row for _, row in zip(range(count), read_jsonl(test_path))]
    return [encode_prompt(tokenizer, template, split_for_generation(row["conversations"])[0]) for row in rows]


def merge_adapter(
    adapter_dir: str | Path, base_dir: str | Path, out_dir: str | Path, test_path: str | Path, settings: ExportSettings,
    model: ModelSettings, extra_files: dict[str, str | Path] | None = None,
) -> float:
    """merge_and_unload the adapter into the base in fp32, check logits on test prompts, cast, save to out_dir.

    `settings.tolerance` bounds the fp32 merged-vs-adapter logit difference (see the module docstring);
    `settings.dtype` is the precision saved (bfloat16/float16 halve the folder); the safetensors are sharded at
    `settings.export_size` GB (LLaMA-Factory's export_size). The folder is written beside out_dir and renamed into
    place only after every check passes. Returns the largest logit difference.
    """
    tolerance, dtype, trust_remote_code = settings.tolerance, settings.dtype, model.trust_remote_code
    _require_finite_adapter(Path(adapter_dir))
    base = load_model(base_dir, dtype="float32", trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(adapter_dir, trust_remote_code=trust_remote_code)
    adapter_model = load_adapter(base, adapter_dir).eval()
    inputs = sample_inputs(test_path, tokenizer, model.template)
    reference = _logits(adapter_model, inputs, "the adapter model")
    merged = adapter_model.merge_and_unload().eval()
    worst = max(((got - ref).abs().max().item() for got, ref in zip(_logits(merged, inputs, "the merged model"), reference)),
                default=0.0)
    if not worst <= tolerance:  # written so that a NaN fails too
        raise ExportCheckFailed(f"merged logits differ from the adapter model's by {worst:.3g} (> {tolerance}, both in fp32); "
                                f"nothing was written")
    log.info("merged model matches the adapter model in fp32: max |logit difference| %.3g on %d prompts", worst, len(inputs))
    _require_finite_weights(merged, "the merged model")
    merged.to(getattr(torch, dtype))  # in place, tensor by tensor: the saved weights are these roundings, checked below
    _require_finite_weights(merged, f"the merged model cast to {dtype} (use bfloat16 or float32: float16 overflows)")
    _save_checked(merged, tokenizer, out_dir, base_dir, extra_files, settings.export_size, trust_remote_code)
    return worst


def _logits(model: Any, inputs: list[list[int]], what: str) -> list[torch.Tensor]:
    with torch.inference_mode():
        logits = [model(torch.tensor([ids])).logits.clone() for ids in inputs]
    for number, values in enumerate(logits):
        if not bool(torch.isfinite(values).all()):
            raise ExportCheckFailed(f"{what} gives NaN or inf logits on test prompt {number}; nothing was written")
    return logits


def _require_finite_adapter(adapter_dir: Path) -> None:
    for path in sorted(adapter_dir.glob("*.safetensors")):
        bad = nonfinite_in_file(path)
        if bad:
            raise ExportCheckFailed(f"{path}: tensor {bad} holds NaN or inf (training diverged, or the file is "
                                    f"corrupt); nothing was written. Train again.")


def _require_finite_weights(model: Any, what: str) -> None:
    bad = first_nonfinite(model.state_dict().items())
    if bad:
        raise ExportCheckFailed(f"{what}: weight {bad} holds NaN or inf; nothing was written")


def _require_saved_as_is(model: Any, folder: Path, trust_remote_code: bool) -> None:
    """The folder, reloaded, holds bitwise the tensors in memory (the dtype too): saving changed nothing."""
    # "saved": the dtype the folder records (transformers 4.x would otherwise load float32 and hide a wrong dtype)
    reloaded = load_model(folder, dtype="saved", trust_remote_code=trust_remote_code).state_dict()
    for name, tensor in model.state_dict().items():
        again = reloaded.get(name)
        if again is None or again.dtype != tensor.dtype or not torch.equal(again, tensor):
            raise ExportCheckFailed(f"the saved model's {name} is not the merged weight cast to {tensor.dtype} "
                                    f"({'missing' if again is None else again.dtype}); nothing was written")


def _save_checked(model: Any, tokenizer: Any, out_dir: str | Path, base_dir: str | Path,
                  extra_files: dict[str, str | Path] | None, max_shard_size_gb: float, trust_remote_code: bool) -> None:
    """Save beside out_dir, reload with plain transformers (or the remote code it carries), then rename into place."""
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, max_shard_size=int(max_shard_size_gb * 1e9))  # safetensors, bytes (not "0MB" below 1 MB)
        save_tokenizer(tokenizer, tmp)
        if model.generation_config is None:
            model.generation_config = load_generation_config(base_dir)
        model.generation_config.save_pretrained(tmp)
        for name, path in (extra_files or {}).items():
            shutil.copyfile(path, Path(tmp) / name)
        if trust_remote_code:
            from glmtune.model.remote_code import carry_remote_code

            carry_remote_code(base_dir, tmp)
        _require_saved_as_is(model, Path(tmp), trust_remote_code)
        load_tokenizer(tmp, trust_remote_code=trust_remote_code)
