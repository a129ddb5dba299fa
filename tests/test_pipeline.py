"""The package's stages run for real on the tiny model: training, evaluation, export and inference."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from glmtune.evaluate.compare import compare
from glmtune.evaluate.predict import evaluate_model
from glmtune.export.merge import ExportCheckFailed, merge_adapter
from glmtune.inference import Chat, batch_file, conversation_of, interactive
from glmtune.io import read_jsonl, write_jsonl
from helpers.settings import evaluate_settings, export_settings, model_settings, tokenize_settings


def test_training_lowers_the_loss_and_writes_log_and_plot(small_run: dict[str, Path]) -> None:
    losses = [row["loss"] for row in read_jsonl(small_run["log"]) if "loss" in row]
    assert len(losses) == 8  # 40 steps logged every 5
    assert losses[-1] < losses[0] - 1.0
    assert small_run["plot"].read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((small_run["adapter"] / "train_summary.json").read_text())
    assert summary["steps"] == 40 and summary["validation_loss"] < losses[0]
    config = json.loads((small_run["adapter"] / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_absolute()


def test_evaluation_scores_both_models_and_writes_a_table(small_run: dict[str, Path], tmp_path: Path) -> None:
    scores = {}
    for name, model in (("base", small_run["model"]), ("finetuned", small_run["adapter"])):
        scores[name] = evaluate_model(model, small_run["test"], tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json",
                                      evaluate_settings(max_samples=12, batch_size=4, max_new_tokens=24),
                                      model_settings(template="glm4"), tokenize_settings(max_input_length=64), base_model=small_run["model"])
        rows = list(read_jsonl(tmp_path / f"{name}.jsonl"))
        assert len(rows) == 12 and set(rows[0]) == {"messages", "reference", "prediction"}
        assert rows[0]["messages"][-1]["content"].startswith("类型#")
    assert scores["finetuned"]["rouge-l"] > scores["base"]["rouge-l"]
    compare(scores, tmp_path / "metrics.json", tmp_path / "metrics.md", tmp_path / "metrics.html")
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {"base", "finetuned"}
    table = (tmp_path / "metrics.md").read_text()
    assert "| ROUGE-L (F×100, jieba) |" in table and table.count("\n") == 4  # header, rule, one row per model
    assert table.splitlines()[0].endswith("| empty predictions | prompts cut | answers over max_new_tokens |")
    for name, row in scores.items():  # what the length limits took, beside the scores they shape
        assert f"| {row['num_empty_predictions']} | {row['prompts_cut']} | {row['answers_longer_than_max_new_tokens']} |" \
            in [line for line in table.splitlines() if line.startswith(f"| {name} |")][0]
    html = (tmp_path / "metrics.html").read_text()
    for name in scores:  # a model's row: its name, no method (no run), then ROUGE-1, -2, -L
        rouges = "".join(f"<td>{scores[name][key]:.4g}</td>" for key in ("rouge-1", "rouge-2", "rouge-l"))
        assert f"<tr><td>{name}</td><td></td>{rouges}" in html
    assert html.count("<tr>") == 3


def test_merged_model_reproduces_adapter_logits_and_loads_plainly(small_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    worst = merge_adapter(small_run["adapter"], small_run["model"], out, small_run["test"], export_settings(tolerance=1e-4),
                          model_settings(template="glm4"))
    assert worst < 1e-4
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "类型#裙*颜色#红色"}], add_generation_prompt=True,
                                        return_dict=True, return_tensors="pt")
    from peft import PeftModel

    adapter_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(small_run["model"]), small_run["adapter"])
    with torch.inference_mode():
        assert torch.allclose(model(**ids).logits, adapter_model(**ids).logits, atol=1e-4)


def test_a_failed_export_check_leaves_no_folder(small_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    with pytest.raises(ExportCheckFailed, match=r"\(> export.tolerance 0.0, both in fp32\); nothing was written"):
        merge_adapter(small_run["adapter"], small_run["model"], out, small_run["test"],
                      export_settings(tolerance=0.0), model_settings(template="glm4"))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_inference_on_adapter_prompt_batch_and_interactive(small_run: dict[str, Path], tmp_path: Path) -> None:
    chat = Chat(small_run["adapter"], max_new_tokens=16)
    single = chat.answer([[{"role": "user", "content": "类型#裙*颜色#红色"}]])[0]
    assert isinstance(single, str) and single
    out = io.StringIO()
    rows = [{"prompt": "类型#裙*颜色#红色"}, {"messages": [{"role": "user", "content": "类型#裤*颜色#黑色"}]}]
    assert batch_file(chat, [(row, conversation_of(row, "test")) for row in rows], out) == 2
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert answers[0]["response"] == single and answers[1]["messages"] == rows[1]["messages"]
    screen = io.StringIO()
    interactive(chat, io.StringIO("类型#裙*颜色#红色\nclear\nexit\n"), screen)
    assert f"Assistant: {single}" in screen.getvalue()


def test_inference_on_the_predictions_file_reproduces_the_evaluation(small_run: dict[str, Path], tmp_path: Path) -> None:
    """A line of predictions.jsonl is a `glmtune infer --input` line (its prompt's messages): with the evaluation's
    max_new_tokens and uncut prompts, each response is the line's prediction. Half the conversations get a system
    prompt and an earlier exchange: the prompt is the whole conversation before the answer, not its last message."""
    rows = list(read_jsonl(small_run["test"]))[:10]
    for row, earlier in zip(rows[::2], rows[1::2]):
        row["conversations"] = [{"role": "system", "content": "你是广告文案助手。", "loss": False},
                                *earlier["conversations"], *row["conversations"]]
    test = tmp_path / "test.jsonl"
    write_jsonl(test, rows)
    predictions = tmp_path / "predictions.jsonl"
    scores = evaluate_model(small_run["adapter"], test, predictions, tmp_path / "scores.json",
                            evaluate_settings(max_samples=10, batch_size=4, max_new_tokens=24),
                            model_settings(template="glm4"), tokenize_settings(max_input_length=512), base_model=small_run["model"])
    assert scores["prompts_cut"] == 0
    answers = tmp_path / "answers.jsonl"
    done = subprocess.run([sys.executable, "-m", "glmtune.cli", "infer", str(small_run["adapter"]), "--input", str(predictions),
                           "--output", str(answers), "--max-new-tokens", "24"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = list(read_jsonl(answers))
    assert len(rows) == 10 and any(row["prediction"] for row in rows)
    assert [row["response"] for row in rows] == [row["prediction"] for row in rows]


def test_inference_command_with_moved_base(small_run: dict[str, Path], tmp_path: Path) -> None:
    """The demo's known pain: the adapter's recorded base moved. --base-model fixes it; without it, a clear error."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for file in small_run["adapter"].iterdir():
        (adapter / file.name).write_bytes(file.read_bytes())
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "glmtune.cli", "infer", str(adapter), "--prompt", "类型#裙", "--max-new-tokens", "8"]
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode != 0 and "--base-model" in failed.stderr
    ok = subprocess.run([*command, "--base-model", str(small_run["model"])], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip()


def test_sharded_half_precision_export_reloads(small_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    merge_adapter(small_run["adapter"], small_run["model"], out, small_run["test"],
                  export_settings(tolerance=0.1, dtype="bfloat16", export_size=0.0001), model_settings(template="glm4"))
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    # Each shard holds tensors up to the limit (a single tensor larger than it stands alone), not one tensor each.
    from safetensors import safe_open

    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            sizes = [handle.get_slice(key).get_shape() for key in handle.keys()]
        data = sum(torch.Size(shape).numel() * 2 for shape in sizes)  # bf16
        assert len(sizes) == 1 or data <= 100_000, (shard.name, data)
    assert len(shards) < len(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"])
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_a_killed_export_leaves_no_complete_looking_folder(small_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    # The child dies (SIGKILL) on the reload check: every file is written, the rename has not happened.
    script = (
        "import os, signal, sys\n"
        "import glmtune.export.merge as e\n"
        "real = e.load_tokenizer\n"
        "calls = []\n"
        "def dying(*a, **k):\n"
        "    calls.append(a)\n"
        "    if len(calls) == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a, **k)\n"
        "e.load_tokenizer = dying\n"
        "from glmtune.settings import ExportSettings, ModelSettings\n"
        f"settings = ExportSettings.from_config({export_settings(tolerance=1e-4).to_config()!r})\n"
        f"model = ModelSettings.from_config({model_settings(template='glm4').to_config()!r})\n"
        f"e.merge_adapter({str(small_run['adapter'])!r}, {str(small_run['model'])!r}, {str(out)!r}, {str(small_run['test'])!r}, "
        "settings, model)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -9
    assert not out.exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".merged.partial-") for p in leftovers)
    # The next export clears what the killed one left, then writes the folder.
    merge_adapter(small_run["adapter"], small_run["model"], out, small_run["test"], export_settings(tolerance=1e-4), model_settings(template="glm4"))
    assert list(tmp_path.iterdir()) == [out] and (out / "config.json").is_file()


def test_infer_command_on_a_merged_folder_in_all_three_modes(small_run: dict[str, Path], tmp_path: Path) -> None:
    """`glmtune infer MERGED` with --prompt, --input/--output and interactively (stdin), as a user runs it."""
    merged = tmp_path / "merged"
    merge_adapter(small_run["adapter"], small_run["model"], merged, small_run["test"], export_settings(tolerance=1e-4), model_settings(template="glm4"))
    base = [sys.executable, "-m", "glmtune.cli", "infer", str(merged), "--max-new-tokens", "12"]
    single = subprocess.run([*base, "--prompt", "类型#裙*颜色#红色"], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    answer = single.stdout.strip()
    assert answer
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "类型#裙*颜色#红色"}\n{"messages": [{"role": "user", "content": "类型#裤*颜色#黑色"}]}\n',
                       encoding="utf-8")
    batch = subprocess.run([*base, "--input", str(prompts), "--output", str(tmp_path / "answers.jsonl")],
                           capture_output=True, text=True, timeout=300)
    assert batch.returncode == 0 and "answered 2 prompts" in batch.stderr, batch.stderr[-2000:]
    answers = list(read_jsonl(tmp_path / "answers.jsonl"))
    assert [row["response"] for row in answers][:1] == [answer] and answers[1]["messages"][0]["content"] == "类型#裤*颜色#黑色"
    chat = subprocess.run(base, input="类型#裙*颜色#红色\nclear\nexit\n", capture_output=True, text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert f"Assistant: {answer}" in chat.stdout  # the same greedy answer as --prompt


def test_trained_weights_are_as_readable_as_every_other_output(small_run: dict[str, Path]) -> None:
    """safetensors wrote the adapter and every checkpoint's weights 0600: on a shared cluster folder colleagues
    could read the merged model but not the trained weights they came from."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    folders = [small_run["adapter"], *small_run["checkpoints"].glob("*/checkpoint-*")]
    files = [path for folder in folders for path in folder.iterdir() if path.is_file()]
    assert any(path.suffix == ".safetensors" for path in files) and len(folders) > 1
    assert [path for path in files if path.stat().st_mode & mode != mode] == []
