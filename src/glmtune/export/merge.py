"""The export stage: a LoRA merged into its base, or a fully fine-tuned model re-saved, shard by shard and verified.

The checks, none of which needs the model in memory (peak: a few tensors and one decoder layer in fp32):

1. end to end, in fp32, once every weight is written and verified (2.): the adapter model's logits on a few test
   prompts (base weights + the LoRA applied on the fly, as PEFT's forward) and the merged model's (each weight
   merged in fp32) must match within `export.tolerance`; both forwards read the model one decoder layer at a time
   (glmtune.export.streamed);
2. per weight: each base weight is merged in fp32 (glmtune.export.lora_math: PEFT's operations, bitwise its
   merge_and_unload), cast to `export.dtype`, checked finite, hashed and streamed into its shard; the shards, read
   back by safetensors, must hold bitwise those tensors, with the base's names and shapes, none lost, none extra
   (glmtune.export.sharded);
3. the adapter's own tensors are finite; the folder's tokenizer loads.

Everything is written in a temporary folder renamed into place at the end. Folders that run their own modeling
code (model.trust_remote_code) and DoRA adapters take the whole-model path (glmtune.export.whole: the model in
fp32 in memory, as before), said so in the log.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from glmtune.export.errors import CannotMerge, ExportCheckFailed, check_within_tolerance
from glmtune.export.lora_math import merged_weight, read_deltas, uses_dora
from glmtune.export.provenance import EXPORT_INFO, export_info, write_extra_files
from glmtune.export.prompts import require_finite_adapter, require_finite_logits, sample_inputs
from glmtune.export.sharded import all_finite, write_shards
from glmtune.export.shards import Weights
from glmtune.export.streamed import streamed_logits
from glmtune.export.whole import merge_whole, resave_whole
from glmtune.io import atomic_path
from glmtune.model.base_identity import check_base
from glmtune.model.loading import load_config, load_generation_config, load_tokenizer
from glmtune.model.tokenizer_files import save_tokenizer
from glmtune.settings import ExportSettings, ModelSettings
from glmtune.train.method_registry import method_of_folder

__all__ = ["CannotMerge", "ExportCheckFailed", "export_model", "merge_adapter", "sample_inputs"]

log = logging.getLogger(__name__)


def export_model(trained_dir: str | Path, base_dir: str | Path, out_dir: str | Path, test_path: str | Path,
                 settings: ExportSettings, model: ModelSettings, extra_files: dict[str, str | Path | bytes] | None = None) -> None:
    """The export stage: merge a LoRA, re-save a fully fine-tuned model, refuse P-Tuning v2 with the reason.

    `model.trust_remote_code`: the model runs its folder's own modeling code, and the saved folder keeps that code
    (*.py, config auto_map) so it loads again with trust_remote_code. `extra_files`: name -> file copied in.
    """
    method = method_of_folder(trained_dir)  # what the folder is decides the export (glmtune.train.method_registry)
    if not method.mergeable:
        raise CannotMerge(
            f"{trained_dir} is a {method.title} adapter (train.method: {method.name}): it {method.cannot_merge}, so "
            f"there is nothing to merge and results/merged_model is not made. Use the adapter as it is: "
            f"`glmtune infer {trained_dir} --prompt ...` (it loads the base through adapter_config.json)."
        )
    # what the merged model was made from, written with it (an export made of another run is told apart)
    extra_files = {**(extra_files or {}), EXPORT_INFO: export_info(trained_dir, base_dir, method.name, settings)}
    if method.writes == "adapter":
        merge_adapter(trained_dir, base_dir, out_dir, test_path, settings, model, extra_files)
        return
    if model.trust_remote_code:
        log.info("model.trust_remote_code: the trained model is re-saved whole (its layers are the folder's own code)")
        resave_whole(trained_dir, base_dir, out_dir, settings, model, extra_files)
        return
    dtype = getattr(torch, settings.dtype)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_shards(Weights(trained_dir), Weights(base_dir), tmp, dtype, _shard_bytes(settings),
                     lambda name, tensor: tensor, "the trained model")
        _write_folder_files(trained_dir, trained_dir, tmp, dtype, extra_files, generation_dir=base_dir)


def merge_adapter(
    adapter_dir: str | Path, base_dir: str | Path, out_dir: str | Path, test_path: str | Path, settings: ExportSettings,
    model: ModelSettings, extra_files: dict[str, str | Path | bytes] | None = None,
) -> float:
    """Merge the LoRA of `adapter_dir` into `base_dir` shard by shard into out_dir (see the module docstring).

    `settings.tolerance` bounds the fp32 merged-vs-adapter logit difference; `settings.dtype` is the precision
    saved; shards hold at most `settings.export_size` GB. Returns the largest logit difference.
    """
    adapter_dir, base_dir = Path(adapter_dir), Path(base_dir)
    check_base(adapter_dir, base_dir)  # the base the adapter was trained on, or a BaseModelMismatch naming both
    if model.trust_remote_code or uses_dora(adapter_dir) or _model_type(base_dir) != "glm":
        log.info("the merge runs on the whole model in memory (model.trust_remote_code, DoRA or a non-native model)")
        return merge_whole(adapter_dir, base_dir, out_dir, test_path, settings, model, extra_files)
    require_finite_adapter(adapter_dir)
    base = Weights(base_dir)
    deltas = read_deltas(adapter_dir, set(base.entries))
    tokenizer = load_tokenizer(adapter_dir, trust_remote_code=False)
    inputs = sample_inputs(test_path, tokenizer, model.template)

    def merge(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if name not in deltas:
            return tensor
        merged = merged_weight(tensor, deltas[name])
        if not all_finite(merged):
            raise ExportCheckFailed(f"the merged weight {name} holds NaN or inf in fp32; nothing was written")
        return merged

    dtype = getattr(torch, settings.dtype)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        # the weights first: a NaN or an unreadable tensor is named there; then the logits
        write_shards(base, base, tmp, dtype, _shard_bytes(settings), merge, "the merged model")
        worst = check_logits(base_dir, base, deltas, inputs, settings.tolerance)
        _write_folder_files(base_dir, adapter_dir, tmp, dtype, extra_files, generation_dir=base_dir)
    return worst


def check_logits(base_dir: Path, base: Weights, deltas: dict, inputs: list[list[int]], tolerance: float) -> float:
    """The adapter model's and the merged model's fp32 logits, each read layer by layer; their largest difference."""
    config = load_config(base_dir)

    def base_weight(name: str) -> torch.Tensor:
        return base.get(name).to(torch.float32)

    def merged(name: str) -> torch.Tensor:
        return merged_weight(base.get(name), deltas[name]) if name in deltas else base_weight(name)

    reference = require_finite_logits(streamed_logits(config, base, base_weight, inputs, deltas), "the adapter model")
    got = require_finite_logits(streamed_logits(config, base, merged, inputs), "the merged model")
    # torch's max keeps a NaN (Python's max drops it unless it comes first)
    worst = float(torch.stack([(a - b).abs().max() for a, b in zip(got, reference)]).max()) if got else 0.0
    check_within_tolerance(worst, tolerance, len(inputs))
    return worst


def _shard_bytes(settings: ExportSettings) -> int:
    return int(settings.export_size * 1e9)  # bytes, as save_pretrained's max_shard_size


def _model_type(folder: Path) -> str:
    config = folder / "config.json"
    return json.loads(config.read_text(encoding="utf-8")).get("model_type", "") if config.is_file() else ""


def _write_folder_files(model_dir: Path | str, tokenizer_dir: Path | str, tmp: Path, dtype: torch.dtype,
                        extra_files: dict[str, str | Path | bytes] | None, generation_dir: Path | str) -> None:
    """config.json (recording `dtype`), generation config and tokenizer as save_pretrained writes them; extra files.
    The generation config is the base folder's (`generation_dir`), as the export rule reads it: a full-SFT run's own
    copy is the base's at training time, and an edited one would not reach the merged model."""
    from transformers import GenerationConfig

    config = load_config(model_dir)
    config.dtype = dtype
    config.save_pretrained(tmp)
    try:
        generation = load_generation_config(generation_dir)
    except OSError:  # no generation_config.json: what from_pretrained derives from the config
        generation = GenerationConfig.from_model_config(config)
    generation.save_pretrained(tmp)
    save_tokenizer(load_tokenizer(tokenizer_dir, trust_remote_code=False), tmp)
    write_extra_files(extra_files, tmp)
    load_tokenizer(tmp, trust_remote_code=False)
