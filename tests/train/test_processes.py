"""Two gloo processes train each record once a pass (random, length-grouped or packed), each step's gradient the token
mean of its records, and report the validation loss one process reports (tests/helpers/trace_hook records what
each rank's steps train)."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, TRAIN_SETTINGS
from datasets import load_from_disk
from helpers.settings import train_settings
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from glmtune.io import read_jsonl
from glmtune.launch import Layout, run_stage
from glmtune.train.collate import PadCollator
from glmtune.train.packing import PackedCollator
from glmtune.train.processes import empty_row

HOOK = REPO / "tests" / "helpers" / "trace_hook"


def first_rows(source: Path, count: int, out: Path) -> list[list[int]]:
    data = load_from_disk(str(source)).select(range(count))
    data.save_to_disk(str(out))
    return [list(ids) for ids in data["input_ids"]]


def record_loss(model: torch.nn.Module, ids: list[int], labels: list[int]) -> tuple[float, int]:
    """(summed next-token cross-entropy over the trained tokens, their count), by hand."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    targets = torch.tensor(labels[1:])
    keep = targets != -100
    return F.cross_entropy(logits[keep].double(), targets[keep], reduction="sum").item(), int(keep.sum())


@pytest.fixture(scope="module", params=[("random", 11, False), ("group_by_length", 12, False), ("random", 11, True)],
                ids=["random", "group_by_length", "packing"])
def two_process_run(small_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
                    request: pytest.FixtureRequest) -> dict:
    """2 epochs on 2 processes in batches of 2 rows; 11 rows: the last global batch of 2 x 2 rows is short
    (accelerate looped back to record 0); 12 rows fill them, so only the ranks' order decides (group_by_length drew
    it from each rank's RNG, which dropout moves apart); packed, 11 records make a few rows. 7 validation records:
    the last batch of 2 short, evaluated every 2 steps (the last at the end: the summary's)."""
    sampling, rows, packing = request.param
    tmp_path = tmp_path_factory.mktemp(sampling)
    train = first_rows(small_run["tokenized"] / "train", rows, tmp_path / "train")
    first_rows(small_run["tokenized"] / "validation", 7, tmp_path / "validation")
    settings = {**TRAIN_SETTINGS, "max_steps": None, "num_epochs": 2, "batch_size": 2, "save_steps": 100, "logging_steps": 1,
                "eval_steps": 2, "sampling": sampling, "lora": {**TRAIN_SETTINGS["lora"], "dropout": 0.1}, "packing": packing, "pack_length": 256}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(HOOK), os.environ.get("PYTHONPATH", "")]))
        patch.setenv("GLMTUNE_TRACE_DIR", str(tmp_path))
        run_stage("train", {"train_dir": str(tmp_path / "train"), "validation_dir": str(tmp_path / "validation"),
                            "model_dir": str(small_run["model"]), "adapter_dir": str(tmp_path / "adapter"),
                            "log_path": str(tmp_path / "log.jsonl"), "plot_path": str(tmp_path / "loss.png"),
                            "checkpoint_root": str(tmp_path / "ckpt"), "settings": train_settings(**settings),
                            "trust_remote_code": False, "family": "glm4"},
                  Layout(nodes=1, per_node=2), tmp_path / "train.log")
    return {"dir": tmp_path, "train": train, "packing": packing, "summary": json.loads((tmp_path / "adapter" / "train_summary.json").read_text())}


def test_two_processes_train_each_record_once_a_pass(two_process_run: dict) -> None:
    run, train, summary = two_process_run["dir"], two_process_run["train"], two_process_run["summary"]
    steps = [row for rank in (0, 1) for row in read_jsonl(run / f"rank{rank}.jsonl")]
    if two_process_run["packing"]:  # a packed row's trained tokens are its records' answers: their tokens once a pass
        per_epoch = summary["steps"] // 2
        records = load_from_disk(str(run / "train"))["labels"]
        answers = Counter(token for labels in records for token in labels[1:] if token != -100)
    else:
        per_epoch = math.ceil(len(train) / 4)  # global batches of 2 processes x 2 rows, the last partial
        assert summary["steps"] == 2 * per_epoch
    assert summary["epochs"] == 2.0
    assert len(steps) == 2 * 2 * per_epoch  # each rank runs every step (an empty batch too): no rank waits
    for epoch in (0, 1):
        done = [s for s in steps if s["step"] // per_epoch == epoch]
        if two_process_run["packing"]:
            assert Counter(t for s in done for t in s["labels"]) == answers, f"epoch {epoch + 1}: not each record once"
        else:
            trained = Counter(tuple(r) for s in done for r in s["rows"])
            assert trained == Counter(tuple(r) for r in train), f"epoch {epoch + 1}: not each record once"
    assert all(math.isfinite(row["loss"]) for row in read_jsonl(run / "log.jsonl") if "loss" in row)


def test_two_processes_report_the_validation_loss_of_one(small_run: dict[str, Path], two_process_run: dict) -> None:
    # As one process computes it: batches of 2 in order, each its token mean, weighted by its records.
    if two_process_run["packing"]:
        pytest.skip("packed validation rows: the unpacked runs check the validation loss")
    run = two_process_run["dir"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(small_run["model"]), run / "adapter").eval()
    sums = [record_loss(model, r["input_ids"], r["labels"]) for r in load_from_disk(str(run / "validation"))]
    batches = [sums[i:i + 2] for i in range(0, 7, 2)]
    expected = sum(len(b) * sum(s for s, _ in b) / sum(n for _, n in b) for b in batches) / 7
    assert two_process_run["summary"]["validation_loss"] == pytest.approx(expected, rel=1e-6)
    evals = [row for row in read_jsonl(run / "log.jsonl") if "eval_loss" in row]  # training went on after each
    assert [row["step"] for row in evals] == [2, 4, 6] and evals[-1]["eval_loss"] == two_process_run["summary"]["validation_loss"]


def test_empty_rows_change_no_gradient(small_run: dict[str, Path], tmp_path: Path) -> None:
    # One pass over 11 rows in order, global batches of 4 rows: one process x 4, 2 processes x 2, and 2 processes
    # x 1 row x 2 accumulated. The last global batch is 3 records (+ 1 empty row on 2 processes): the same
    # trained weights only if every step's gradient is the token mean of the same records.
    first_rows(small_run["tokenized"] / "train", 11, tmp_path / "train")
    first_rows(small_run["tokenized"] / "validation", 3, tmp_path / "validation")
    base = {**TRAIN_SETTINGS, "max_steps": None, "num_epochs": 1, "save_steps": 100, "logging_steps": 1, "sampling": "sequential"}

    def train(name: str, processes: int, batch_size: int, accumulate: int) -> dict[str, torch.Tensor]:
        arguments = {"train_dir": str(tmp_path / "train"), "validation_dir": str(tmp_path / "validation"),
                     "model_dir": str(small_run["model"]), "adapter_dir": str(tmp_path / name), "log_path": str(tmp_path / f"{name}.jsonl"),
                     "plot_path": str(tmp_path / f"{name}.png"), "checkpoint_root": str(tmp_path / f"{name}.ckpt"), "trust_remote_code": False,
                     "family": "glm4", "settings": train_settings(**{**base, "batch_size": batch_size, "gradient_accumulation_steps": accumulate})}
        run_stage("train", arguments, Layout(nodes=1, per_node=processes), tmp_path / f"{name}.log")
        assert json.loads((tmp_path / name / "train_summary.json").read_text())["steps"] == 3
        return load_file(str(tmp_path / name / "adapter_model.safetensors"))

    one = train("one", 1, 4, 1)
    for name, batch_size, accumulate in (("two", 2, 1), ("two_accumulated", 1, 2)):
        two = train(name, 2, batch_size, accumulate)
        assert one.keys() == two.keys()
        for key in one:
            torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


@pytest.mark.parametrize("collator", [PadCollator(0), PackedCollator(0)])
def test_an_empty_row_trains_nothing_and_counts_no_token(collator: PadCollator | PackedCollator) -> None:
    row = {"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8], "position_ids": [0, 1, 0, 1]}
    assert empty_row(row) == {"input_ids": [5], "labels": [-100], "position_ids": [0]}
    batch = collator([row, empty_row(row)])
    assert batch["labels"][1].tolist() == [-100] * 4
    collator.trained()
    assert collator.real_tokens == 4  # the tokens/s of the log: the real row's alone
