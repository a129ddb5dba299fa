"""The presets in config/presets over a job of a user's own: they set what they are for and keep the user's other
keys (lora.yaml had put back r 8 / alpha 32 on every layer over a user's r 4 on q/v, full.yaml turned the user's
gradient checkpointing off), and the job they make passes the checks before any job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from glmtune.config_layers import layer_config
from helpers.config_check import check, validated

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text(encoding="utf-8"))
USER: dict[str, Any] = {
    "datasets": {"mine": {"source": "path", "format": "advertisegen", "files": {"all": "data/train.json"}}},
    "model": {"name": "m", "source": "tiny"},
    "train": {"learning_rate": 2.0e-4, "gradient_checkpointing": True, "max_steps": 6,
              "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}, "ptuning": {"num_virtual_tokens": 16}},
    "evaluate": {"cache": "static"},
}
# What each preset is for: the only keys of a user's job it may change (hand-written from the README's presets).
SETS = {"lora": {("train", "method")}, "full": {("train", "method"), ("train", "learning_rate")},
        "ptuning": {("train", "method"), ("train", "gradient_checkpointing"), ("train", "packing"), ("evaluate", "cache")},
        "compare_methods": set()}


def leaves(tree: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        found.update(leaves(value, (*path, key)) if isinstance(value, dict) else {(*path, key): value})
    return found


@pytest.mark.parametrize("name", sorted(SETS))
def test_a_preset_keeps_the_users_own_keys(name: str) -> None:
    preset = yaml.safe_load((REPO / f"config/presets/{name}.yaml").read_text(encoding="utf-8"))
    layered = leaves(layer_config(DEMO, [USER, preset], {}, SCHEMA))
    changed = {path for path, value in leaves(USER).items() if layered[path] != value}
    assert changed <= SETS[name], f"{name}.yaml overwrites the user's {sorted(changed - SETS[name])}"
    assert ("train", "method") not in SETS[name] or layered[("train", "method")] == name


@pytest.mark.parametrize("name", ["ptuning", "compare_methods"])
def test_a_preset_over_a_job_with_settings_ptuning_refuses_passes_the_checks(name: str) -> None:
    """compare_methods' P-Tuning run stopped every job of a user with gradient checkpointing or a static cache."""
    preset = yaml.safe_load((REPO / f"config/presets/{name}.yaml").read_text(encoding="utf-8"))
    layered = layer_config(DEMO, [USER, preset], {}, SCHEMA)
    sections = {key: layered[key] for key in ("train", "evaluate", "runs", "export") if key in layered}
    check(validated(None, **sections))
