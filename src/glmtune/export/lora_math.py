"""A LoRA adapter as per-weight deltas, merged one weight at a time exactly as PEFT's merge_and_unload does.

PEFT's Linear merge is `weight += (B @ A) * scaling` with scaling = lora_alpha / r (rsLoRA: lora_alpha / sqrt(r));
the same operations in the same order in fp32 give bitwise the same merged weight (tested against PEFT). What the
shard-by-shard export cannot reproduce per weight from the adapter's files alone is refused with the reason:
DoRA (its forward divides by the norm of the merged weight, so the streamed adapter-model check would not be
PEFT's) goes the whole-model way (glmtune.export.whole); patterns, extra trained modules, LoRA biases and Conv1D
layouts stop here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

PREFIX = "base_model.model."


class UnsupportedAdapter(ValueError):
    """An adapter the shard-by-shard merge does not reproduce exactly; the message says why."""


@dataclass(frozen=True)
class Delta:
    """One LoRA pair for the base weight `weight`: A (r x in), B (out x r), fp32, and its scaling."""

    weight: str
    lora_a: torch.Tensor
    lora_b: torch.Tensor
    scaling: float


def uses_dora(adapter_dir: str | Path) -> bool:
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    return bool(config.get("use_dora"))


def read_deltas(adapter_dir: str | Path, base_names: set[str]) -> dict[str, Delta]:
    """Base weight name -> its Delta, for every LoRA pair of the adapter (all of it is small: r x (in + out) a weight)."""
    folder = Path(adapter_dir)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    for key, why in (("rank_pattern", "per-module ranks"), ("alpha_pattern", "per-module alphas"),
                     ("modules_to_save", "fully trained extra modules"), ("use_dora", "DoRA"),
                     ("lora_bias", "trained LoRA biases"), ("fan_in_fan_out", "Conv1D-layout weights")):
        if config.get(key):
            raise UnsupportedAdapter(f"{folder}/adapter_config.json: {key} ({why}) is not merged shard by shard "
                                     f"(only plain LoRA and rsLoRA are)")
    alpha, rslora = float(config["lora_alpha"]), bool(config.get("use_rslora"))
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise UnsupportedAdapter(f"{folder}: no adapter_model.safetensors (the export reads safetensors only)")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            module, kind = _split_key(key, path)
            pairs.setdefault(module, {})[kind] = handle.get_tensor(key).to(torch.float32)
    deltas = {}
    for module, pair in pairs.items():
        weight = f"{module}.weight"
        if set(pair) != {"lora_A", "lora_B"}:
            raise UnsupportedAdapter(f"{path}: {module} has {sorted(pair)}, not one lora_A and one lora_B")
        if weight not in base_names:
            raise UnsupportedAdapter(f"{path}: {module} adapts {weight}, which the base model does not have "
                                     f"(an adapter of another model?)")
        rank = pair["lora_A"].shape[0]
        scaling = alpha / math.sqrt(rank) if rslora else alpha / rank
        deltas[weight] = Delta(weight, pair["lora_A"], pair["lora_B"], scaling)
    return deltas


def _split_key(key: str, path: Path) -> tuple[str, str]:
    """'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' -> ('model.layers.0.self_attn.q_proj', 'lora_A')."""
    parts = key.split(".")
    if not key.startswith(PREFIX) or len(parts) < 4 or parts[-1] != "weight" or parts[-2] not in ("lora_A", "lora_B"):
        raise UnsupportedAdapter(f"{path}: tensor {key} is not a LoRA A/B weight (embedding LoRA, biases and extra "
                                 f"modules are not merged shard by shard)")
    return ".".join(parts[len(PREFIX.split(".")) - 1:-2]), parts[-2]


def merged_weight(base: torch.Tensor, delta: Delta) -> torch.Tensor:
    """The fp32 merge of one weight, PEFT's operations in PEFT's order: W + (B @ A) * scaling."""
    merged = base.to(torch.float32, copy=True)
    merged += (delta.lora_b @ delta.lora_a) * delta.scaling
    return merged
