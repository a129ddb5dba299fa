"""Packing: rows never exceed their length, and a packed row computes exactly what separate samples do."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import TRAIN_SETTINGS
from helpers.settings import train_settings
from datasets import Dataset, load_from_disk
from transformers import AutoModelForCausalLM

from glmtune.io import read_jsonl
from glmtune.train.packing import PackedCollator, pack_dataset, plan_rows
from glmtune.train.collate import PadCollator
from glmtune.train.trainer import train_model


def test_best_fit_decreasing_fills_rows_without_overflow() -> None:
    lengths = [7, 5, 3, 3, 2, 9, 1]
    rows = plan_rows(lengths, 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 3  # 30 tokens in rows of 10 fit exactly


def test_a_sample_longer_than_a_row_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match=r"train.pack_length 4 is shorter than the longest sample \(5 tokens\); raise it to 5 or more"):
        plan_rows([3, 5], 4)


def test_packed_row_gives_the_same_loss_as_separate_samples(small_run: dict[str, Path]) -> None:
    model = AutoModelForCausalLM.from_pretrained(small_run["model"]).eval()
    samples = load_from_disk(str(small_run["tokenized"] / "train")).select(range(6))
    packed = pack_dataset(samples, 400)
    assert len(packed) == 1 and packed[0]["position_ids"].count(0) == 6
    with torch.no_grad():
        separate_sum, separate_count = 0.0, 0
        for sample in samples:
            batch = PadCollator(0)([sample])
            count = int((batch["labels"][0, 1:] != -100).sum())
            separate_sum += model(**batch).loss.item() * count
            separate_count += count
        batch = PackedCollator(0)([packed[0]])
        assert batch["use_cache"] is False
        packed_loss = model(**batch).loss.item()
    assert packed_loss == pytest.approx(separate_sum / separate_count, abs=1e-5)
    # Plain causal attention across the row (what packing without a correct mask does) is measurably different.
    with torch.no_grad():
        wrong = model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss.item()
    assert abs(wrong - packed_loss) > 1e-3


def test_training_with_packing_learns(small_run: dict[str, Path], tmp_path: Path) -> None:
    settings = {**TRAIN_SETTINGS, "packing": True, "pack_length": 256, "batch_size": 2, "max_steps": 20}
    tok = small_run["tokenized"]
    train_model(tok / "train", tok / "validation", small_run["model"], tmp_path / "out", tmp_path / "log.jsonl",
               tmp_path / "loss.png", tmp_path / "ckpt", train_settings(**settings), trust_remote_code=False, family="glm4")
    rows = [row for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["tokens_per_second"] > 0
    assert not (tmp_path / "out" / "config.json").exists()  # LoRA adapter, not a full model


def test_packed_dataset_keeps_every_token() -> None:
    data = Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]], "labels": [[-100, 2, 3], [-100, 5]]})
    row = pack_dataset(data, 8)[0]
    assert sorted(row["input_ids"]) == [1, 2, 3, 4, 5]
    assert row["labels"].count(-100) == 2 and row["position_ids"] == [0, 1, 2, 0, 1]


def test_num_epochs_sets_the_steps_so_packing_trains_the_same_samples(small_run: dict[str, Path], tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """max_steps null: one epoch is one pass over every sample, packed (fewer, longer rows) or not. The steps are
    known only in the stage, which warns there of a warmup as long as the run."""
    from glmtune.train.trainer import steps_of

    tok = small_run["tokenized"]
    rows = len(load_from_disk(str(tok / "train")))
    packed_rows = len(pack_dataset(load_from_disk(str(tok / "train")), 1024))
    assert steps_of(train_settings(max_steps=None, num_epochs=2, batch_size=8), rows, 1) == 2 * -(-rows // 8)
    assert steps_of(train_settings(max_steps=7, num_epochs=2, batch_size=8), rows, 1) == 7  # max_steps wins
    settings = {**TRAIN_SETTINGS, "packing": True, "pack_length": 1024, "batch_size": 2, "max_steps": None,
                "num_epochs": 1, "save_steps": 1000, "lr_scheduler": "linear", "warmup_steps": 500}
    caplog.set_level(logging.WARNING, logger="glmtune.train.trainer")
    summary = train_model(tok / "train", tok / "validation", small_run["model"], tmp_path / "out", tmp_path / "log.jsonl",
                          tmp_path / "loss.png", tmp_path / "ckpt", train_settings(**settings), trust_remote_code=False, family="glm4")
    assert summary["steps"] == -(-packed_rows // 2) and summary["epochs"] == 1
    assert packed_rows < rows / 4  # packing did change the row count; the epochs stayed one
    assert f"train.warmup_steps 500 is not shorter than the run's {summary['steps']} optimizer steps" in caplog.text


@pytest.mark.parametrize(("packing", "batch_size", "accumulation", "epochs"), [(False, 7, 3, 2), (True, 3, 2, 2),
                                                                           (False, 7, 3, 1.5)], ids=["padded", "packed", "a-pass-and-a-half"])
def test_num_epochs_trains_every_row_of_the_last_pass(small_run: dict[str, Path], tmp_path: Path, packing: bool,
                                                       batch_size: int, accumulation: int, epochs: float) -> None:
    """The steps were num_epochs x rows / rows-a-step, but the Trainer ends each pass with a partial batch (and a
    partial accumulation), so the last pass stopped short: 2 epochs asked, 1.94 trained, the summary saying 2.01."""
    settings = {**TRAIN_SETTINGS, "packing": packing, "pack_length": 256, "batch_size": batch_size,
                "gradient_accumulation_steps": accumulation, "max_steps": None, "num_epochs": epochs, "save_steps": 1000,
                "logging_steps": 1000, "lora": {**TRAIN_SETTINGS["lora"], "target_modules": ["q_proj"]}}
    summary = train_model(small_run["tokenized"] / "train", small_run["tokenized"] / "validation", small_run["model"],
                          tmp_path / "out", tmp_path / "log.jsonl", tmp_path / "loss.png", tmp_path / "ckpt",
                          train_settings(**settings), trust_remote_code=False, family="glm4")
    state = json.loads(next((tmp_path / "ckpt").glob(f"*/checkpoint-{summary['steps']}/trainer_state.json")).read_text())
    assert summary["epochs"] == round(state["epoch"], 2) and state["epoch"] == pytest.approx(epochs, abs=0.05)
    assert epochs != 2 or state["epoch"] == 2.0  # whole passes end exactly there
