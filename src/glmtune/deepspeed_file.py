"""A user's DeepSpeed config file (train.deepspeed), read before any job.

The Trainer fills each `"auto"` value from its own arguments, and refuses an explicit value that differs from them
only once the training job has loaded the model and computed its steps (after tokenization: minutes into a real
run). A `scheduler` block is worse: the Trainer then steps DeepSpeed's schedule and ignores train.lr_scheduler and
train.warmup_steps without a word. Both are found here, from the file and the run's settings, with what to write.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glmtune.settings import TrainSettings

# TrainingArguments defaults the train stage keeps (glmtune has no setting for them); a test checks they are the
# Trainer's, so the file's explicit values are compared with what the Trainer would compare them with.
TRAINER_DEFAULTS = {"max_grad_norm": 1.0, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}

# A DeepSpeed key (dotted) -> what the Trainer compares it with: how a message names it, and its value for a run.
MATCHED: dict[str, tuple[str, Callable[[TrainSettings], Any]]] = {
    "train_micro_batch_size_per_gpu": ("train.batch_size", lambda s: s.batch_size),
    "gradient_accumulation_steps": ("train.gradient_accumulation_steps", lambda s: s.gradient_accumulation_steps),
    "optimizer.params.lr": ("train.learning_rate", lambda s: s.learning_rate),
    "optimizer.params.weight_decay": ("train.weight_decay", lambda s: s.weight_decay),
    "gradient_clipping": ("the Trainer's max_grad_norm (glmtune keeps its default)", lambda s: TRAINER_DEFAULTS["max_grad_norm"]),
    "optimizer.params.betas": ("the Trainer's AdamW betas (glmtune keeps its default)",
                               lambda s: [TRAINER_DEFAULTS["adam_beta1"], TRAINER_DEFAULTS["adam_beta2"]]),
    "optimizer.params.eps": ("the Trainer's adam_epsilon (glmtune keeps its default)", lambda s: TRAINER_DEFAULTS["adam_epsilon"]),
}

# DeepSpeed's schedules -> the train.lr_scheduler of the same shape.
SCHEDULES = {"WarmupLR": "constant_with_warmup", "WarmupDecayLR": "linear", "WarmupCosineLR": "cosine"}

# train.precision -> the bf16 / fp16 flags the Trainer gets (auto: decided by the GPU, so not checked here).
PRECISION_FLAGS = {"bf16": {"bf16": True, "fp16": False}, "fp16": {"bf16": False, "fp16": True},
                   "fp32": {"bf16": False, "fp16": False}}


def read_problem(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The file's settings, or what would stop DeepSpeed reading it only once the training job starts, or silently
    change it: not JSON, not an object, a key written twice (JSON keeps the last), no ZeRO stage."""
    from glmtune.repeated_keys import loads, repeated_paths

    try:
        found = loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text ({err.reason})"
    except json.JSONDecodeError as err:
        return None, f"line {err.lineno}: not valid JSON ({err.msg})"
    if not isinstance(found, dict):
        return None, "not a JSON object of DeepSpeed settings"
    if repeated := repeated_paths(found):
        return None, f"{', '.join(repeated)} written twice: JSON keeps only the last, which may not be the one meant"
    zero = found.get("zero_optimization")
    if not isinstance(zero, dict):  # accelerate refuses a file without one, and fails on the old boolean form
        given = "no zero_optimization block" if zero is None else \
            f"zero_optimization is {json.dumps(zero)} (DeepSpeed's old form, which accelerate cannot read)"
        return None, (f'{given}: DeepSpeed needs its ZeRO stage, e.g. "zero_optimization": {{"stage": 2}} '
                      "(config/deepspeed/ds_zero_2.json)")
    if zero.get("stage", 0) not in (0, 1, 2, 3):
        return None, f"zero_optimization.stage is {json.dumps(zero['stage'])}: DeepSpeed's ZeRO stages are 0, 1, 2 and 3"
    return found, None


def value_at(found: dict[str, Any], dotted: str) -> Any:
    """The file's value at a dotted key; None where it is not there (the Trainer then compares nothing)."""
    node: Any = found
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def mismatches(found: dict[str, Any], settings: TrainSettings) -> list[str]:
    """The file's explicit values (not "auto") that the Trainer would refuse, or use in place of the run's settings."""
    problems = []
    for key, (name, wanted) in MATCHED.items():
        value = value_at(found, key)
        if value is not None and value != "auto" and value != wanted(settings):
            problems.append(f"{key} is {json.dumps(value)} here but {name} is {json.dumps(wanted(settings))}")
    for kind, wanted_flag in PRECISION_FLAGS.get(settings.precision, {}).items():
        flag = value_at(found, f"{kind}.enabled")
        if isinstance(flag, bool) and flag != wanted_flag:
            problems.append(f"{kind}.enabled is {json.dumps(flag)} here but train.precision is {settings.precision}")
    if problems:
        problems[-1] += (' (the Trainer refuses the difference only once training has started: write "auto" to take '
                         "the run's setting, or make them equal)")
    total = value_at(found, "train_batch_size")
    per_process = settings.batch_size * settings.gradient_accumulation_steps
    if isinstance(total, int) and not isinstance(total, bool) and total % per_process:
        problems.append(f"train_batch_size {total} is not a multiple of train.batch_size × "
                        f"train.gradient_accumulation_steps ({per_process}), as DeepSpeed needs for any number of GPUs")
    if isinstance(schedule := found.get("scheduler"), dict):
        shape = schedule.get("type")
        same = f" ({shape}'s shape is train.lr_scheduler: {SCHEDULES[shape]})" if shape in SCHEDULES else ""
        problems.append(f"its scheduler block ({shape}) would replace train.lr_scheduler: {settings.lr_scheduler} and "
                        f"train.warmup_steps: {settings.warmup_steps} unsaid; remove it and set those{same}")
    return problems


def launch_problem(path: Path, settings: TrainSettings, world_size: int, bf16: bool, fp16: bool) -> str | None:
    """What only the training job knows clashes with the file: its total batch against this launch's processes,
    and its bf16 / fp16 flags against the precision train.precision came to on this machine (auto: by the GPU; fp32
    on a CPU). Found before the model loads; the Trainer would refuse them only after."""
    found, _ = read_problem(path)  # the file passed the checks before any job
    if found is None:
        return None
    problems = []
    total = value_at(found, "train_batch_size")
    per_step = settings.batch_size * settings.gradient_accumulation_steps * world_size
    if isinstance(total, int) and not isinstance(total, bool) and total != per_step:
        problems.append(f"train_batch_size is {total} but train.batch_size × train.gradient_accumulation_steps × "
                        f"{world_size} processes is {per_step}")
    for kind, wanted in (("bf16", bf16), ("fp16", fp16)):
        flag = value_at(found, f"{kind}.enabled")
        if isinstance(flag, bool) and flag != wanted:
            problems.append(f"{kind}.enabled is {json.dumps(flag)} but train.precision {settings.precision} trains "
                            f"{'in ' + kind if wanted else 'without it'} here")
    if not problems:
        return None
    return (f"{path}: {'; '.join(problems)} (the Trainer would refuse this once the model is loaded: write \"auto\" "
            "to take the run's value)")


def deepspeed_file_problem(path: Path, settings: TrainSettings) -> str | None:
    """Why the run cannot train with the DeepSpeed file at `path`, naming every problem; None where it can."""
    found, problem = read_problem(path)
    if found is None:
        return problem
    if problems := mismatches(found, settings):
        return "; ".join(problems)
    if importlib.util.find_spec("deepspeed") is None:
        return 'needs DeepSpeed, which is not installed: pip install -e ".[deepspeed]"'
    return None
