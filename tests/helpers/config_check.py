"""Plain validated configs for the pre-job checks (glmtune.config_checks), as config.smk has them, and the one line a
bad config fails with."""

from __future__ import annotations

from typing import Any

import pytest

from glmtune.config_checks import ConfigCheckError, check_config
from glmtune.experiments import run_settings
from helpers.settings import dataset_section, schema, with_defaults


def validated(datasets: dict[str, dict[str, Any]] | None = None, **sections: Any) -> dict[str, Any]:
    """A config as config.smk has it after validation: the schema's defaults under every dataset and section."""
    datasets = datasets or {"d": {"source": "demo", "format": "advertisegen", "files": {"all": "train.json"}}}
    config = with_defaults(schema(), {"model": {"name": "m", "source": "tiny"}, **sections})
    config["datasets"] = {name: dataset_section(**entry) for name, entry in datasets.items()}
    return config


def check(config: dict[str, Any], gpu_from_scheduler: bool = False) -> None:
    check_config(config, run_settings(config, schema()), gpu_from_scheduler=gpu_from_scheduler)


def fails(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigCheckError) as err:
        check(config)
    return str(err.value)
