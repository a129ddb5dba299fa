"""The workflow through a real SLURM cluster (single node on localhost) with profiles/slurm and its resources.yaml.

The default job runs end to end as SLURM jobs, with SLURM's own job logs kept under logs/slurm/; after one raw
file is edited, exactly the affected jobs are submitted again (this second run trains and evaluates on two fake GPUs,
through torchrun); a third run has nothing to do. Needs root, the Debian packages slurmctld slurmd slurm-client munge and
snakemake-executor-plugin-slurm (.ci/run installs it outside the main environment, in .venv/slurm-plugins, so that
other Snakemake runs never import it: where a slurm.conf exists but no controller answers, importing the plugin costs
each Snakemake start ~9 s). Takes 6-8 min on 2 cores: every job pays two Snakemake starts and the plugin's polling.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from glmtune.data.synthetic import write_advertisegen

from helpers import slurm_cluster
from conftest import REPO
from test_workflow import copy_workflow, edit_config

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

PLUGIN_DIR = Path(os.environ.get("GLMTUNE_SLURM_PLUGINS", REPO / ".venv" / "slurm-plugins"))
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", re.M)
AFFECTED = {"convert/local_adgen_all", "merge_splits", "build_tiny_model", "tokenize/default", "train/main",
            "evaluate_base", "evaluate/main", "compare_models", "export_chosen", "report_data"}
# No split_test: local_adgen's `all` file gives the test split a share, so merge_splits writes it.
ALL_JOBS = AFFECTED | {"fetch_dataset/synthetic_adgen", "convert/synthetic_adgen_all", "convert/synthetic_adgen_test"}


def plugin_path() -> str | None:
    """The folder to put on PYTHONPATH for the plugin ("" when it is installed here), or None when it is nowhere."""
    if (PLUGIN_DIR / "snakemake_executor_plugin_slurm").is_dir():
        return str(PLUGIN_DIR)
    return "" if importlib.util.find_spec("snakemake_executor_plugin_slurm") else None


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    if missing := slurm_cluster.missing_binaries():
        pytest.skip(f"SLURM is not installed (no {', '.join(missing)}): "
                    "apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts slurmctld/slurmd and writes /etc/slurm/slurm.conf: needs root")
    if plugin_path() is None:
        pytest.skip(f"snakemake-executor-plugin-slurm is neither in {PLUGIN_DIR} nor installed (see .ci/run)")
    partition = slurm_cluster.up(gpus=2)
    try:
        yield partition
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True, timeout=30)
        slurm_cluster.down()


TRAIN_MEM_MB = 1100  # training's own memory in resources.yaml: kept when the command line sets its GPUs


def site_profile(workdir: Path, partition: str) -> None:
    """Edit the copied profile and resources.yaml as a site would: the local partition, no account, small memory,
    quick status checks."""
    path = workdir / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text(encoding="utf-8"))
    profile["default-resources"].pop("slurm_account")
    profile["slurm-no-account"] = True
    profile["default-resources"].update(slurm_partition=partition, mem_mb=1000, cpus_per_task=1)
    profile["slurm-init-seconds-before-status-checks"] = 2
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    path = workdir / "profiles" / "slurm" / "resources.yaml"
    site = yaml.safe_load(path.read_text(encoding="utf-8"))
    for resources in site["resources"].values():
        resources.update(mem_mb=1000, cpus_per_task=1)
        resources.pop("slurm_partition", None)
        if "gpu" in resources:
            resources["gpu"] = 0  # training is switched to the node's two fake GPUs in the second run
    site["resources"]["train"]["mem_mb"] = TRAIN_MEM_MB
    path.write_text(yaml.safe_dump(site), encoding="utf-8")


def snakemake(workdir: Path, *args: str, timeout: float = 900) -> str:
    """`snakemake ... --workflow-profile profiles/slurm --configfile profiles/slurm/resources.yaml`, in the README's
    order (targets first: --configfile takes every word after it); stopped with SIGINT on timeout (it ignores
    SIGTERM)."""
    env = dict(os.environ)
    if path := plugin_path():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "snakemake", *args, "--workflow-profile", "profiles/slurm",
               "--configfile", "profiles/slurm/resources.yaml"]
    process = subprocess.Popen(command,
                               cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        raise AssertionError(f"snakemake {' '.join(args)} timed out:\n{output[-5000:]}") from None
    if process.returncode:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{output[-8000:]}")
    return output


def submissions(workdir: Path, output: str) -> dict[str, str]:
    """'rule' or 'rule/wildcards' -> SLURM job id, for every job this run submitted; their SLURM logs must be kept."""
    jobs = {}
    for job_id, log in SUBMITTED.findall(output):
        log_path = Path(log)
        assert log_path.is_file() and log_path.is_relative_to(workdir / "logs" / "slurm"), log
        jobs[str(log_path.parent.relative_to(workdir / "logs" / "slurm")).removeprefix("rule_")] = job_id
    return jobs


def test_default_job_through_slurm_then_only_affected_jobs_are_resubmitted(cluster: str, tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    site_profile(workdir, cluster)
    write_advertisegen(workdir / "data", 200, 20, 7)

    def shorter(config: dict) -> None:  # the scheduling is under test, not the default's 500 steps (CI time)
        config["datasets"]["local_adgen"] = {"source": "path", "format": "advertisegen", "files": {"all": "data/train.json"}}
        config["train"].update(max_steps=150, save_steps=75, eval_steps=75)
        config["evaluate"].update(max_samples=40)

    edit_config(workdir, shorter)

    first = snakemake(workdir, "results/merged_model")
    submitted = submissions(workdir, first)
    local = {m.group(1) for m in re.finditer(r"^localrule (\w+):", first, re.M)}
    # Every job went to SLURM, except fetch rules declared `localrules` (they run on the login node).
    assert local <= {"fetch_dataset", "fetch_model"}
    assert set(submitted) == {job for job in ALL_JOBS if job.split("/")[0] not in local}
    assert (workdir / "results/merged_model/config.json").is_file()
    metrics = json.loads((workdir / "results/eval/metrics.json").read_text())
    assert metrics["main"]["rouge-l"] > metrics["base"]["rouge-l"]
    assert not (workdir / "logs/runs/main/train.log").read_text().startswith("launch:")  # one process: trained in the job

    raw = workdir / "data/train.json"
    raw.write_text(raw.read_text(encoding="utf-8")
                   + json.dumps({"content": "类型#裙", "summary": "新的一条。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    second = snakemake(workdir, "results/merged_model", "--set-resources", "train:gpu=2", "evaluate:gpu=2")
    resubmitted = submissions(workdir, second)
    assert set(resubmitted) == AFFECTED
    # Training asked SLURM for the two (fake) GPUs and ran as two torchrun processes.
    job = subprocess.run(["scontrol", "show", "job", resubmitted["train/main"]], capture_output=True, text=True).stdout
    assert "gres:gpu:2" in job, job
    # ... and kept the memory of resources.yaml: --set-resources on the command line goes over it key by key.
    assert f"mem={TRAIN_MEM_MB}M" in job, job
    launch = (workdir / "logs/runs/main/train.log").read_text().splitlines()[0]
    assert launch.startswith("launch:") and "--nproc_per_node 2 -m glmtune.worker train" in launch
    launch = (workdir / "logs/runs/main/evaluate.log").read_text().splitlines()[0]
    assert launch.startswith("launch:") and "--nproc_per_node 2 -m glmtune.worker evaluate" in launch
    assert json.loads((workdir / "results/runs/main/eval/scores.json").read_text())["processes"] == 2
    assert len(list((workdir / "logs/slurm").rglob("*.log"))) == len(submitted) + len(resubmitted)

    assert "Nothing to be done" in snakemake(workdir, "-n", "results/merged_model")


def test_two_runs_are_submitted_as_two_training_jobs(cluster: str, tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    site_profile(workdir, cluster)

    def two_small_runs(config: dict) -> None:
        config["datasets"]["synthetic_adgen"].setdefault("demo", {}).update(train_rows=200, dev_rows=20)
        config["train"].update(max_steps=4, batch_size=4, logging_steps=2, save_steps=4, eval_steps=None)
        config["evaluate"].update(max_samples=4, batch_size=4, max_new_tokens=8)
        config["runs"] = {"a": {}, "b": {"train": {"lora": {"r": 4}}}}

    edit_config(workdir, two_small_runs)
    submitted = submissions(workdir, snakemake(workdir, "results/eval/metrics.md"))
    # One tokenized set and one base evaluation shared; each run its own training and evaluation job.
    assert {"tokenize/default", "evaluate_base", "train/a", "train/b", "evaluate/a", "evaluate/b"} <= set(submitted)
    assert len({submitted["train/a"], submitted["train/b"]}) == 2
    assert list(json.loads((workdir / "results/eval/metrics.json").read_text())) == ["base", "a", "b"]
