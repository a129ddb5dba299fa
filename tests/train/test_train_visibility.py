"""What training shows while it runs: log lines with an ETA, periodic validation, trackers, without changing what is trained."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TRAIN_SETTINGS
from helpers.settings import train_settings

from glmtune.config_rules import TRACKERS
from glmtune.io import read_jsonl
from glmtune.logs import job_logging
from glmtune.train.callbacks import clock
from glmtune.train.trainer import train_model


def test_schema_report_to_enum_is_the_tracker_registry() -> None:
    """The schema cannot read Python: train.report_to offers exactly the trackers check_report_to knows (as a list
    and as one string), each an integration of the Trainer's and an extra of pyproject.toml of its own name (the install line the error gives)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
    report_to = schema["properties"]["train"]["properties"]["report_to"]
    enum = report_to["items"]["enum"]
    assert len(enum) == len(set(enum)) and set(enum) == set(TRACKERS) and set(TRACKERS) <= set(INTEGRATION_TO_CALLBACK)
    for name in ("none", *enum, ",".join(enum)):  # the one-string form takes the same names
        assert re.match(report_to["pattern"], name)
    assert not re.match(report_to["pattern"], "all") and not re.match(report_to["pattern"], f"{enum[0]}x")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    for name, package in TRACKERS.items():
        assert package in [re.split(r"[<>=\[ ;]", requirement)[0] for requirement in extras[name]]


def train(small_run: dict[str, Path], out: Path, **settings) -> dict:
    tokenized = small_run["tokenized"]
    with job_logging(out / "train.log"):
        return train_model(tokenized / "train", tokenized / "validation", small_run["model"], out / "adapter",
                          out / "log.jsonl", out / "loss.png", out / "ckpt", train_settings(**{**TRAIN_SETTINGS, **settings}),
                          trust_remote_code=False, family="glm4")


def test_every_logged_step_has_a_log_line_and_validation_runs_every_eval_steps(small_run, tmp_path) -> None:
    from safetensors.torch import load_file

    settings = {"max_steps": 6, "logging_steps": 1, "save_steps": 100}
    with_eval = train(small_run, tmp_path / "eval", eval_steps=2, **settings)
    without = train(small_run, tmp_path / "plain", eval_steps=None, **settings)

    lines = (tmp_path / "eval" / "train.log").read_text(encoding="utf-8")
    steps = re.findall(r"step (\d+)/6 \| loss [\d.]+ \| lr \S+ \| grad norm \S+ \| \d+ tokens/s \| elapsed \d+:\d\d:\d\d \| "
                       r"ETA \d+:\d\d:\d\d", lines)
    assert [int(s) for s in steps] == [1, 2, 3, 4, 5, 6]
    assert [int(s) for s in re.findall(r"step (\d+)/6 validation loss", lines)] == [2, 4, 6]
    rows = list(read_jsonl(tmp_path / "eval" / "log.jsonl"))
    assert [row["step"] for row in rows if "eval_loss" in row] == [2, 4, 6]  # the last one is also the final one
    assert (tmp_path / "eval" / "loss.png").stat().st_size > 0
    # Evaluating in between changes nothing trained: same losses, same adapter, same final validation loss.
    assert with_eval["validation_loss"] == without["validation_loss"] == rows[-2]["eval_loss"]
    assert [r["loss"] for r in rows if "loss" in r] == [r["loss"] for r in read_jsonl(tmp_path / "plain" / "log.jsonl") if "loss" in r]
    first, second = (load_file(tmp_path / name / "adapter" / "adapter_model.safetensors") for name in ("eval", "plain"))
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)
    # Only the final validation without eval_steps, as before.
    assert [row["step"] for row in read_jsonl(tmp_path / "plain" / "log.jsonl") if "eval_loss" in row] == [6]


@pytest.mark.parametrize(("max_steps", "logging_steps", "logged"), [(3, 10, [3]), (5, 2, [2, 4, 5])])
def test_the_last_step_is_logged_whatever_logging_steps(small_run, tmp_path, max_steps, logging_steps, logged) -> None:
    """The Trainer logs every logging_steps-th step only: a run shorter than that had no loss row, no plot line, no
    final loss and 0 training seconds; a longer one ended its log before its last steps."""
    summary = train(small_run, tmp_path, max_steps=max_steps, logging_steps=logging_steps, save_steps=100)
    rows = [row for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row]
    assert [row["step"] for row in rows] == logged
    assert summary["train_seconds"] == rows[-1]["elapsed_s"] > 0
    if logging_steps == 2:  # the last row is the mean of its own steps (5 alone), not of the run so far
        train(small_run, tmp_path / "each", max_steps=5, logging_steps=1, save_steps=100)
        each = [row["loss"] for row in read_jsonl(tmp_path / "each" / "log.jsonl") if "loss" in row]
        assert rows[-1]["loss"] == pytest.approx(each[4], rel=1e-4)
        assert rows[0]["loss"] == pytest.approx((each[0] + each[1]) / 2, rel=1e-4)


def test_clock() -> None:
    assert clock(0) == "0:00:00" and clock(3725.4) == "1:02:05"


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="pip install tensorboard")
def test_tensorboard_events_go_under_the_runs_checkpoint_folder(small_run, tmp_path) -> None:
    summary = train(small_run, tmp_path, max_steps=2, logging_steps=1, save_steps=100, report_to=["tensorboard"])
    assert list((tmp_path / "ckpt" / summary["run_id"] / "runs").rglob("events.out.tfevents.*"))


def test_a_run_is_logged_to_trackers_under_its_name(small_run, tmp_path, monkeypatch) -> None:
    """The workflow passes the run's name (runs.<name>) as TrainingArguments.run_name; without one, the run id."""
    import glmtune.train.trainer as trainer

    seen = []
    real = trainer.report_args
    monkeypatch.setattr(trainer, "report_args", lambda report_to, name, results: seen.append(name) or real(report_to, name, results))
    tokenized = small_run["tokenized"]
    for run_name in ("lora_r4", None):
        out = tmp_path / str(run_name)
        summary = trainer.train_model(tokenized / "train", tokenized / "validation", small_run["model"], out / "adapter",
                                      out / "log.jsonl", out / "loss.png", out / "ckpt",
                                      train_settings(**{**TRAIN_SETTINGS, "max_steps": 1, "save_steps": 100}),
                                      trust_remote_code=False, run_name=run_name, family="glm4")
    assert seen == ["lora_r4", summary["run_id"]]


def test_a_tracker_that_is_not_installed_fails_before_training(small_run, tmp_path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match=r"train\.report_to: wandb .*pip install wandb"):
        train(small_run, tmp_path, max_steps=2, report_to=["wandb"])
    assert not (tmp_path / "ckpt").exists()


def test_a_resumed_run_keeps_the_validation_rows_before_its_checkpoint(tmp_path) -> None:
    """Validation rows up to the checkpoint stay (the Trainer evaluated before it saved); after the last step the final
    validation and the summary are logged again."""
    import json

    from glmtune.train.run_log import trim_log

    rows = [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4)] + [{"step": 2, "eval_loss": 2.0}, {"step": 4, "eval_loss": 1.5},
                                                               {"step": 4, "train_runtime": 1.0}]
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo', encoding="utf-8")
    trim_log(log, 4, 10)
    assert list(read_jsonl(log)) == rows[:6]
    trim_log(log, 4, 4)
    assert list(read_jsonl(log)) == rows[:5]
