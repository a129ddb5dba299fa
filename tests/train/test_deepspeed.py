"""DeepSpeed ZeRO-2 / ZeRO-3 full fine-tuning under torchrun (2 CPU processes). Needs the `deepspeed` extra;
skipped without it. The first run JIT-builds DeepSpeed's CPU ops (about 1-2 minutes) into TORCH_EXTENSIONS_DIR."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, TRAIN_SETTINGS
from helpers.settings import train_settings

from glmtune.io import read_jsonl
from glmtune.launch import Layout, encode_arguments, launch_command

pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")
pytestmark = pytest.mark.deepspeed


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_full_sft_trains_and_saves_a_whole_model(small_run: dict[str, Path], tmp_path: Path, stage: int) -> None:
    tok = small_run["tokenized"]
    settings = {**TRAIN_SETTINGS, "method": "full", "learning_rate": 1e-3, "max_steps": 10, "save_steps": 100,
                "logging_steps": 1, "deepspeed": str(REPO / f"config/deepspeed/ds_zero_{stage}.json")}
    arguments = {"train_dir": str(tok / "train"), "validation_dir": str(tok / "validation"), "model_dir": str(small_run["model"]),
                 "adapter_dir": str(tmp_path / "model"), "log_path": str(tmp_path / "log.jsonl"),
                 "plot_path": str(tmp_path / "loss.png"), "checkpoint_root": str(tmp_path / "ckpt"), "settings": train_settings(**settings),
                 "trust_remote_code": False, "family": "glm4"}
    command = launch_command("train", [encode_arguments("train", arguments)], Layout(nodes=1, per_node=2), distributed=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    losses = [row["loss"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row]
    assert len(losses) == 10 and losses[-1] < losses[0]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # ZeRO-3: gathered 16-bit weights, loadable
    assert sum(p.numel() for p in model.parameters()) > 100_000


def test_a_finished_deepspeed_run_run_again_trains_nothing(small_run: dict[str, Path], tmp_path: Path) -> None:
    """Re-running a finished ZeRO run (its adapter deleted) loads the last checkpoint: no step more, same weights."""
    from safetensors.torch import load_file

    tok = small_run["tokenized"]
    # 5 steps: not a whole number of epochs, where the Trainer's resume used to train one step more each time.
    settings = {**TRAIN_SETTINGS, "max_steps": 5, "save_steps": 5, "logging_steps": 1,
                "deepspeed": str(REPO / "config/deepspeed/ds_zero_2.json")}
    arguments = {"train_dir": str(tok / "train"), "validation_dir": str(tok / "validation"), "model_dir": str(small_run["model"]),
                 "adapter_dir": str(tmp_path / "adapter"), "log_path": str(tmp_path / "log.jsonl"),
                 "plot_path": str(tmp_path / "loss.png"), "checkpoint_root": str(tmp_path / "ckpt"), "settings": train_settings(**settings),
                 "trust_remote_code": False, "family": "glm4"}
    command = launch_command("train", [encode_arguments("train", arguments)], Layout(nodes=1, per_node=2), distributed=True)
    summaries, weights = [], []
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-4000:]
        summaries.append(json.loads((tmp_path / "adapter/train_summary.json").read_text()))
        weights.append(load_file(tmp_path / "adapter/adapter_model.safetensors"))
        shutil.rmtree(tmp_path / "adapter")
    assert [s["steps"] for s in summaries] == [5, 5]
    assert summaries[1]["train_loss"] == pytest.approx(summaries[0]["train_loss"])
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert [row["step"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row] == [1, 2, 3, 4, 5]
    assert [p.name for p in next(p for p in (tmp_path / "ckpt").iterdir() if p.is_dir()).glob("checkpoint-*")] == ["checkpoint-5"]
