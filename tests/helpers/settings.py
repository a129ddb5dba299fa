"""Typed stage settings for tests: the schema's defaults (read from workflow/schemas/config.schema.yaml, the only
place defaults live) with a test's overrides, as the workflow's validated config would hand them to a stage."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from glmtune.config_layers import fill_defaults as with_defaults

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
