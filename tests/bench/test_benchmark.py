"""The benchmark commands run end to end on the tiny model (their numbers are measured on a GPU, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NEEDS_BITSANDBYTES, shared_data

from glmtune.bench.models import arch_config
from glmtune.bench.recipes import bench_eval, bench_samples, long_samples
from glmtune.inference import BadRequest
from glmtune.bench.stage import config_section, train_recipes

REPO = Path(__file__).resolve().parents[2]


def test_bench_eval_prints_both_recipes(small_run: dict[str, Path]) -> None:
    table = bench_eval(small_run["adapter"], small_run["test"], "glm4", samples=7, max_new_tokens=4, demo_batch=2, batch=4)
    lines = table.splitlines()
    assert len(lines) == 4 and "demo: dataset order" in lines[2] and "glmtune: length-sorted" in lines[3]
    assert "| 2 | dynamic | 7 |" in lines[2] and "| 4 | static 4x" in lines[3]  # 7 rows: batches of 4, the last padded


def test_bench_eval_command_on_an_architecture_config(small_run: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """What a GPU measures for GLM-4-9B: random weights from config.json, a tokenizer folder, the shipped config's
    evaluation settings (batch auto: 32 on a CPU; cache auto: dynamic on a CPU)."""
    from glmtune.cli import main

    assert main(["bench-eval", str(small_run["model"] / "config.json"), str(small_run["test"]), "--tokenizer",
                 str(small_run["model"]), "--samples", "6", "--demo-samples", "4", "--max-new-tokens", "3",
                 "--demo-batch", "2", "--config", str(REPO / "config" / "advertisegen_glm4.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| 2 | dynamic | 4 |" in lines[2] and "| 6 | dynamic | 6 |" in lines[3]
    with pytest.raises(SystemExit):
        main(["bench-eval", "m", "t", "--batch", "lots"])


def test_bench_eval_needs_a_tokenizer_for_a_config(small_run: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="--tokenizer"):
        bench_eval(small_run["model"] / "config.json", small_run["test"], "glm4", samples=2)


def test_shipped_config_packs_and_evaluates_fast_by_default() -> None:
    shipped = REPO / "config" / "advertisegen_glm4.yaml"
    train, evaluate = config_section("train", shipped), config_section("evaluate", shipped)
    assert train["packing"] and train["max_steps"] is None and train["num_epochs"] > 0
    assert (evaluate["batch_size"], evaluate["cache"]) == ("auto", "auto")
    recipes = train_recipes(shipped, ["demo", "config", "long"], 3, 1)
    assert recipes["config"][0]["packing"] and not recipes["demo"][0]["packing"]
    assert recipes["long"] == ({**recipes["config"][0], "packing": False, "batch_size": 1, "gradient_checkpointing": True,
                                "loss": "auto"}, 2048)
    with pytest.raises(ValueError, match="unknown recipe"):
        train_recipes(shipped, ["fast"], 3, 1)


def test_long_samples_join_to_the_exact_length() -> None:
    data = [{"input_ids": [1] * 5, "labels": [-100, 1, 1, 1, 1]} for _ in range(5)]
    joined = long_samples(data, 8)
    assert len(joined) == 3 and all(len(s["input_ids"]) == len(s["labels"]) == 8 for s in joined)


def test_bench_train_runs_the_train_stage_per_recipe(small_run: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """What a GPU measures for GLM-4-9B: the train stage on random weights, a raw AdvertiseGen file encoded on the
    fly, the shipped config's recipe beside the demo's and the long-sample memory case."""
    from glmtune.cli import main
    from glmtune.data.synthetic import write_advertisegen

    raw = write_advertisegen(tmp_path / "raw", 60, 1, 3)["train"]
    samples = bench_samples(raw, small_run["model"], "glm4", "advertisegen", 64)
    assert len(samples) == 60 and all(len(s["input_ids"]) == len(s["labels"]) <= 64 for s in samples)
    assert all(any(label != -100 for label in s["labels"]) for s in samples)  # the answers are trained
    assert main(["bench-train", str(small_run["model"] / "config.json"), str(raw), "--tokenizer", str(small_run["model"]),
                 "--config", str(REPO / "config" / "advertisegen_glm4.yaml"), "--recipes", "demo,config,long",
                 "--steps", "2", "--logging-steps", "1", "--long-length", "256", "--workdir", str(tmp_path / "w")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]  # the Trainer prints too
    assert len(lines) == 5 and [line.split(" | ")[0] for line in lines[2:]] == ["| demo", "| config", "| long"]
    assert all(" | 2 | " in line for line in lines[2:])  # two steps each: the stage's own count
    assert lines[2].endswith("| 1.0x |")
    logged = [json.loads(x) for x in (tmp_path / "w" / "config" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "loss" in row] == [1, 2]


@NEEDS_BITSANDBYTES
def test_the_qlora_recipe_quantises_random_weights_as_loading_real_ones_does(small_run: dict[str, Path], tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """bench-train's long-qlora: random weights through transformers' own 4-bit loading give the very model
    load_model(four_bit=True) gives from the saved weights (same layers, same parameter dtypes and shapes), and the
    train stage runs on it beside the bf16 long case."""
    from glmtune.bench.models import random_weights
    from glmtune.cli import main
    from glmtune.data.synthetic import write_advertisegen
    from glmtune.model.loading import load_model

    def layout(model: object) -> tuple[list[str], dict[str, tuple[str, tuple[int, ...]]]]:
        return ([type(m).__name__ for m in model.modules()],  # type: ignore[attr-defined]
                {n: (str(p.dtype), tuple(p.shape)) for n, p in model.named_parameters()})  # type: ignore[attr-defined]

    stand_in = random_weights(small_run["model"], dtype="auto", trust_remote_code=False, device="cpu", four_bit=True)
    loaded = load_model(small_run["model"], dtype="auto", trust_remote_code=False, device="cpu", four_bit=True)
    assert "Linear4bit" in layout(stand_in)[0] and layout(stand_in) == layout(loaded)
    assert stand_in.name_or_path == str(small_run["model"])  # the adapter's recorded base
    raw = write_advertisegen(tmp_path / "raw", 40, 1, 3)["train"]
    assert main(["bench-train", str(small_run["model"] / "config.json"), str(raw), "--tokenizer", str(small_run["model"]),
                 "--recipes", "long,long-qlora", "--steps", "2", "--logging-steps", "1", "--long-length", "128",
                 "--workdir", str(tmp_path / "w")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| long")]
    assert [line.split(" | ")[:3] for line in lines] == [["| long", "2", "1"], ["| long-qlora", "2", "1"]]


def test_the_real_glm4_architecture_is_read_from_its_official_config() -> None:
    config = arch_config(shared_data("tokenizers/glm-4-9b-chat/config.json"))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (4096, 40, 32, 2)
    assert config.vocab_size == 151552 and config.intermediate_size == 13696
    assert json.loads(shared_data("tokenizers/glm-4-9b-chat/config.json").read_text())["rope_ratio"] == 500


def test_bench_eval_detects_the_family_as_infer_does(small_run: dict[str, Path], tmp_path: Path) -> None:
    """The README's `glmtune bench-eval results/merged_model results/splits/test.jsonl` took glm4 for every folder:
    a ChatGLM3 job's failed with a traceback saying to set model.template (a config key, not this command's)."""
    from glmtune.model.tiny import build_tiny_model
    from helpers.settings import tiny_settings

    chatglm3 = build_tiny_model([small_run["root"] / "splits" / "train.jsonl"], tmp_path / "chatglm3",
                                tiny_settings(hidden_size=32, intermediate_size=64), family="chatglm3")
    table = bench_eval(chatglm3, small_run["test"], None, samples=3, max_new_tokens=2, demo_batch=2, batch=2, cache="dynamic")
    assert "glmtune: length-sorted" in table
    with pytest.raises(BadRequest, match="--template"):
        bench_eval(chatglm3, small_run["test"], "glm4", samples=3, max_new_tokens=2)


def test_bench_eval_options_are_checked_and_written_ones_win_over_the_config(
        small_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from glmtune.cli import main

    for option in ("--samples", "--max-new-tokens", "--demo-batch", "--demo-samples"):
        for value in ("0", "-5"):  # -5 had benchmarked all but the last 5 rows; 0 failed in a traceback
            with pytest.raises(SystemExit):
                main(["bench-eval", "m", "t", option, value])
    capsys.readouterr()
    common = ["bench-eval", str(small_run["model"] / "config.json"), str(small_run["test"]), "--tokenizer",
              str(small_run["model"]), "--samples", "6", "--demo-samples", "2", "--max-new-tokens", "2", "--demo-batch", "2"]
    assert main([*common, "--config", str(REPO / "config" / "advertisegen_glm4.yaml"), "--batch", "3"]) == 0
    assert "| 3 | dynamic | 6 |" in capsys.readouterr().out.splitlines()[3]  # --batch 3, not the config's auto
    predictions = tmp_path / "predictions.jsonl"  # a run's predictions: messages, not a test split's conversations
    predictions.write_text('{"messages": [{"role": "user", "content": "hi"}], "reference": "yo"}\n', encoding="utf-8")
    assert main([*common[:2], str(predictions), *common[3:]]) == 2
    assert f"{predictions}, line 1: not a test split's line" in capsys.readouterr().err


def test_a_config_with_a_typo_is_refused_as_the_workflow_refuses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench-eval / bench-train --config: a misspelt evaluate key was silently unused (h22)."""
    from glmtune.cli import main

    config = tmp_path / "my.yaml"
    import yaml

    shipped = yaml.safe_load((REPO / "config" / "advertisegen_glm4.yaml").read_text(encoding="utf-8"))
    shipped["evaluate"]["batch_sise"] = 8
    config.write_text(yaml.safe_dump(shipped, allow_unicode=True), encoding="utf-8")
    with pytest.raises(BadRequest, match=r"evaluate.batch_sise: unknown key; did you mean 'evaluate.batch_size'\?"):
        config_section("evaluate", config)
    assert main(["bench-eval", "m", "t", "--config", str(config)]) == 2
    assert "batch_sise" in capsys.readouterr().err
