"""train.method: qlora in the workflow: refused before any job on a machine without a CUDA GPU, unless the train job
gets its GPUs from a scheduler; without bitsandbytes the refusal names the install command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from test_workflow import copy_workflow, edit_config, planned_jobs, snakemake

pytestmark = pytest.mark.workflow


def qlora_workflow(tmp_path: Path) -> Path:
    workdir = copy_workflow(tmp_path)
    edit_config(workdir, lambda c: c["train"].update(method="qlora"))
    return workdir


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_qlora_without_a_gpu_stops_before_any_job(tmp_path: Path) -> None:
    workdir = qlora_workflow(tmp_path)
    result = snakemake(workdir, "-n", "results/merged_model", check=False)
    assert result.returncode != 0
    assert "train.method: qlora needs a CUDA GPU (bitsandbytes 4-bit)" in result.stdout + result.stderr
    assert len(result.stderr.splitlines()) < 12
    assert not (workdir / "results").exists()


def test_qlora_with_the_train_job_given_gpus_needs_only_bitsandbytes_here(tmp_path: Path) -> None:
    # As on a cluster: --set-resources train:gpu=1 (profiles/slurm sets it) gets the job a GPU node.
    workdir = qlora_workflow(tmp_path)
    args = ("results/merged_model", "--set-resources", "train:gpu=1")
    if importlib.util.find_spec("bitsandbytes") is None:
        result = snakemake(workdir, "-n", *args, check=False)
        assert result.returncode != 0
        assert 'needs bitsandbytes, which is not installed: pip install -e ".[qlora]"' in result.stdout + result.stderr
    else:
        assert "train[run=main]" in planned_jobs(workdir, *args)


def test_set_resources_for_train_warns_that_a_full_sft_run_trains_in_train_full(tmp_path: Path) -> None:
    """--set-resources names rules: `train:gpu=2` left a full-SFT run (rule train_full) on its own resources, without
    a word, while the config's resources.train reaches it."""
    workdir = copy_workflow(tmp_path)
    edit_config(workdir, lambda c: c.update(runs={"full": {"train": {"method": "full"}}}))
    result = snakemake(workdir, "-n", "results/eval/metrics.md", "--set-resources", "train:gpu=2")
    assert ("--set-resources names rule train, which does not run the full-SFT training of full: that is rule "
            "train_full, which keeps its own resources; give it them too: --set-resources train_full:gpu=2") in result.stdout + result.stderr
    quiet = snakemake(workdir, "-n", "results/eval/metrics.md", "--set-resources", "train:gpu=2", "train_full:gpu=2")
    assert "does not run the full-SFT training" not in quiet.stdout + quiet.stderr


def test_gpu_only_speed_choices_pass_planning_where_the_config_gives_the_train_job_gpus(tmp_path: Path) -> None:
    """The README's SLURM command plans on a login node without a GPU, the train job's GPUs given by the config's
    resources.train.gpu (profiles/slurm/resources.yaml): flex attention was refused there."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    workdir = copy_workflow(tmp_path)
    edit_config(workdir, lambda c: c["train"].update(attention="flex_attention"))
    refused = snakemake(workdir, "-n", "results/merged_model", check=False)
    assert refused.returncode != 0 and "train.attention: flex_attention needs a CUDA GPU" in refused.stdout + refused.stderr
    edit_config(workdir, lambda c: c.update(resources={"train": {"gpu": 1}}))
    assert "train[run=main]" in planned_jobs(workdir, "results/merged_model")
