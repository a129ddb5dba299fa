"""The typed data sections (glmtune.data_settings) from the schema's defaults: every key, no default of their own."""

from __future__ import annotations

import pytest

from glmtune.data_settings import CleanSettings, ConvertSettings, DatasetSettings, FetchSettings, SplitSettings
from glmtune.settings import SettingsError
from helpers.settings import dataset_section, section


def test_a_validated_dataset_entry_becomes_typed_with_the_schema_defaults() -> None:
    entry = dataset_section(source="demo", format="advertisegen", files={"all": "train.json"})
    dataset = DatasetSettings.from_config(entry, "datasets.d")
    assert (dataset.demo.train_rows, dataset.demo.dev_rows, dataset.encoding) == (3000, 300, "utf-8")
    assert dataset.clean == CleanSettings.from_config(entry["clean"]) and dataset.clean.remove_strings == ()
    assert (dataset.url, dataset.columns, dataset.dataset_info) == (None, None, None)  # not given: no default
    assert DatasetSettings.from_config(dataset.to_config(), "datasets.d") == dataset


def test_a_key_the_schema_fills_must_be_there() -> None:
    """A section that did not come through the schema fails by name instead of running on a default."""
    entry = dataset_section(source="demo")
    del entry["demo"]["seed"]
    with pytest.raises(SettingsError, match=r"missing key\(s\) datasets\.d\.demo\.seed"):
        DatasetSettings.from_config(entry, "datasets.d")
    with pytest.raises(SettingsError, match=r"missing key\(s\) split\.seed"):
        SplitSettings.from_config({k: v for k, v in section("split", {}).items() if k != "seed"})
    with pytest.raises(SettingsError, match=r"missing key\(s\) datasets\.d\.sha256"):
        FetchSettings.from_config({"source": "url", "url": "https://x", "demo": entry["demo"] | {"seed": 0}}, "datasets.d")


def test_convert_settings_give_the_converters_only_the_renames_given() -> None:
    keys = ("encoding", "on_invalid", "system", "dedupe", "clean", "max_reject_ratio")
    entry = dataset_section(source="path", columns={"prompt": "q"})
    assert ConvertSettings.from_config({k: entry[k] for k in keys}).converter_options() == {}
    settings = ConvertSettings.from_config({k: entry[k] for k in (*keys, "columns")})
    assert settings.converter_options() == {"columns": {"prompt": "q"}}
    with pytest.raises(SettingsError, match=r"unknown key\(s\) datasets.<name>.url"):
        ConvertSettings.from_config({**{k: entry[k] for k in keys}, "url": "https://x"})
