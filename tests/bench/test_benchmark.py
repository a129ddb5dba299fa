"""The benchmark commands run end to end on the tiny model (their numbers are measured on a GPU, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_data

from glmtune.bench.recipes import bench_eval, bench_samples, bench_train
from glmtune.bench.models import arch_config, random_lora_model


def test_bench_eval_prints_both_recipes(small_run: dict[str, Path]) -> None:
    table = bench_eval(small_run["adapter"], small_run["test"], "glm4", samples=7, max_new_tokens=4, demo_batch=2, batch=4)
    lines = table.splitlines()
    assert len(lines) == 4 and "demo: dataset order" in lines[2] and "glmtune: length-sorted" in lines[3]
    assert "| 2 | dynamic | 7 |" in lines[2] and "| 4 | static 4x" in lines[3]  # 7 rows: batches of 4, the last padded


def test_bench_eval_command_on_an_architecture_config(small_run: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """What a GPU measures for GLM-4-9B: random weights from config.json, a tokenizer folder, batch auto (CPU: 16)."""
    from glmtune.cli import main

    assert main(["bench-eval", str(small_run["model"] / "config.json"), str(small_run["test"]), "--tokenizer",
                 str(small_run["model"]), "--samples", "6", "--demo-samples", "4", "--max-new-tokens", "3",
                 "--demo-batch", "2", "--batch", "auto"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| 2 | dynamic | 4 |" in lines[2] and "| 6 | static 6x" in lines[3]  # auto: 16 rows, so all 6 in one batch
    with pytest.raises(SystemExit):
        main(["bench-eval", "m", "t", "--batch", "lots"])


def test_bench_eval_needs_a_tokenizer_for_a_config(small_run: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="--tokenizer"):
        bench_eval(small_run["model"] / "config.json", small_run["test"], "glm4", samples=2)


def test_bench_train_prints_both_recipes(small_run: dict[str, Path]) -> None:
    config = small_run["model"] / "config.json"
    table = bench_train(lambda ckpt: random_lora_model(config, ["q_proj", "v_proj"], ckpt),
                        bench_samples(small_run["tokenized"] / "train"), steps=2, demo_batch=2, pack_length=256, peak_tflops=1.0)
    lines = table.splitlines()
    assert len(lines) == 4 and "packed rows" in lines[3] and lines[3].endswith("x |")


def test_bench_train_command_on_a_raw_file_needs_no_tokenized_split(small_run: dict[str, Path], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """What a GPU measures for GLM-4-9B: a raw AdvertiseGen file encoded on the fly (no `datasets` there)."""
    from glmtune.cli import main
    from glmtune.data.synthetic import write_advertisegen

    raw = write_advertisegen(tmp_path / "raw", 40, 1, 3)["train"]
    samples = bench_samples(raw, small_run["model"], "glm4", "advertisegen", 64)
    assert len(samples) == 40 and all(len(s["input_ids"]) == len(s["labels"]) <= 64 for s in samples)
    assert all(any(label != -100 for label in s["labels"]) for s in samples)  # the answers are trained
    assert main(["bench-train", str(small_run["model"] / "config.json"), str(raw), "--tokenizer", str(small_run["model"]),
                 "--steps", "1", "--demo-batch", "2", "--pack-length", "256", "--lora-targets", "q_proj"]) == 0
    assert "packed rows" in capsys.readouterr().out


def test_the_real_glm4_architecture_is_read_from_its_official_config() -> None:
    config = arch_config(shared_data("tokenizers/glm-4-9b-chat/config.json"))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (4096, 40, 32, 2)
    assert config.vocab_size == 151552 and config.intermediate_size == 13696
    assert json.loads(shared_data("tokenizers/glm-4-9b-chat/config.json").read_text())["rope_ratio"] == 500
