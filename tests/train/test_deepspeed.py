"""DeepSpeed ZeRO-2 / ZeRO-3 full fine-tuning under torchrun (2 CPU processes). Needs the `deepspeed` extra;
skipped without it. The first run JIT-builds DeepSpeed's CPU ops (about 1-2 minutes) into TORCH_EXTENSIONS_DIR."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
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
                 "trust_remote_code": False}
    command = launch_command("train", [encode_arguments("train", arguments)], Layout(nodes=1, per_node=2), distributed=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    losses = [row["loss"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row]
    assert len(losses) == 10 and losses[-1] < losses[0]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # ZeRO-3: gathered 16-bit weights, loadable
    assert sum(p.numel() for p in model.parameters()) > 100_000
