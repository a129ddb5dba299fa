"""The training command lines: one process, one node with 8 GPUs, two nodes with 8 GPUs each (under a faked srun)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from glmtune.launch import ENTRY, PER_NODE, Layout, launch_command

ARGS = '{"settings": {"max_steps": 1}}'
DEEPSPEED = ["--deepspeed", "config/deepspeed/ds_zero_2.json"]
TORCHRUN = ["python", "-m", "torch.distributed.run"]


def test_layout_from_the_rule_resources() -> None:
    assert Layout.from_resources(0, 1) == Layout(1, 1)
    assert Layout.from_resources(None, None) == Layout(1, 1)
    assert Layout.from_resources(1, 1) == Layout(1, 1)
    assert Layout.from_resources(8, 1) == Layout(1, 8)
    assert Layout.from_resources(16, 2) == Layout(2, 8)
    assert Layout.from_resources(16, 2).processes == 16
    with pytest.raises(ValueError, match="multiple of nodes"):
        Layout.from_resources(12, 8)
    with pytest.raises(ValueError, match="nodes must be >= 1"):
        Layout.from_resources(8, 0)


def test_one_process_is_plain_python() -> None:
    assert launch_command("train", [ARGS], Layout(1, 1), python="python") == ["python", "-m", ENTRY, "train", ARGS]


def test_one_process_with_deepspeed_goes_through_torchrun() -> None:
    assert launch_command("train", [ARGS, *DEEPSPEED], Layout(1, 1), distributed=True, python="python") == [
        *TORCHRUN, "--standalone", "--nproc_per_node", "1", "-m", ENTRY, "train", ARGS, *DEEPSPEED]


def test_one_node_with_8_gpus_is_standalone_torchrun() -> None:
    assert launch_command("train", [ARGS, *DEEPSPEED], Layout(1, 8), python="python") == [
        *TORCHRUN, "--standalone", "--nproc_per_node", "8", "-m", ENTRY, "train", ARGS, *DEEPSPEED]


def test_two_nodes_with_8_gpus_is_one_torchrun_per_node_under_srun() -> None:
    per_node = ('head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); '
                'exec python -m torch.distributed.run --nnodes "$SLURM_NNODES" --node_rank "$SLURM_NODEID" '
                '--rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head:29500" "$@"')
    assert PER_NODE.format(torchrun="python -m torch.distributed.run", port=29500) == per_node
    assert launch_command("train", [ARGS, *DEEPSPEED], Layout(2, 8), python="python") == [
        "srun", "--nodes", "2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "bash", "-c", per_node,
        "torchrun", "--nproc_per_node", "8", "-m", ENTRY, "train", ARGS, *DEEPSPEED]
    # The profile's 2 x 8 block: gpu 16 in total, 2 nodes, 16 CPUs for each node's task.
    assert launch_command("train", [ARGS], Layout.from_resources(16, 2, 16), python="python") == [
        "srun", "--nodes", "2", "--ntasks-per-node=1", "--cpus-per-task=16", "--kill-on-bad-exit=1", "bash", "-c",
        per_node, "torchrun", "--nproc_per_node", "8", "-m", ENTRY, "train", ARGS]


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


FAKE_SRUN = """#!{python}
# srun on two nodes: runs the command once per node with the variables SLURM sets in each task.
import os, subprocess, sys
args = sys.argv[1:]
assert args[:5] == ["--nodes", "2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "bash"], args
for node in range(2):
    env = dict(os.environ, SLURM_NNODES="2", SLURM_NODEID=str(node), SLURM_JOB_NODELIST="gpu[07-08]",
               SLURM_JOB_ID="4242", SLURM_PROCID=str(node))
    subprocess.run(args[4:], env=env, check=True)
"""
FAKE_SCONTROL = """#!/bin/sh
[ "$1 $2 $3" = "show hostnames gpu[07-08]" ] && printf 'gpu07\\ngpu08\\n'
"""
RECORDER = """#!{python}
# Stands in for python: records the arguments torchrun would get.
import json, os, sys
with open(os.environ["RECORD"], "a") as out:
    out.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def test_two_node_command_expands_per_node_in_a_faked_slurm_step(tmp_path: Path) -> None:
    """Run the 2 x 8 command line with fake srun/scontrol: each node's torchrun gets its own rank and the head node."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "srun", FAKE_SRUN.format(python=sys.executable))
    executable(bin_dir / "scontrol", FAKE_SCONTROL)
    python = executable(bin_dir / "python", RECORDER.format(python=sys.executable))
    record = tmp_path / "record.jsonl"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", RECORD=str(record))
    command = launch_command("train", [ARGS, *DEEPSPEED], Layout(2, 8), python=str(python))
    subprocess.run(command, env=env, check=True, timeout=60)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls == [
        ["-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node), "--rdzv_id", "4242",
         "--rdzv_backend", "c10d", "--rdzv_endpoint", "gpu07:29500", "--nproc_per_node", "8",
         "-m", ENTRY, "train", ARGS, *DEEPSPEED]
        for node in range(2)
    ]


def test_typed_settings_round_trip_through_the_worker_arguments() -> None:
    """What a worker rebuilds from the JSON is the same typed settings the script made; a wrong key is named."""
    from helpers.settings import evaluate_settings, model_settings, tokenize_settings, train_settings

    from glmtune.launch import decode_arguments, encode_arguments
    from glmtune.settings import SettingsError, TrainSettings

    train = {"train_dir": Path("tok/train"), "settings": train_settings(max_steps=7, lora={"r": 4}),
             "trust_remote_code": False}
    again = decode_arguments("train", encode_arguments("train", train))
    assert again == {**train, "train_dir": "tok/train"}  # paths travel as text
    assert isinstance(again["settings"], TrainSettings) and again["settings"].lora.r == 4
    evaluate = {"settings": evaluate_settings(batch_size="auto"), "model": model_settings(template="chatglm3"),
                "tokenize": tokenize_settings(cutoff_len=512), "test_path": "splits/test.jsonl"}
    assert decode_arguments("evaluate", encode_arguments("evaluate", evaluate)) == evaluate
    broken = json.loads(encode_arguments("train", train))
    broken["settings"]["lora"]["rank"] = broken["settings"]["lora"].pop("r")
    with pytest.raises(SettingsError, match=r"unknown key\(s\) train.lora.rank \(.*\); missing key\(s\) train.lora.r"):
        decode_arguments("train", json.dumps(broken))


def test_one_process_runs_the_stage_here_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import glmtune.launch as launch

    calls = []

    def stage(**arguments) -> None:
        calls.append(arguments)
        logging.getLogger("glmtune.test").info("stage ran")

    monkeypatch.setattr(launch, "task_function", lambda task: stage)
    monkeypatch.setattr(launch, "run", lambda *a: pytest.fail("one process must not start a launcher"))
    launch.run_stage("evaluate", {"max_input_length": 64}, Layout(1, 1), tmp_path / "evaluate.log")
    assert calls == [{"max_input_length": 64}] and "stage ran" in (tmp_path / "evaluate.log").read_text()
    launched = []
    monkeypatch.setattr(launch, "run", lambda command, log: launched.append((command, log)))
    from helpers.settings import train_settings

    launch.run_stage("train", {"settings": train_settings()}, Layout(1, 1), tmp_path / "train.log", distributed=True)
    (command, log), = launched
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"] and log == tmp_path / "train.log"
    assert calls == [{"max_input_length": 64}]  # DeepSpeed: through the launcher even for one process


def alive(pid: int) -> bool:
    """Running (a zombie that no one reaps has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def killed_parent_leaves(tmp_path: Path, parent_code: str) -> bool:
    """Start `parent_code` (which starts a child that writes its pid to tmp_path/child and sleeps), SIGKILL the parent
    once the child runs: is the child still alive 10 s later?"""
    import signal
    import time

    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=tmp_path)
    pid_file, deadline = tmp_path / "child", time.time() + 60
    while not (pid_file.is_file() and pid_file.read_text().strip()):
        assert time.time() < deadline and parent.poll() is None, "the child never started"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        for _ in range(100):
            if not alive(child):
                return False
            time.sleep(0.1)
        return True
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


CHILD = "import os, time; open('child', 'w').write(str(os.getpid())); time.sleep(120)"


def test_the_launched_command_dies_with_the_job_that_launched_it(tmp_path: Path) -> None:
    """kill -9 of the training job's script (Snakemake's job) must not leave its torchrun running."""
    parent = f"import sys; from glmtune.launch import run; run([sys.executable, '-c', {CHILD!r}], 'launch.log')"
    assert not killed_parent_leaves(tmp_path, parent)


def test_a_worker_in_a_session_of_its_own_dies_with_its_launcher(tmp_path: Path) -> None:
    """torchrun starts its workers in sessions of their own, out of reach of a kill of the job's process group;
    glmtune.worker's first call has the kernel kill it with its parent."""
    child = f"from glmtune.lifetime import die_with_parent; die_with_parent(); {CHILD}"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], start_new_session=True)"
    assert not killed_parent_leaves(tmp_path, parent)
    # Without it, the same child outlives its parent: the test can tell.
    orphan = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {CHILD!r}], start_new_session=True)"
    (tmp_path / "child").unlink()
    assert killed_parent_leaves(tmp_path, orphan)
