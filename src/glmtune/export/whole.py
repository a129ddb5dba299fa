"""The whole-model export: the model held in memory, for what the shard-by-shard export does not cover
(model.trust_remote_code folders, whose layers are the folder's own code; DoRA adapters) and as the reference the
memory benchmark compares with (glmtune.bench.export).

1. the merge, in fp32: the base is loaded in fp32, the adapter model's logits on a few test prompts are taken, the
   adapter is merged in place and the merged logits must match within `export.tolerance`;
2. the cast: the merged weights are cast in place to `export.dtype`, and the saved folder, reloaded, must hold
   exactly those tensors (bitwise);
3. nothing non-finite: adapter weights, logits, merged weights and cast weights (fp16 overflows to inf).

Memory: the model once in fp32 (4 bytes a parameter: ~38 GB for GLM-4-9B), then reloaded in the export dtype.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch

from glmtune.export.errors import ExportCheckFailed, check_within_tolerance
from glmtune.export.provenance import write_extra_files
from glmtune.export.prompts import logits_of, require_finite_adapter, sample_inputs
from glmtune.finite import first_nonfinite
from glmtune.io import atomic_path
from glmtune.model.loading import load_adapter, load_generation_config, load_model, load_tokenizer
from glmtune.model.tokenizer_files import save_tokenizer
from glmtune.settings import ExportSettings, ModelSettings

log = logging.getLogger(__name__)


def merge_whole(adapter_dir: str | Path, base_dir: str | Path, out_dir: str | Path, test_path: str | Path,
                settings: ExportSettings, model: ModelSettings, extra_files: dict[str, str | Path | bytes] | None = None) -> float:
    """merge_and_unload in fp32, logits checked, cast, saved and reloaded; returns the largest logit difference."""
    tolerance, dtype, trust_remote_code = settings.tolerance, settings.dtype, model.trust_remote_code
    require_finite_adapter(Path(adapter_dir))
    base = load_model(base_dir, dtype="float32", trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(adapter_dir, trust_remote_code=trust_remote_code)
    adapter_model = load_adapter(base, adapter_dir).eval()
    inputs = sample_inputs(test_path, tokenizer, model.template)
    reference = logits_of(lambda ids: adapter_model(torch.tensor([ids])).logits, inputs, "the adapter model")
    merged = adapter_model.merge_and_unload().eval()
    got = logits_of(lambda ids: merged(torch.tensor([ids])).logits, inputs, "the merged model")
    worst = max(((a - b).abs().max().item() for a, b in zip(got, reference)), default=0.0)
    check_within_tolerance(worst, tolerance, len(inputs))
    _require_finite_weights(merged, "the merged model")
    merged.to(getattr(torch, dtype))  # in place, tensor by tensor: the saved weights are these roundings, checked below
    _require_finite_weights(merged, f"the merged model cast to {dtype} (use bfloat16 or float32: float16 overflows)")
    _save_checked(merged, tokenizer, out_dir, base_dir, extra_files, settings.export_size, trust_remote_code)
    return worst


def resave_whole(trained_dir: str | Path, base_dir: str | Path, out_dir: str | Path, settings: ExportSettings,
                 model: ModelSettings, extra_files: dict[str, str | Path | bytes] | None = None) -> None:
    """A fully fine-tuned model loaded in export.dtype, checked finite, saved and reloaded."""
    remote = model.trust_remote_code
    full = load_model(trained_dir, dtype=settings.dtype, trust_remote_code=remote)
    _require_finite_weights(full, f"the trained model {trained_dir} loaded in {settings.dtype}")
    tokenizer = load_tokenizer(trained_dir, trust_remote_code=remote)
    _save_checked(full, tokenizer, out_dir, base_dir, extra_files, settings.export_size, remote)


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
                  extra_files: dict[str, str | Path | bytes] | None, max_shard_size_gb: float, trust_remote_code: bool) -> None:
    """Save beside out_dir, reload with plain transformers (or the remote code it carries), then rename into place."""
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, max_shard_size=int(max_shard_size_gb * 1e9))  # safetensors, bytes (not "0MB" below 1 MB)
        save_tokenizer(tokenizer, tmp)
        with contextlib.suppress(OSError):  # the base folder's, as merge._write_folder_files (none: the model's own)
            model.generation_config = load_generation_config(base_dir)
        model.generation_config.save_pretrained(tmp)
        write_extra_files(extra_files, Path(tmp))
        if trust_remote_code:
            from glmtune.model.remote_code import carry_remote_code

            carry_remote_code(base_dir, tmp)
        _require_saved_as_is(model, Path(tmp), trust_remote_code)
        load_tokenizer(tmp, trust_remote_code=trust_remote_code)
