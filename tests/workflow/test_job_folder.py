"""A job in a folder of its own (`-s <checkout>/workflow/Snakefile`): its results, logs and relative paths are that
folder's, so two jobs (another config, other data) live side by side without re-running each other's work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from glmtune.data.synthetic import write_advertisegen
from test_workflow import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.workflow


def test_a_job_of_its_own_runs_in_its_folder_and_the_default_job_plans_from_any_folder(tmp_path: Path) -> None:
    checkout = copy_workflow(tmp_path / "glmtune")
    job = tmp_path / "my job"
    write_advertisegen(job / "data", 40, 6, 3)
    (job / "my.yaml").write_text(yaml.safe_dump({
        "datasets": {"mine": {"source": "path", "format": "advertisegen",
                              "files": {"train": "data/train.json", "test": "data/dev.json"}}},  # read from the job's folder
        "model": {"name": "tiny", "source": "tiny"},
        "train": {"max_steps": 3}, "evaluate": {"max_samples": 4, "max_new_tokens": 4}}), encoding="utf-8")
    where = ("-s", str(checkout / "workflow/Snakefile"), "--workflow-profile", str(checkout / "profiles/default"))
    snakemake(job, *where, "results/runs/main/adapter", "--configfile", "my.yaml")  # converted, trained: enough
    assert (job / "results/runs/main/adapter/adapter_model.safetensors").is_file()
    assert (job / "logs/runs/main/train.log").is_file() and (job / "results/converted/mine/train.jsonl").is_file()
    assert not (checkout / "results").exists() and not (checkout / "resources").exists()
    assert planned_jobs(job, "results/runs/main/adapter", *where, "--configfile", "my.yaml") == []
    other = tmp_path / "other"
    other.mkdir()
    jobs = planned_jobs(other, "results/merged_model", *where)  # the checkout's embedded default job
    assert "build_tiny_model" in jobs and "fetch_dataset[dataset=synthetic_adgen]" in jobs and len(jobs) == 13
