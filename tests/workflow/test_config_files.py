"""Which datasets and model a job's config files bring, planned by dry runs on a temporary copy of the workflow:
every shipped config and preset, the README's offline layout with a local model folder, a user's files merged with
each other and with --config values, a file with no datasets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from glmtune.data.synthetic import write_advertisegen

from conftest import REPO, shared_data
from helpers.model_folders import sharded
from test_workflow import copy_workflow, load_yaml, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

MAIN_CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "config").glob("*.yaml"))
PRESETS = sorted(str(p.relative_to(REPO)) for p in (REPO / "config" / "presets").glob("*.yaml"))
LAYERINGS = ([(c,) for c in MAIN_CONFIGS] + [(p,) for p in PRESETS]
             + [(c, p) for c in MAIN_CONFIGS if c != "config/config.yaml" for p in PRESETS])


def converted(workdir: Path, *args: str) -> set[tuple[str, str]]:
    """(dataset, part) of every convert job a dry run of the evaluation (after training, whatever the method) plans."""
    jobs = planned_jobs(workdir, "results/eval/metrics.md", *args)
    assert any(job.startswith(("train[", "train_full[")) for job in jobs)
    return {tuple(re.findall(r"dataset=([^,\]]+), part=(\w+)", job)[0]) for job in jobs if job.startswith("convert[")}


def files_of(datasets: dict) -> set[tuple[str, str]]:
    return {(name, part) for name, dataset in datasets.items() for part in dataset["files"]}


def skip_without_local_files(datasets: dict) -> None:
    """Configs with `source: path` data need the real files (../shared/data) to plan."""
    for dataset in datasets.values():
        for file in dataset["files"].values() if dataset["source"] == "path" else ():
            if not Path(file).is_file():
                pytest.skip(f"{file} is not available")


@pytest.mark.parametrize("configfiles", LAYERINGS, ids=[" + ".join(c) for c in LAYERINGS])
def test_every_shipped_config_converts_exactly_the_datasets_it_names(tmp_path: Path, configfiles: tuple[str, ...]) -> None:
    """A full config's datasets replace the default's (Snakemake alone would deep-merge the synthetic demo set into
    training and test); presets name no datasets and layer over whatever config comes before them."""
    assert not any({"datasets", "model"} & set(load_yaml(REPO / p)) for p in configfiles if p in PRESETS)
    named = [load_yaml(REPO / c)["datasets"] for c in configfiles if "datasets" in load_yaml(REPO / c)]
    datasets = named[-1] if named else load_yaml(REPO / "config/config.yaml")["datasets"]
    skip_without_local_files(datasets)
    workdir = copy_workflow(tmp_path)
    assert converted(workdir, "--configfile", *configfiles) == files_of(datasets)


def test_the_readme_offline_layout_uses_only_its_own_data_and_model(tmp_path: Path) -> None:
    """README "Using real data": AdvertiseGen train/dev files and a local model folder, nothing synthetic."""
    train, dev = shared_data("AdvertiseGen/train.json"), shared_data("AdvertiseGen/dev.json")
    model = sharded(tmp_path / "glm-4-9b-chat-hf", shards=1)
    workdir = copy_workflow(tmp_path / "run")
    (workdir / "offline.yaml").write_text(yaml.safe_dump({
        "datasets": {"advertisegen": {"source": "path", "format": "advertisegen", "files": {"train": str(train), "test": str(dev)}}},
        "model": {"name": "glm-4-9b-chat-hf", "source": "path", "path": str(model), "template": "glm4"},
    }))
    jobs = planned_jobs(workdir, "results/runs/main/adapter", "--configfile", "offline.yaml")
    assert {job for job in jobs if job.startswith(("convert", "fetch", "build", "prepare"))} == {
        "convert[dataset=advertisegen, part=test]", "convert[dataset=advertisegen, part=train]",
        "prepare_model[model=glm-4-9b-chat-hf]"}


def test_user_files_naming_datasets_merge_with_each_other_and_config_values_apply_last(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    write_advertisegen(workdir / "data", 20, 4, 1)
    first = {"datasets": {"a": {"source": "path", "format": "advertisegen", "files": {"all": "data/train.json"}}},
             "model": {"name": "glm4", "source": "huggingface", "repo_id": "THUDM/glm-4-9b-chat-hf"}}
    second = {"datasets": {"b": {"source": "path", "format": "advertisegen", "files": {"test": "data/dev.json"}},
                           "a": {"max_samples": 5}}}
    (workdir / "first.yaml").write_text(yaml.safe_dump(first))
    (workdir / "second.yaml").write_text(yaml.safe_dump(second))
    args = ("--configfile", "first.yaml", "second.yaml", "--config", "model={'name': 'renamed'}")
    jobs = planned_jobs(workdir, "results/runs/main/adapter", *args)
    assert {job for job in jobs if job.startswith(("convert", "fetch"))} == {
        "convert[dataset=a, part=all]", "convert[dataset=b, part=test]", "fetch_model[model=renamed]"}


def test_a_user_file_with_no_datasets_stops(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    (workdir / "none.yaml").write_text("datasets: {}\n")
    result = snakemake(workdir, "-n", "results/merged_model", "--configfile", "none.yaml", check=False)
    assert result.returncode != 0 and "config: datasets: no datasets" in result.stdout + result.stderr
