"""glmtune.deepspeed_file: a hand-written DeepSpeed file (train.deepspeed) checked before any job: explicit
values the Trainer would refuse only after tokenizing and loading the model, and a scheduler block it would use
in place of train.lr_scheduler.
The Trainer's own comparison (transformers' HfTrainerDeepSpeedConfig) is the reference for which values clash."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from helpers.settings import train_settings

from glmtune.deepspeed_file import (MATCHED, PRECISION_FLAGS, TRAINER_DEFAULTS, deepspeed_file_problem, launch_problem,
                                   mismatches)

# As DeepSpeed's own tutorials write one: every value explicit, an optimizer and a scheduler block of its own.
TUTORIAL = {
    "train_batch_size": 32, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1,
    "gradient_clipping": 0.5,
    "optimizer": {"type": "AdamW", "params": {"lr": 3e-5, "betas": [0.8, 0.999], "eps": 1e-8, "weight_decay": 3e-7}},
    "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 3e-5, "warmup_num_steps": 500}},
    "bf16": {"enabled": True}, "zero_optimization": {"stage": 2},
}


def test_the_trainer_defaults_kept_are_the_trainers() -> None:
    from transformers import TrainingArguments

    defaults = {field.name: field.default for field in dataclasses.fields(TrainingArguments)}
    assert TRAINER_DEFAULTS == {name: defaults[name] for name in TRAINER_DEFAULTS}


def test_a_tutorial_file_names_every_value_that_differs_and_the_scheduler_it_would_use_unsaid() -> None:
    problems = mismatches(TUTORIAL, train_settings(batch_size=4, learning_rate=5e-5, precision="fp32"))
    assert problems[:5] == [
        "train_micro_batch_size_per_gpu is 8 here but train.batch_size is 4",
        "optimizer.params.lr is 3e-05 here but train.learning_rate is 5e-05",
        "optimizer.params.weight_decay is 3e-07 here but train.weight_decay is 0.0",
        "gradient_clipping is 0.5 here but the Trainer's max_grad_norm (glmtune keeps its default) is 1.0",
        "optimizer.params.betas is [0.8, 0.999] here but the Trainer's AdamW betas (glmtune keeps its default) is [0.9, 0.999]",
    ]
    assert problems[5].startswith('bf16.enabled is true here but train.precision is fp32 (the Trainer refuses the '
                                  'difference only once training has started: write "auto"')
    assert problems[6:] == ["its scheduler block (WarmupLR) would replace train.lr_scheduler: cosine and "
                            "train.warmup_steps: 0 unsaid; remove it and set those (WarmupLR's shape is "
                            "train.lr_scheduler: constant_with_warmup)"]


def test_explicit_values_equal_to_the_runs_settings_pass() -> None:
    settings = train_settings(batch_size=8, learning_rate=3e-5, weight_decay=0.01, precision="bf16",
                              gradient_accumulation_steps=2)
    same = {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 2,
            "gradient_clipping": 1.0, "bf16": {"enabled": True}, "fp16": {"enabled": False},
            "optimizer": {"type": "AdamW", "params": {"lr": 3e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}}}
    assert mismatches(same, settings) == []
    auto = dict.fromkeys(("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"), "auto")
    assert mismatches({**auto, "bf16": {"enabled": True}}, train_settings(precision="auto")) == []  # the GPU decides


def test_a_total_batch_no_number_of_gpus_makes_is_named() -> None:
    problems = mismatches({"train_batch_size": 30, "train_micro_batch_size_per_gpu": "auto"}, train_settings(batch_size=4))
    assert problems == ["train_batch_size 30 is not a multiple of train.batch_size × train.gradient_accumulation_steps "
                        "(4), as DeepSpeed needs for any number of GPUs"]


def test_a_file_without_deepspeed_installed_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import glmtune.deepspeed_file as module

    path = tmp_path / "ds.json"
    path.write_text('{"zero_optimization": {"stage": 2}}', encoding="utf-8")
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    assert deepspeed_file_problem(path, train_settings()) == 'needs DeepSpeed, which is not installed: pip install -e ".[deepspeed]"'


@pytest.mark.parametrize(("text", "problem"), [
    ('{"bf16": {"enabled": "auto"}}', 'no zero_optimization block: DeepSpeed needs its ZeRO stage, e.g. "zero_optimization": {"stage": 2}'),
    ('{"zero_optimization": {"stage": 4}}', "zero_optimization.stage is 4: DeepSpeed's ZeRO stages are 0, 1, 2 and 3"),
    ('{"zero_optimization": true}', 'zero_optimization is true (DeepSpeed\'s old form, which accelerate cannot read): '
                                    'DeepSpeed needs its ZeRO stage'),
    (json.dumps(TUTORIAL), "train_micro_batch_size_per_gpu is 8 here but train.batch_size is 4; "),
])
def test_the_file_is_read_and_each_problem_named(tmp_path: Path, text: str, problem: str) -> None:
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")
    path = tmp_path / "ds.json"
    path.write_text(text, encoding="utf-8")
    assert (deepspeed_file_problem(path, train_settings(batch_size=4)) or "").startswith(problem)
    if not isinstance(json.loads(text).get("zero_optimization"), dict):  # accelerate, which the Trainer hands it to, fails too
        from accelerate.utils import DeepSpeedPlugin

        with pytest.raises((ValueError, AttributeError)):
            DeepSpeedPlugin(hf_ds_config=json.loads(text))


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("file", [
    TUTORIAL,
    {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 3, "gradient_clipping": 1.0,
     "fp16": {"enabled": True}, "optimizer": {"params": {"lr": 5e-5, "eps": 1e-6, "weight_decay": 0.0}},
     "zero_optimization": {"stage": 3}},
    {"train_micro_batch_size_per_gpu": "auto", "bf16": {"enabled": False}, "fp16": {"enabled": "auto"},
     "optimizer": {"params": {"lr": "auto", "betas": [0.9, 0.999]}}, "zero_optimization": {"stage": 2}},
])
def test_the_values_named_are_those_the_trainer_refuses(tmp_path: Path, file: dict[str, Any], precision: str) -> None:
    """transformers compares the file with the TrainingArguments the train stage builds for the run; the keys it
    finds differing are exactly the keys named here (a scheduler block is refused whole; the total batch, which
    depends on the GPUs, only where no number of them makes it)."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")
    from transformers import TrainingArguments

    settings = train_settings(batch_size=4, learning_rate=5e-5, precision=precision)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=settings.batch_size,
                             gradient_accumulation_steps=settings.gradient_accumulation_steps,
                             learning_rate=settings.learning_rate, weight_decay=settings.weight_decay,
                             deepspeed=json.loads(json.dumps({k: v for k, v in file.items() if k != "train_batch_size"})),
                             use_cpu=True, **PRECISION_FLAGS[precision])
    refused = {line.split()[2].split("=")[0] for line in args.hf_deepspeed_config.mismatches}
    problems = mismatches(file, settings)
    named = {problem.split()[0] for problem in problems if not problem.startswith(("its scheduler", "train_batch_size"))}
    assert {key for key in refused if not key.startswith("scheduler.")} == named
    if any(key.startswith("scheduler.") for key in refused):  # refused here as a whole block
        assert problems[-1].startswith("its scheduler block")
    assert named <= {*MATCHED, "bf16.enabled", "fp16.enabled"}


@pytest.mark.parametrize("flags", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("file", [
    {"train_batch_size": 4, "bf16": {"enabled": True}, "zero_optimization": {"stage": 2}},
    {"train_batch_size": 12, "fp16": {"enabled": False}, "bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 2}},
    {"train_batch_size": "auto", "fp16": {"enabled": True}, "bf16": {"enabled": False}, "zero_optimization": {"stage": 3}},
])
def test_at_launch_the_total_batch_and_precision_flags_named_are_those_the_trainer_refuses(
        tmp_path: Path, file: dict[str, Any], flags: tuple[bool, bool]) -> None:
    """What the training job checks before loading the model (one process here) is what transformers' comparison
    would refuse after it: the total batch, and the bf16 / fp16 flags the precision came to on this machine."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")
    from transformers import TrainingArguments

    bf16, fp16 = flags
    settings = train_settings(batch_size=4, precision="auto")
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(file), encoding="utf-8")
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=settings.batch_size,
                             gradient_accumulation_steps=settings.gradient_accumulation_steps,
                             deepspeed=json.loads(path.read_text()), use_cpu=True)
    args.bf16, args.fp16 = bf16, fp16  # as the flags a GPU would have given (the CPU refuses them at construction)
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    compared = HfTrainerDeepSpeedConfig(json.loads(path.read_text()))
    compared.trainer_config_process(args)
    refused = {line.split()[2].split("=")[0] for line in compared.mismatches}
    problem = launch_problem(path, settings, 1, bf16, fp16)
    named = {key for key in ("train_batch_size", "bf16.enabled", "fp16.enabled") if problem and f" {key} is " in f" {problem}"}
    assert refused & {"train_batch_size", "bf16.enabled", "fp16.enabled"} == named
    assert (problem is None) == (not named)


def test_at_launch_the_total_batch_counts_the_processes(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": 32, "zero_optimization": {"stage": 2}}), encoding="utf-8")
    settings = train_settings(batch_size=4, gradient_accumulation_steps=2)
    assert launch_problem(path, settings, 4, False, False) is None
    problem = launch_problem(path, settings, 2, False, False)
    assert problem and "train_batch_size is 32 but train.batch_size × train.gradient_accumulation_steps × 2 processes " \
                       "is 16" in problem and str(path) in problem
