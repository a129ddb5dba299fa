"""Training survives a kill: a re-run resumes from the newest complete checkpoint."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import TRAIN_SETTINGS
from helpers.settings import train_settings

from glmtune.io import read_jsonl
from glmtune.train.resume import last_complete_checkpoint
from glmtune.train.trainer import train_model


def test_killed_run_resumes_from_last_complete_checkpoint(small_run: dict[str, Path], tmp_path: Path) -> None:
    settings = train_settings(**{**TRAIN_SETTINGS, "max_steps": 30, "save_steps": 10, "logging_steps": 1})
    tokenized, checkpoints = small_run["tokenized"], tmp_path / "checkpoints"
    args = [str(tokenized / "train"), str(tokenized / "validation"), str(small_run["model"]), str(tmp_path / "adapter"),
            str(tmp_path / "log.jsonl"), str(tmp_path / "loss.png"), str(checkpoints)]
    # A child that trains slowly (each optimizer step sleeps) so it can be killed mid-run.
    child = textwrap.dedent(f"""
        import json, sys, time, torch
        step = torch.optim.AdamW.step
        torch.optim.AdamW.step = lambda self, *a, **k: (time.sleep(0.15), step(self, *a, **k))[1]
        from glmtune.settings import TrainSettings
        from glmtune.train.trainer import train_model
        train_model(*{args!r}, TrainSettings.from_config(json.loads(sys.argv[1])), trust_remote_code=False, family="glm4")
    """)
    process = subprocess.Popen([sys.executable, "-c", child, json.dumps(settings.to_config())], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120

    def logged_past_checkpoint() -> bool:  # killed mid-way between checkpoints 10 and 20, after logging step 12
        logs = list(checkpoints.glob("*/log.jsonl"))
        return bool(list(checkpoints.glob("*/checkpoint-10/trainer_state.json")) and logs
                    and any(row.get("step", 0) >= 12 for row in read_jsonl(logs[0]) if "loss" in row))

    while time.time() < deadline and not logged_past_checkpoint():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    run = next(p for p in checkpoints.iterdir() if p.is_dir())  # not holder.lock
    saved = last_complete_checkpoint(run)
    assert saved is not None and Path(saved).name == "checkpoint-10" and not (tmp_path / "adapter").exists()
    # A half-written checkpoint (files, but no trainer_state.json yet) is never picked.
    partial = run / "checkpoint-999"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    assert last_complete_checkpoint(run) == saved

    summary = train_model(*args, settings, trust_remote_code=False, family="glm4")
    assert summary["resumed_from"] == saved and summary["steps"] == 30
    resumed = {row["step"]: row["loss"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row}
    steps = [row["step"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row]
    assert steps == list(range(1, 31))  # one continuous curve: no restart from step 1, no step logged twice

    # Same step counter, optimizer and RNG state: the resumed curve is the uninterrupted run's.
    straight = tmp_path / "straight"
    whole = train_model(*args[:3], str(straight / "adapter"), str(straight / "log.jsonl"), str(straight / "loss.png"),
                       str(straight / "ckpt"), settings, trust_remote_code=False, family="glm4")
    uninterrupted = {row["step"]: row["loss"] for row in read_jsonl(straight / "log.jsonl") if "loss" in row}
    assert all(abs(resumed[s] - uninterrupted[s]) <= 1e-4 * abs(uninterrupted[s]) for s in range(11, 31)), (resumed, uninterrupted)
    # train_loss is the whole run's mean, not the mean of the 20 resumed steps.
    assert abs(summary["train_loss"] - whole["train_loss"]) <= 1e-4 * whole["train_loss"], (summary, whole)


def test_a_different_setting_starts_a_fresh_run(small_run: dict[str, Path], tmp_path: Path, caplog) -> None:
    tokenized = small_run["tokenized"]
    settings = {**TRAIN_SETTINGS, "max_steps": 5, "save_steps": 5}
    outputs = [tmp_path / "adapter", tmp_path / "log.jsonl", tmp_path / "loss.png", tmp_path / "ckpt"]
    first = train_model(tokenized / "train", tokenized / "validation", small_run["model"], *outputs,
                        train_settings(**settings), trust_remote_code=False, family="glm4")
    second = train_model(tokenized / "train", tokenized / "validation", small_run["model"], *outputs,
                         train_settings(**{**settings, "learning_rate": 1e-3}), trust_remote_code=False, family="glm4")
    assert first["run_id"] != second["run_id"] and second["resumed_from"] is None
    # The first run's folder stays (going back resumes it), and the second run's log says so, with its size.
    assert (tmp_path / "ckpt" / first["run_id"]).is_dir()
    assert "also holds the checkpoints of 1 earlier run(s) of other settings or data" in caplog.text
    assert first["run_id"] in caplog.text


def test_a_resumed_run_validates_at_the_configs_eval_steps_not_the_checkpoints(small_run: dict[str, Path], tmp_path: Path) -> None:
    """eval_steps, logging_steps and save_steps keep the run id (they change nothing trained), so a killed run re-run
    with validation switched on and other log and save steps resumes; the Trainer would then follow the checkpoint's
    step settings (no validation: every 500 steps)."""
    tokenized = small_run["tokenized"]
    settings = {**TRAIN_SETTINGS, "max_steps": 6, "save_steps": 3, "logging_steps": 1, "eval_steps": None}
    outputs = [tmp_path / "adapter", tmp_path / "log.jsonl", tmp_path / "loss.png", tmp_path / "ckpt"]
    first = train_model(tokenized / "train", tokenized / "validation", small_run["model"], *outputs,
                        train_settings(**settings), trust_remote_code=False, family="glm4")
    shutil.rmtree(tmp_path / "ckpt" / first["run_id"] / "checkpoint-6")  # as if killed between steps 3 and 6
    second = train_model(tokenized / "train", tokenized / "validation", small_run["model"], *outputs,
                         train_settings(**{**settings, "eval_steps": 1, "logging_steps": 2, "save_steps": 2}),
                         trust_remote_code=False, family="glm4")
    assert second["run_id"] == first["run_id"] and Path(second["resumed_from"]).name == "checkpoint-3"
    rows = list(read_jsonl(tmp_path / "log.jsonl"))
    assert [row["step"] for row in rows if "eval_loss" in row] == [4, 5, 6]
    assert [row["step"] for row in rows if "loss" in row] == [1, 2, 3, 4, 6]  # logging_steps 2 after the resume
    saved = sorted(p.name for p in (tmp_path / "ckpt" / first["run_id"]).glob("checkpoint-*"))
    assert saved == ["checkpoint-4", "checkpoint-6"]  # save_steps 2 (the Trainer keeps the last two)


def test_a_run_started_before_the_update_resumes_from_its_folders_earlier_name(small_run: dict[str, Path], tmp_path: Path) -> None:
    """Versions before this one named a run's folder with logging_steps and save_steps in the hash: such a folder is
    resumed, not left behind for a fresh run."""
    from glmtune.train.run_id import run_id_of

    tokenized = small_run["tokenized"]
    settings = train_settings(**{**TRAIN_SETTINGS, "max_steps": 6, "save_steps": 3, "logging_steps": 1})
    outputs = [tmp_path / "adapter", tmp_path / "log.jsonl", tmp_path / "loss.png", tmp_path / "ckpt"]
    first = train_model(tokenized / "train", tokenized / "validation", small_run["model"], *outputs, settings,
                        trust_remote_code=False, family="glm4")
    earlier = run_id_of(settings, 1, tokenized / "train", tokenized / "validation", small_run["model"], earlier=True)
    assert earlier != first["run_id"]
    (tmp_path / "ckpt" / first["run_id"]).rename(tmp_path / "ckpt" / earlier)  # as the old version left it
    shutil.rmtree(tmp_path / "ckpt" / earlier / "checkpoint-6")  # killed between steps 3 and 6
    second = train_model(tokenized / "train", tokenized / "validation", small_run["model"], *outputs, settings,
                         trust_remote_code=False, family="glm4")
    assert second["run_id"] == earlier and Path(second["resumed_from"]).name == "checkpoint-3"
    assert not (tmp_path / "ckpt" / first["run_id"]).exists()


def test_a_warmup_ratio_warms_up_over_that_share_of_the_steps(small_run: dict[str, Path], tmp_path: Path) -> None:
    tokenized = small_run["tokenized"]
    rates = []
    for name, warmup in (("ratio", {"warmup_ratio": 0.25}), ("steps", {"warmup_steps": 3})):  # 0.25 × 10, rounded up
        settings = train_settings(**{**TRAIN_SETTINGS, "max_steps": 10, "save_steps": 100, "logging_steps": 1,
                                     "lr_scheduler": "linear", **warmup})
        out = tmp_path / name
        train_model(tokenized / "train", tokenized / "validation", small_run["model"], out / "adapter", out / "log.jsonl",
                    out / "loss.png", out / "ckpt", settings, trust_remote_code=False, family="glm4")
        rates.append([row["learning_rate"] for row in read_jsonl(out / "log.jsonl") if "loss" in row])
    assert rates[0] == rates[1] and rates[0][2] > rates[0][1] > rates[0][0]  # rising over the first three steps


def test_the_same_config_trains_the_same_adapter_twice(small_run: dict[str, Path], tmp_path: Path) -> None:
    """LoRA weights are initialised before the Trainer seeds: without an early seed two runs differ from step 1."""
    from safetensors.torch import load_file

    tokenized = small_run["tokenized"]
    settings = train_settings(**{**TRAIN_SETTINGS, "max_steps": 4, "save_steps": 100, "logging_steps": 1})
    runs = []
    for name in ("first", "second"):
        out = tmp_path / name
        train_model(tokenized / "train", tokenized / "validation", small_run["model"], out / "adapter", out / "log.jsonl",
                   out / "loss.png", out / "ckpt", settings, trust_remote_code=False, family="glm4")
        losses = [row["loss"] for row in read_jsonl(out / "log.jsonl") if "loss" in row]
        runs.append((losses, load_file(out / "adapter" / "adapter_model.safetensors")))
    (first_losses, first_weights), (second_losses, second_weights) = runs
    assert first_losses == second_losses and len(first_losses) == 4
    assert first_weights.keys() == second_weights.keys()
    assert all((first_weights[k] == second_weights[k]).all() for k in first_weights)


def test_far_too_many_epochs_are_warned_about(caplog) -> None:
    from glmtune.train.trainer import epochs_of

    with caplog.at_level("WARNING", logger="glmtune.train.trainer"):
        assert epochs_of(train_settings(**{**TRAIN_SETTINGS, "max_steps": 40}), 360, 1) < 1
        assert not caplog.records
        assert epochs_of(train_settings(**{**TRAIN_SETTINGS, "max_steps": 5000}), 360, 2) > 200
    assert "is 217 epochs over 360 training rows (23 steps an epoch)" in caplog.text


def test_eval_steps_with_an_empty_validation_split_stops_before_training(small_run: dict[str, Path], tmp_path: Path) -> None:
    from datasets import load_from_disk

    tokenized = small_run["tokenized"]
    empty = tmp_path / "validation"
    load_from_disk(str(tokenized / "validation")).select([]).save_to_disk(str(empty), num_shards=1)
    settings = train_settings(**{**TRAIN_SETTINGS, "max_steps": 2, "eval_steps": 1})
    with pytest.raises(ValueError, match=r"train.eval_steps 1 asks for a validation loss, but the validation split "
                                         r"holds no sample"):
        train_model(tokenized / "train", empty, small_run["model"], tmp_path / "adapter", tmp_path / "log.jsonl",
                    tmp_path / "loss.png", tmp_path / "ckpt", settings, trust_remote_code=False, family="glm4")
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "ckpt").exists()


def test_tokens_per_second_counts_the_trained_tokens_not_the_validation_ones(small_run: dict[str, Path], tmp_path: Path) -> None:
    """Validation batches go through the training collator: its count had them, so a row after a validation showed
    twice the rate. One epoch, validated every 2 steps: the rows' tokens add up to the training set's, once."""
    from datasets import load_from_disk

    train = load_from_disk(str(small_run["tokenized"] / "train"))
    settings = {**TRAIN_SETTINGS, "max_steps": None, "num_epochs": 1, "eval_steps": 2, "logging_steps": 1,
                "save_steps": 1000, "lora": {**TRAIN_SETTINGS["lora"], "target_modules": ["q_proj"]}}
    train_model(small_run["tokenized"] / "train", small_run["tokenized"] / "validation", small_run["model"],
                tmp_path / "out", tmp_path / "log.jsonl", tmp_path / "loss.png", tmp_path / "ckpt",
                train_settings(**settings), trust_remote_code=False, family="glm4")
    rows = [row for row in read_jsonl(tmp_path / "log.jsonl") if "tokens" in row]
    assert sum(1 for row in read_jsonl(tmp_path / "log.jsonl") if "eval_loss" in row) > 5
    lengths = sorted(len(ids) for ids in train["input_ids"])
    assert sum(row["tokens"] for row in rows) == sum(lengths)
    # One row a step, each its own batch's tokens: the loader makes a batch ahead of its step, and counting when a
    # batch was made had put two in the first row and none in the epoch's last (a "0 tokens/s" line)
    batch = TRAIN_SETTINGS["batch_size"]
    assert len(rows) == -(-len(lengths) // batch)
    assert all(sum(lengths[:batch]) <= row["tokens"] <= sum(lengths[-batch:]) for row in rows[:-1])
    assert 0 < rows[-1]["tokens"] <= sum(lengths[-batch:])
