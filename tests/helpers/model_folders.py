"""Both model stages in one call, as the workflow runs them (fetch_model, then prepare_model), for tests."""
from __future__ import annotations

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
