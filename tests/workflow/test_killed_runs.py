"""A training job killed mid-way, through Snakemake on a temporary copy of the workflow: nothing the killed training
should have replaced is reported up to date afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import copy_workflow, edit_config, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
TARGET = "results/merged_model"
# The outputs that depend on training, and so must be rebuilt after a change of its settings.
DEPENDENTS = {"train[run=main]", "evaluate[run=main]", "compare_models", "export_chosen"}


def small_job(config: dict) -> None:
    """The default job's stages at a size that runs in seconds on a CPU."""
    config["datasets"]["synthetic_adgen"]["demo"] = {"train_rows": 200, "dev_rows": 20}
    config["model"]["tiny"] = {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64}
    config["train"].update(max_steps=60, batch_size=4, logging_steps=1, save_steps=20, eval_steps=None)
    config["evaluate"].update(max_samples=4, batch_size=4, max_new_tokens=8)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("killed"))
    edit_config(workdir, small_job)
    snakemake(workdir, TARGET)
    return workdir


def children(pid: int) -> list[int]:
    """Every descendant process of `pid` (from /proc: no psutil needed)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def kill_training_midway(workdir: Path, *args: str) -> None:
    """Start Snakemake on TARGET, kill -9 the train script's process once its log shows a step, wait for Snakemake."""
    command = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--", TARGET]
    log, deadline = workdir / "logs/runs/main/train.log", time.time() + 300
    log.unlink()  # the finished run's: wait for this training's steps
    snake = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.time() < deadline:
            trainer = [pid for pid in children(snake.pid) if "train.py" in cmdline(pid)]
            if trainer and log.is_file() and " | loss " in log.read_text(errors="replace"):
                os.kill(trainer[0], signal.SIGKILL)
                break
            assert snake.poll() is None, "Snakemake ended before its training job logged a step"
            time.sleep(0.2)
        else:
            raise AssertionError("the training job never logged a step")
        assert snake.wait(timeout=120) != 0
    finally:
        if snake.poll() is None:
            snake.kill()


def test_a_killed_training_after_a_settings_change_leaves_every_dependent_outdated(
    finished: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(finished), str(workdir)], check=True)
    # A change of a training setting; many steps, so the training is still running when it is killed.
    (workdir / "changed.yaml").write_text(yaml.safe_dump({"train": {"learning_rate": 2.0e-3, "max_steps": 100000}}))
    kill_training_midway(workdir, "--configfile", "changed.yaml")
    assert not (workdir / "results/runs/main/adapter").exists()
    # The merged model, the metrics and the evaluation are still those of the old learning rate: all outdated.
    assert DEPENDENTS <= set(planned_jobs(workdir, TARGET, "--configfile", "changed.yaml"))


def processes_in(folder: Path) -> list[str]:
    """Command lines of the processes whose working directory is `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == folder:
                found.append(f"{entry.name}: {cmdline(int(entry.name))}")
        except OSError:
            continue
    return found


@pytest.mark.parametrize(("processes", "kill"), [(2, "group"), (1, "alone"), (2, "alone")])
def test_no_job_outlives_a_killed_snakemake(finished: Path, tmp_path: Path, processes: int, kill: str) -> None:
    """SIGKILL mid-training of Snakemake's process group, or of Snakemake's own process alone (an OOM kill, `kill -9
    <pid>`): the job's processes end with it, torchrun's workers too. A job left running by Snakemake killed alone
    wrote its outputs minutes later, after a re-run with other settings had been refused by its lock; the next run
    took that adapter for its own and exited 0 with the other settings' model (an evaluation did the same)."""
    workdir = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(finished), str(workdir)], check=True)
    (workdir / "changed.yaml").write_text(yaml.safe_dump({"train": {"max_steps": 100000}}))
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "changed.yaml",
               "--set-resources", f"train:gpu={processes}", "--", TARGET]
    log, deadline = workdir / "logs/runs/main/train.log", time.time() + 300
    log.unlink()  # the finished run's: wait for this training's steps
    snake = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    job = ("train.py", "torch", "glmtune.worker")
    try:
        while not (log.is_file() and " | loss " in log.read_text(errors="replace")):
            assert time.time() < deadline and snake.poll() is None, "the training never logged a step"
            time.sleep(0.2)
        assert any("train.py" in line for line in processes_in(workdir.resolve()))
    finally:
        if kill == "group":
            os.killpg(snake.pid, signal.SIGKILL)
        else:
            snake.kill()  # Snakemake alone: its job processes get no signal from this
        snake.wait()
    for _ in range(100):
        left = [line for line in processes_in(workdir.resolve()) if any(word in line for word in job)]
        if not left:
            break
        time.sleep(0.1)
    for line in left:  # do not leave them running after the test
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert not left, f"still running after Snakemake was killed: {left}"


def test_a_cancelled_forced_training_is_named_with_how_to_train_it_again(finished: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(finished), str(workdir)], check=True)
    kill_training_midway(workdir, "-R", "train")  # the same settings: 60 steps, killed after the first
    assert not (workdir / "results/runs/main/adapter").exists()
    # Same settings and data as the evaluation and export, so they stay current; the plan says the adapter is gone
    # and how to train it again, and that command plans the training.
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--", TARGET], cwd=workdir, capture_output=True,
                         text=True, check=True)
    assert "run main: results/runs/main/adapter is missing while its evaluation" in dry.stderr + dry.stdout
    assert "snakemake --cores 8 results/runs/main/adapter" in dry.stderr + dry.stdout
    assert planned_jobs(workdir, TARGET) == []
    assert "train[run=main]" in planned_jobs(workdir, "results/runs/main/adapter")


def test_an_evaluation_deleted_by_hand_is_named_while_the_comparison_shows_it(finished: Path, tmp_path: Path) -> None:
    """The comparison and the merged model's copy of it stay current (a missing file between is made only when
    something needs it), so the deleted run's row stayed without a word (h14). The plan says so, and how to evaluate
    it again; that command plans the evaluation."""
    workdir = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(finished), str(workdir)], check=True)
    shutil.rmtree(workdir / "results/runs/main/eval")
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--", TARGET], cwd=workdir, capture_output=True,
                         text=True, check=True)
    said = dry.stderr + dry.stdout
    assert "run main: results/runs/main/eval/scores.json is missing while the comparison" in said
    assert "snakemake --cores 8 results/runs/main/eval/predictions.jsonl" in said
    assert "evaluate[run=main]" in planned_jobs(workdir, "results/runs/main/eval/predictions.jsonl")
    fresh = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--", TARGET], cwd=finished, capture_output=True,
                           text=True, check=True)
    assert "is missing while" not in fresh.stderr + fresh.stdout
