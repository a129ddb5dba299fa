"""Asking for the merged model of a P-Tuning v2 run: the reason in one WorkflowError before any job, not an
InputFunctionException with its traceback; the run's other outputs are still planned."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from test_workflow import copy_workflow, edit_config, planned_jobs, snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture
def ptuning(tmp_path: Path) -> Path:
    workdir = copy_workflow(tmp_path)
    edit_config(workdir, lambda c: c["train"].update(method="ptuning"))
    return workdir


@pytest.mark.parametrize("targets", [["results/merged_model"], ["./results/merged_model"],
                                     ["results/runs/main/merged_model"]],
                         ids=["merged-model", "dot-path", "run-merged-model"])
def test_the_merged_model_of_a_ptuning_run_is_refused_in_one_message(ptuning: Path, targets: list[str]) -> None:
    result = snakemake(ptuning, "-n", *targets, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "export of run main: train.method: ptuning (P-Tuning v2) learns prefixes" in output
    assert "InputFunctionException" not in output and "Traceback" not in output
    assert not (ptuning / "results").exists()


@pytest.mark.parametrize("targets", [[], ["all"]], ids=["default-target", "all"])
def test_the_default_target_of_a_ptuning_export_run_is_its_adapter_and_the_comparison(ptuning: Path,
                                                                                      targets: list[str]) -> None:
    """No target named (as `snakemake --report report.html` asks for it): the adapter, the table and the data page,
    not a refusal (the README's report command failed for every P-Tuning v2 job)."""
    result = snakemake(ptuning, "-n", *targets)
    planned = set(re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, re.MULTILINE))
    assert {"train", "compare_models", "report_data"} <= planned
    assert not any(rule.startswith("export") for rule in planned)


def test_a_ptuning_run_still_builds_its_adapter(ptuning: Path) -> None:
    assert "train[run=main]" in planned_jobs(ptuning, "results/runs/main/adapter")
    assert snakemake(ptuning, "--list").returncode == 0


def test_the_suggested_command_keeps_the_users_config_files_and_values(tmp_path: Path) -> None:
    """Asked through a preset and a --config value, the message's command carries both (without them it would plan
    the embedded default's LoRA run), targets first; the same words plan the run's training."""
    workdir = copy_workflow(tmp_path)
    given = ("--configfile", "config/presets/ptuning.yaml", "--config", "train={max_steps: 3}")
    result = snakemake(workdir, "-n", "results/merged_model", *given, check=False)
    suggested = re.search(r"Build the adapter and the comparison instead: (snakemake .+?); then", result.stderr + result.stdout)
    assert result.returncode != 0 and suggested, result.stderr[-2000:]
    words = shlex.split(suggested.group(1))
    assert words[:5] == ["snakemake", "--cores", "8", "results/runs/main/adapter", "results/eval/metrics.md"]
    assert words[5:] == ["--configfile", "config/presets/ptuning.yaml", "--config", "train={max_steps: 3}"], words
    assert "train[run=main]" in planned_jobs(workdir, *words[3:])  # the same words, its own --cores aside
