"""Model folders for tests: both model stages in one call, as the workflow runs them (fetch_model, then
prepare_model), and a folder that only passes the config check, for tests that plan jobs without running them."""
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


def planning_model_folder(folder: str | Path) -> Path:
    """A folder the config check takes for a model (config.json and one whole safetensors file), for dry runs."""
    from safetensors.torch import save_file
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    save_file({"weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    return folder


def sharded(folder: Path, shards: int = 3) -> Path:
    """A folder sharded as save_pretrained shards it: an index and one safetensors file per shard."""
    from safetensors.torch import save_file
    import torch

    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({f"layer{i}.weight": torch.arange(64, dtype=torch.float32)}, str(folder / name))
        weight_map[f"layer{i}.weight"] = name
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder
