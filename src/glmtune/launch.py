"""How training (and evaluation) is started: one process, torchrun on one node, or one torchrun per node under srun.

The layout comes from the rule's resources (see workflow/rules/train.smk): `gpu` is the number of GPUs in
total (what the SLURM plugin passes as `--gpus`), `nodes` the number of nodes; one process runs per GPU.
TASK below is `train` or `evaluate` (glmtune.worker).

- 1 process: `python -m glmtune.worker TASK ARGS` (the workflow calls the task in-process instead), or with
  `distributed=True` torchrun with one process: DeepSpeed needs the rank variables a launcher sets.
- 1 node, N GPUs: `torchrun --standalone --nproc_per_node N -m glmtune.worker TASK ARGS`.
- K nodes: `srun --nodes K --ntasks-per-node=1` starts one torchrun per node, which starts one process per GPU
  and rendezvouses with the others (c10d) at the first node of the job. torchrun rather than srun starting every
  rank itself: torchrun sets RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR as the Trainer (and DeepSpeed) expect,
  supervises its local processes, and is the same launcher as on one node. srun's per-node values
  ($SLURM_NNODES, $SLURM_NODEID, the first host of $SLURM_JOB_NODELIST, $SLURM_JOB_ID) differ per node and
  exist only inside the step srun starts (the slurm-jobstep executor also removes SLURM_* variables from the
  rule's own environment), so a short `bash -c` in each task reads them.

`run_stage` is what the workflow's train and evaluate scripts call: the stage function in this process, or the
command above with the function's arguments as one JSON object (typed settings as their config sections, made
typed again in each worker by `decode_arguments`).

torchrun is called as `python -m torch.distributed.run`, the same program as the `torchrun` script, so it runs
with the interpreter that runs the workflow whatever is on PATH. Arguments after the training arguments
(`--deepspeed config/deepspeed/ds_zero_2.json`) are passed through to glmtune.worker unchanged.
"""

from __future__ import annotations

import importlib
import json
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmtune.lifetime import die_with_parent
from glmtune.settings import EvaluateSettings, ModelSettings, Section, TokenizeSettings, TrainSettings

ENTRY = "glmtune.worker"
RDZV_PORT = 29500
# task -> the stage function (module, name) and its keyword arguments that are typed settings
TASKS: dict[str, tuple[str, str, dict[str, type[Section]]]] = {
    "train": ("glmtune.train.trainer", "train_model", {"settings": TrainSettings}),
    "evaluate": ("glmtune.evaluate.predict", "evaluate_model",
                 {"settings": EvaluateSettings, "model": ModelSettings, "tokenize": TokenizeSettings}),
}

# Run by bash inside each srun task; "$@" holds the arguments that are the same on every node.
PER_NODE = ('head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); '
            'exec {torchrun} --nnodes "$SLURM_NNODES" --node_rank "$SLURM_NODEID" '
            '--rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head:{port}" "$@"')


@dataclass(frozen=True)
class Layout:
    """Nodes, processes (GPUs) per node, and CPUs per node (the job's cpus_per_task, for the per-node srun task)."""

    nodes: int = 1
    per_node: int = 1
    cpus_per_node: int | None = None

    @property
    def processes(self) -> int:
        return self.nodes * self.per_node

    @classmethod
    def from_resources(cls, gpu: int | None = 0, nodes: int | None = 1, cpus_per_task: int | None = None) -> Layout:
        """`gpu` GPUs in total over `nodes` nodes; no GPU (or one) on one node is a single process."""
        gpu, nodes = int(gpu or 0), 1 if nodes is None else int(nodes)
        if nodes < 1 or gpu < 0:
            raise ValueError(f"resources: nodes must be >= 1 and gpu >= 0 (got nodes={nodes}, gpu={gpu})")
        if nodes > 1 and (gpu < nodes or gpu % nodes):
            raise ValueError(f"resources: gpu ({gpu}, GPUs in total) must be a multiple of nodes ({nodes})")
        return cls(nodes, max(1, gpu // nodes), int(cpus_per_task) if cpus_per_task else None)


def launch_command(task: str, entry_args: Sequence[str], layout: Layout, *, distributed: bool = False,
                   python: str = sys.executable, port: int = RDZV_PORT) -> list[str]:
    """The argument list that runs `python -m glmtune.worker task *entry_args` on `layout`."""
    torchrun = [python, "-m", "torch.distributed.run"]
    entry = ["-m", ENTRY, task, *entry_args]
    if layout.processes == 1 and not distributed:
        return [python, *entry]
    if layout.nodes == 1:
        return [*torchrun, "--standalone", "--nproc_per_node", str(layout.per_node), *entry]
    per_node = PER_NODE.format(torchrun=shlex.join(torchrun), port=port)
    # srun gives a task one CPU unless told: all of a node's ranks would share it (the jobstep executor removes the
    # SLURM_CPUS_PER_TASK that srun would otherwise read).
    cpus = [f"--cpus-per-task={layout.cpus_per_node}"] if layout.cpus_per_node else []
    return ["srun", "--nodes", str(layout.nodes), "--ntasks-per-node=1", *cpus, "--kill-on-bad-exit=1",
            "bash", "-c", per_node, "torchrun", "--nproc_per_node", str(layout.per_node), *entry]


def run(command: Sequence[str], log_path: str | Path) -> None:
    """Run `command` with its output (every rank's) in `log_path`, the command line first; raise if it fails.
    The command dies with this process (die_with_parent), and so do its workers."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"launch: {shlex.join(command)}\n")
        log.flush()
        code = subprocess.run(list(command), stdout=log, stderr=subprocess.STDOUT, check=False,
                              preexec_fn=die_with_parent).returncode
    if code:
        raise RuntimeError(f"{shlex.join(command[:8])} ... exited with status {code}; its output is in {log_path}")


# The folders a stage writes (checkpoints, adapter, predictions), named when the disk fills up under them.
WRITTEN = ("adapter_dir", "checkpoint_root", "predictions_path")


def written_by(arguments: Mapping[str, Any]) -> list[str]:
    return [str(arguments[key]) for key in WRITTEN if key in arguments]


def task_function(task: str) -> Callable[..., Any]:
    """The stage function of `task` (imported only now: it imports torch)."""
    module, name, _ = TASKS[task]
    return getattr(importlib.import_module(module), name)


def encode_arguments(task: str, arguments: Mapping[str, Any]) -> str:
    """The stage function's keyword arguments as one JSON object; settings as their plain config sections."""
    typed = TASKS[task][2]
    plain = {key: value.to_config() if key in typed else value for key, value in arguments.items()}
    return json.dumps(plain, ensure_ascii=False, default=str)  # default: paths as text


def decode_arguments(task: str, text: str) -> dict[str, Any]:
    """encode_arguments undone: the settings typed again (a section with a wrong key is refused by name)."""
    arguments = json.loads(text)
    for key, kind in TASKS[task][2].items():
        arguments[key] = kind.from_config(arguments[key])
    return arguments


def run_stage(task: str, arguments: Mapping[str, Any], layout: Layout, log_path: str | Path, *,
              distributed: bool = False) -> None:
    """Run `task`'s stage function with `arguments`: here when `layout` is one process (and nothing needs a launcher:
    `distributed`, e.g. DeepSpeed), else through launch_command, one process per GPU; the log goes to `log_path`."""
    if layout.processes == 1 and not distributed:
        from glmtune.io import reporting_disk_full
        from glmtune.logs import job_logging

        with job_logging(str(log_path)), reporting_disk_full(*written_by(arguments)):
            task_function(task)(**arguments)
        return
    run(launch_command(task, [encode_arguments(task, arguments)], layout, distributed=distributed), log_path)
