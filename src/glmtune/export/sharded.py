"""Write a model folder shard by shard, every weight verified, holding one tensor at a time.

Each weight of the source (the base for a LoRA, the trained model for full SFT) is read alone, transformed (the
fp32 LoRA merge, or nothing), cast to `export.dtype`, checked finite, hashed and streamed into its shard. Then
every shard is read back with safetensors' own reader and each tensor must be there with its dtype, its shape,
finite values and the hash of what was computed (bitwise equal), and the names and shapes must be the base's
exactly (none lost, none extra). The caller writes into a temporary folder renamed into place afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from glmtune.export.errors import ExportCheckFailed
from glmtune.export.shards import ShardWriter, Weights, digest, iter_saved, plan_shards, write_index

log = logging.getLogger(__name__)


def require_same_names(source: Weights, base: Weights, what: str) -> None:
    """`source` holds exactly the base's tensors with the base's shapes (a full-SFT model is the base retrained)."""
    names, expected = set(source.entries), set(base.entries)
    if names != expected:
        lost, extra = sorted(expected - names), sorted(names - expected)
        raise ExportCheckFailed(f"{what} {source.folder} does not hold the base model's weights: "
                                f"{len(lost)} missing (first {lost[:1]}), {len(extra)} extra (first {extra[:1]}); nothing was written")
    for name in base.entries:
        if source.entries[name].shape != base.entries[name].shape:
            raise ExportCheckFailed(f"{what} {source.folder}: {name} is {source.entries[name].shape}, the base's is "
                                    f"{base.entries[name].shape}; nothing was written")


def cast_exactly(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The cast the whole-model export made: through fp32 (the model was loaded in fp32), then to `dtype`."""
    if tensor.dtype == dtype or not tensor.is_floating_point():
        return tensor
    return tensor.to(torch.float32).to(dtype)


def write_shards(source: Weights, base: Weights, folder: Path, dtype: torch.dtype, max_bytes: int,
                 transform: Callable[[str, torch.Tensor], torch.Tensor], what: str) -> dict[str, str]:
    """Write every weight of `source` (transform(name, stored tensor) -> the tensor to save, any dtype) cast to
    `dtype` into safetensors shards of at most max_bytes, then verify them (verify_shards). Returns name -> sha256."""
    require_same_names(source, base, what)
    names = base.names()
    plan = plan_shards(names, source.entries, dtype, max_bytes)
    digests: dict[str, str] = {}
    for file, members in plan.items():
        writer = ShardWriter(folder / file, {name: (dtype if source.entries[name].dtype.is_floating_point
                                                    else source.entries[name].dtype, source.entries[name].shape)
                                             for name in members})
        try:
            for name in members:
                tensor = cast_exactly(transform(name, source.get(name)), dtype)
                _require_finite(tensor, f"{what}: weight {name} in {dtype} (float16 overflows: use bfloat16 or float32)")
                digests[name] = digest(tensor)
                writer.add(name, tensor)
                del tensor
        finally:
            writer.handle.close()
        writer.close()
        log.info("wrote %s (%d tensors)", file, len(members))
    total = sum(source.entries[name].numel * torch.empty((), dtype=dtype).element_size() for name in names)
    write_index(folder, plan, total)
    verify_shards(folder, base, dtype, digests)
    return digests


def verify_shards(folder: Path, base: Weights, dtype: torch.dtype, digests: dict[str, str]) -> None:
    """The saved folder, read back by safetensors, holds each base weight once, in `dtype`, with the base's shape,
    finite, and bitwise the tensor computed (its sha256)."""
    saved = Weights(folder)  # reads the index and every header; refuses a tensor in two shards
    missing, extra = sorted(set(base.entries) - set(saved.entries)), sorted(set(saved.entries) - set(base.entries))
    if missing or extra:
        raise ExportCheckFailed(f"the saved folder lost {missing[:3]} or gained {extra[:3]} of the base's weights; "
                                f"nothing was written")
    for file in dict.fromkeys(entry.file for entry in saved.entries.values()):
        for name, tensor in iter_saved(folder, file):
            expected_dtype = dtype if base.entries[name].dtype.is_floating_point else base.entries[name].dtype
            if tensor.dtype != expected_dtype or tuple(tensor.shape) != base.entries[name].shape:
                raise ExportCheckFailed(f"the saved {file}: {name} is {tensor.dtype} {tuple(tensor.shape)}, not "
                                        f"{expected_dtype} {base.entries[name].shape}; nothing was written")
            _require_finite(tensor, f"the saved {file}: weight {name}")
            if digest(tensor) != digests[name]:
                raise ExportCheckFailed(f"the saved {file}: {name} is not bitwise the merged weight cast to {dtype}; "
                                        f"nothing was written")
    log.info("verified %d weights: the base's names and shapes, finite, bitwise as computed", len(digests))


FINITE_CHUNK = 1 << 24  # elements checked at once: isfinite makes temporaries several times a chunk's size


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or inf, checked a chunk at a time (on a whole 151552 x 4096 head the temporaries would be GBs)."""
    if not tensor.is_floating_point():
        return True
    flat = tensor.reshape(-1)
    return all(bool(torch.isfinite(flat[start:start + FINITE_CHUNK]).all()) for start in range(0, flat.numel(), FINITE_CHUNK))


def _require_finite(tensor: torch.Tensor, what: str) -> None:
    if not all_finite(tensor):
        raise ExportCheckFailed(f"{what} holds NaN or inf; nothing was written")
