"""The config contract: the schema holds every default; the typed stage settings have exactly its keys and none of
their own; README lists every key with the schema's default; config/config.yaml sets only what differs."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import REPO
from helpers.settings import schema, section, train_settings

from glmtune.settings import (EvaluateSettings, ExportSettings, LoraSettings, ModelSettings, PtuningSettings, Section,
                              SettingsError, TinySettings, TokenizeSettings, TrainSettings, WORKFLOW_KEYS, stage_section)

# typed section -> where its keys are in the schema
SECTIONS: dict[type[Section], tuple[str, ...]] = {
    TrainSettings: ("train",), LoraSettings: ("train", "lora"), PtuningSettings: ("train", "ptuning"),
    EvaluateSettings: ("evaluate",), TokenizeSettings: ("tokenize",), ExportSettings: ("export",),
    TinySettings: ("model", "tiny"),
}


def schema_node(path: tuple[str, ...]) -> dict[str, Any]:
    node = schema()
    for key in path:
        node = node["properties"][key]
    return node


@pytest.mark.parametrize("kind", list(SECTIONS), ids=lambda kind: kind.__name__)
def test_a_typed_section_has_the_schemas_keys_and_no_default_of_its_own(kind: type[Section]) -> None:
    fields = dataclasses.fields(kind)  # type: ignore[arg-type]
    path = SECTIONS[kind]
    keys = [key for key in schema_node(path)["properties"] if key not in WORKFLOW_KEYS.get(".".join(path), ())]
    assert [field.name for field in fields] == keys
    assert all(field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING for field in fields)


def test_model_settings_are_model_keys_without_defaults() -> None:
    fields = dataclasses.fields(ModelSettings)
    assert {field.name for field in fields} <= set(schema_node(("model",))["properties"])
    assert all(field.default is dataclasses.MISSING for field in fields)
    assert ModelSettings.from_params("chatglm3", {}) == ModelSettings("chatglm3", False)
    assert ModelSettings.from_params("glm4", {"trust_remote_code": True}).trust_remote_code is True


def validated_default_job() -> dict[str, Any]:
    """config/config.yaml as the workflow sees it: validated against the schema, defaults filled in."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def test_the_default_jobs_sections_round_trip_through_the_typed_settings() -> None:
    config = validated_default_job()
    for kind in (TrainSettings, EvaluateSettings, TokenizeSettings, ExportSettings):
        typed = kind.from_config(stage_section(config, kind.SECTION))
        assert typed.to_config() == stage_section(config, kind.SECTION)
    train = TrainSettings.from_config(config["train"])
    assert (train.lora.r, train.max_steps, train.batch_size) == (16, 500, 16)  # the job's own choices
    assert (train.lora.alpha, train.gradient_accumulation_steps) == (32, 1)  # the schema's
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.max_steps = 1  # type: ignore[misc]


def test_unknown_and_missing_keys_are_refused_by_name() -> None:
    given = section("train", {})
    with pytest.raises(SettingsError, match=r"^train: unknown key\(s\) train.learnig_rate \(glmtune.settings.TrainSettings "
                                            r"has no field for them: a key added to the schema needs one\); missing "
                                            r"key\(s\) train.learning_rate \(.*config.schema.yaml"):
        TrainSettings.from_config({**{k: v for k, v in given.items() if k != "learning_rate"}, "learnig_rate": 1e-4})
    with pytest.raises(SettingsError, match=r"^train.lora: missing key\(s\) train.lora.use_dora"):
        TrainSettings.from_config({**given, "lora": {k: v for k, v in given["lora"].items() if k != "use_dora"}})
    with pytest.raises(SettingsError, match=r"^evaluate: expected a mapping"):
        EvaluateSettings.from_config(None)  # type: ignore[arg-type]
    assert train_settings(lora={"r": 4}).lora.alpha == 32  # the test helper fills the schema's defaults


def test_lora_targets_given_as_one_string_are_read_as_the_list() -> None:
    """LLaMA-Factory's lora_target is one string; the typed settings, so every stage and the run id, see the list."""
    as_list = train_settings(lora={"target_modules": ["q_proj", "v_proj"]})
    for text in ("q_proj,v_proj", " q_proj , v_proj "):
        typed = train_settings(lora={"target_modules": text})
        assert typed == as_list and typed.to_config() == as_list.to_config()
    assert train_settings(lora={"target_modules": "all"}).lora.target_modules == ("all",)


def test_trackers_given_as_one_string_are_read_as_the_list() -> None:
    """The Trainer's and LLaMA-Factory's report_to is one string, `none` for no tracker."""
    assert train_settings(report_to="none").report_to == () == train_settings(report_to=[]).report_to
    assert train_settings(report_to=" none ").report_to == ()
    assert train_settings(report_to="wandb").report_to == ("wandb",)
    as_list = train_settings(report_to=["tensorboard", "wandb"])
    assert train_settings(report_to="tensorboard, wandb") == as_list


def schema_leaves(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(dotted key, its schema, required) of every key that holds a value; a dataset's keys under datasets.<name>."""
    required = set(node.get("required", []))
    for key, sub in node.get("properties", {}).items():
        here = f"{path}.{key}" if path else key
        if "properties" in sub:
            yield from schema_leaves(sub, here)
        elif key == "datasets" and not path:
            yield from schema_leaves(sub["additionalProperties"], "datasets.<name>")
        else:
            yield here, sub, key in required


def readme_defaults() -> dict[str, str]:
    """The key -> default cells of README's Configuration reference, Defaults table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("### Defaults", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", table, flags=re.M))


def test_the_readme_lists_every_schema_key_with_the_schemas_default() -> None:
    listed = readme_defaults()
    leaves = list(schema_leaves(schema()))
    assert list(listed) == [key for key, _, _ in leaves]  # every key, in the schema's order, nothing else
    for key, sub, required in leaves:
        cell = listed[key]
        if required or "default" not in sub:
            assert cell == ("required" if required else "—"), key
            continue
        assert cell.startswith("`") and cell.endswith("`"), key
        shown = yaml.safe_load(cell[1:-1])
        assert shown == sub["default"] and type(shown) is type(sub["default"]), (key, cell, sub["default"])


def test_the_default_job_sets_only_what_differs_from_the_schema() -> None:
    """config/config.yaml keeps the embedded job's own choices; a key equal to its default belongs to the schema."""
    leaves = {key: sub for key, sub, _ in schema_leaves(schema())}
    defaults = {key: sub["default"] for key, sub in leaves.items() if "default" in sub}

    def set_keys(value: Any, path: str) -> Iterator[tuple[str, Any]]:
        if path in leaves or not isinstance(value, dict):
            yield path, value
            return
        for key, inner in value.items():
            yield from set_keys(inner, "datasets.<name>" if path == "datasets" else f"{path}.{key}" if path else key)

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    same = [key for key, value in set_keys(config, "") if key in defaults and defaults[key] == value
            and type(defaults[key]) is type(value)]
    assert same == []


def test_the_rules_and_settings_import_no_torch() -> None:
    code = ("import sys, glmtune.settings, glmtune.config_rules, glmtune.launch; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
