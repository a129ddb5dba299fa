"""Typed stage settings for tests: the schema's defaults (read from workflow/schemas/config.schema.yaml, the only
place defaults live) with a test's overrides, as the workflow's validated config would hand them to a stage."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from glmtune.config_layers import fill_defaults as with_defaults
from glmtune.data.split import Part
from glmtune.data_settings import CleanSettings, ConvertSettings, FetchSettings, SplitSettings
from glmtune.settings import (EvaluateSettings, ExportSettings, ModelSettings, TinySettings, TokenizeSettings, TrainSettings,
                              stage_section)

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


def section(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """A config section as validated: the overrides and the schema's defaults for everything else."""
    return with_defaults(schema()["properties"][name], overrides)


def train_settings(**overrides: Any) -> TrainSettings:
    return TrainSettings.from_config(section("train", overrides))


def evaluate_settings(**overrides: Any) -> EvaluateSettings:
    return EvaluateSettings.from_config(section("evaluate", overrides))


def tokenize_settings(**overrides: Any) -> TokenizeSettings:
    return TokenizeSettings.from_config(section("tokenize", overrides))


def export_settings(**overrides: Any) -> ExportSettings:
    return ExportSettings.from_config(stage_section({"export": section("export", overrides)}, "export"))


def tiny_settings(**overrides: Any) -> TinySettings:
    return TinySettings.from_config(with_defaults(schema()["properties"]["model"]["properties"]["tiny"], overrides))


def model_settings(**overrides: Any) -> ModelSettings:
    """template and trust_remote_code of the model section (its schema defaults: glm4, false)."""
    model = section("model", overrides)
    return ModelSettings.from_config({key: model[key] for key in ("template", "trust_remote_code")})


def dataset_section(**overrides: Any) -> dict[str, Any]:
    """One datasets.<name> entry as validated: the overrides and the schema's defaults (clean and demo filled too)."""
    return with_defaults(schema()["properties"]["datasets"]["additionalProperties"], overrides)


def clean_settings(**overrides: Any) -> CleanSettings:
    return CleanSettings.from_config(dataset_section(clean=overrides)["clean"])


def convert_settings(**overrides: Any) -> ConvertSettings:
    """What common.smk's convert_options hands the convert stage: a dataset's convert keys (columns and tags where
    given); `clean` may be partial."""
    dataset = dataset_section(source="path", **overrides)
    keys = ("encoding", "on_invalid", "system", "dedupe", "clean", "columns", "tags", "max_reject_ratio")
    return ConvertSettings.from_config({key: dataset[key] for key in keys if key in dataset})


def fetch_settings(**overrides: Any) -> FetchSettings:
    """What fetch.smk's spec hands the fetch_dataset stage; `demo` may be partial."""
    dataset = dataset_section(**overrides)
    return FetchSettings.from_config({key: dataset.get(key) for key in ("source", "url", "sha256", "demo")})


def split_settings(**overrides: Any) -> SplitSettings:
    return SplitSettings.from_config(section("split", overrides))


def converted_part(dataset: str, split: str, path: str | Path, **overrides: Any) -> Part:
    """A converted file as common.smk's converted_parts gives it, its dataset's max_samples and sample_ratio from the
    schema unless overridden."""
    entry = dataset_section(source="path", **overrides)
    return Part.from_config({"dataset": dataset, "split": split, "path": str(path), "max_samples": entry["max_samples"],
                             "sample_ratio": entry["sample_ratio"]})
