"""Model folders for tests: both model stages in one call, as the workflow runs them (fetch_model, then
prepare_model), and a sharded folder that only passes the config check, for dry runs and the weight-file checks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glmtune.fetch import download_model
from glmtune.model.prepare import prepare_model_folder


def fetch_model_folder(name: str, spec: dict[str, Any], out_dir: str | Path, cache_dir: str | Path) -> Path:
    """Both model stages in one call (without Snakemake): download (or take the local path), then prepare."""
    if spec["source"] == "path":
        source = Path(spec["path"])
    else:
        record = Path(cache_dir) / "downloads" / f"{name}.json"
        source = download_model(name, spec, cache_dir, record)
    return prepare_model_folder(name, spec, source, out_dir)


def sharded(folder: str | Path, shards: int = 3) -> Path:
    """A model folder as far as the config check looks (config.json, an index and one small safetensors file per
    shard, as save_pretrained shards), for dry runs and the weight-file checks; no model loads from it."""
    from safetensors.torch import save_file
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({f"layer{i}.weight": torch.arange(64, dtype=torch.float32)}, str(folder / name))
        weight_map[f"layer{i}.weight"] = name
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "tokenizer.model").write_bytes(b"")  # a tokenizer, as far as the check looks (one of any family)
    return folder
