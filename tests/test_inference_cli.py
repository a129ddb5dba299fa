"""`glmtune infer` on bad input: missing folders, options out of range, a template of another family, empty prompts,
prompts longer than the model's positions and options that would go unused each stop with one line naming what is
wrong (exit 2), before the weights load; --output takes --prompt's answer too; the chat asks again on an empty line."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from glmtune.cli import main
from glmtune.inference import Chat, interactive
from helpers.settings import tiny_settings


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny GLM-4 and ChatGLM3 model folders (random weights), and GLM-4 copies without weights: a command that
    gets past the checks on those fails on loading, so an exit 2 there shows the check came first."""
    from glmtune.data.convert import convert_file
    from glmtune.data.synthetic import write_advertisegen
    from glmtune.model.tiny import build_tiny_model
    from helpers.settings import convert_settings

    root = tmp_path_factory.mktemp("infer_cli")
    raw = write_advertisegen(root / "raw", 40, 4, 5)
    convert_file(raw["train"], root / "train.jsonl", root / "rejects.jsonl", root / "report.json", "advertisegen", "adgen", convert_settings())
    size = tiny_settings(hidden_size=32, intermediate_size=64)
    folders = {family: build_tiny_model([root / "train.jsonl"], root / family, size, family=family) for family in ("glm4", "chatglm3")}
    for family in ("glm4", "chatglm3"):
        folders[f"{family}_no_weights"] = Path(shutil.copytree(folders[family], root / f"{family}_no_weights",
                                                               ignore=shutil.ignore_patterns("*.safetensors")))
    short = Path(shutil.copytree(folders["glm4_no_weights"], root / "short"))  # a model of 16 positions
    config = json.loads((short / "config.json").read_text(encoding="utf-8"))
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 16}), encoding="utf-8")
    return {**folders, "short": short, "root": root}


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one-line error of `glmtune infer ARGV`, which must exit 2 with nothing on stdout."""
    assert main(["infer", *argv]) == 2
    out, err = capsys.readouterr()
    assert not out and err.startswith("glmtune: error: ") and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_a_missing_model_folder_is_named_not_looked_up_on_the_hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused([str(tmp_path / "nonexistent_folder"), "--prompt", "hi"], capsys)
    assert f"{tmp_path / 'nonexistent_folder'}: the model folder does not exist" in err and "not a Hub repo id" in err
    (tmp_path / "notes.txt").write_text("x")
    assert "is a file, not a folder" in refused([str(tmp_path / "notes.txt"), "--prompt", "hi"], capsys)
    assert "no config.json" in refused([str(tmp_path), "--prompt", "hi"], capsys)


def test_an_adapter_whose_base_moved_or_a_missing_base_model(models: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"peft_type": "LORA", "base_model_name_or_path": str(tmp_path / "gone")}
    (adapter / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    err = refused([str(adapter), "--prompt", "hi"], capsys)
    assert f"({tmp_path / 'gone'}) does not exist here; pass the base model's folder with --base-model" in err
    err = refused([str(adapter), "--base-model", str(tmp_path / "moved"), "--prompt", "hi"], capsys)
    assert f"{tmp_path / 'moved'}: --base-model does not exist" in err


def test_base_model_with_a_whole_model_is_refused(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    err = refused([str(models["glm4_no_weights"]), "--base-model", str(models["glm4"]), "--prompt", "hi"], capsys)
    assert "a whole model (config.json, no adapter_config.json), not an adapter: --base-model is only for an adapter" in err


@pytest.mark.parametrize("option", ["--batch-size", "--max-new-tokens"])
@pytest.mark.parametrize("value", ["0", "-1", "-5", "two"])
def test_counts_must_be_positive_integers(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:  # argparse: before any folder is looked at
        main(["infer", "no-such-folder", "--prompt", "hi", option, value])
    assert exit_.value.code == 2
    assert f"argument {option}: {value!r} is not" in capsys.readouterr().err


@pytest.mark.parametrize(("folder", "given", "fits"), [("glm4_no_weights", "chatglm3", "glm4"), ("chatglm3_no_weights", "glm4", "chatglm3")])
def test_a_template_of_another_family_names_the_flag(models: dict[str, Path], folder: str, given: str, fits: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    err = refused([str(models[folder]), "--template", given, "--prompt", "hi"], capsys)
    assert f"--template {given} lays conversations out with the special token" in err
    assert f"pass --template {fits}, or leave --template out" in err and "model.template" not in err


@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_prompt_is_refused(models: dict[str, Path], prompt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--prompt: empty" in refused([str(models["glm4_no_weights"]), "--prompt", prompt], capsys)


@pytest.mark.parametrize(("folder", "refused_there"), [("glm4_no_weights", True), ("chatglm3_no_weights", False)])
def test_a_message_the_template_writes_nothing_for_is_refused_by_that_template(
        models: dict[str, Path], tmp_path: Path, folder: str, refused_there: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty question: GLM-4's template writes nothing for it (the model would answer what comes before it),
    ChatGLM3's writes it, as the evaluation's prompts and predictions.jsonl lines have it."""
    asked = tmp_path / "asked.jsonl"
    asked.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                              {"role": "user", "content": ""}]}) + "\n", encoding="utf-8")
    argv = ["infer", str(models[folder]), "--input", str(asked), "--output", str(tmp_path / "out.jsonl")]
    if refused_there:
        assert (f'{asked}, line 1: "messages": message 2 (user) is empty, and the glm4 chat template writes nothing'
                in refused(argv[1:], capsys))
    else:  # past the check, the folder has no weights to load
        assert "no weights (*.safetensors or pytorch_model*.bin)" in refused(argv[1:], capsys)


def test_a_prompt_longer_than_the_models_positions(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """config.json says 16 positions: "hi" (7 tokens) and 4 new tokens fit, a longer prompt does not."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n{"prompt": "类型#裙*颜色#红色*风格#复古*图案#格子*裙长#连衣裙"}\n', encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    err = refused([str(models["short"]), "--input", str(prompts), "--output", str(out), "--max-new-tokens", "4"], capsys)
    assert err.startswith(f"glmtune: error: {prompts}, line 2: the prompt is ") and "--max-new-tokens 4" in err
    assert "but the model was trained for 16 positions (its config.json's max_position_embeddings)" in err
    assert not out.exists()
    err = refused([str(models["short"]), "--prompt", "hi", "--max-new-tokens", "10"], capsys)
    assert err.startswith("glmtune: error: --prompt: the prompt is 7 tokens") and "comes to 17" in err


def test_output_takes_the_prompts_answer(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "answer.jsonl"
    assert main(["infer", str(models["glm4"]), "--prompt", "类型#裙", "--max-new-tokens", "3", "--output", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert not printed and "answered 1 prompt" in err
    [row] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["prompt"] == "类型#裙" and isinstance(row["response"], str) and set(row) == {"prompt", "response"}
    err = refused([str(models["glm4"]), "--output", str(out)], capsys)  # the chat: nothing would go to the file
    assert "--output is for the answers of --prompt or --input" in err


class Recording(Chat):
    """The real chat, keeping what it was asked."""

    asked: list[list[dict[str, Any]]]

    def answer(self, conversations: Any, wheres: Any = None) -> list[str]:
        self.asked = [*getattr(self, "asked", []), *conversations]
        return super().answer(conversations, wheres) if wheres is not None else super().answer(conversations)


def test_the_chat_asks_again_on_an_empty_line(models: dict[str, Path]) -> None:
    chat = Recording(models["glm4"], max_new_tokens=3)
    screen = io.StringIO()
    interactive(chat, io.StringIO("\n   \n类型#裙\n\nexit\n"), screen)
    assert chat.asked == [[{"role": "user", "content": "类型#裙"}]]
    assert screen.getvalue().count("User: ") == 5 and screen.getvalue().count("Assistant: ") == 1


def test_the_chat_goes_on_after_an_empty_answer(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that stops at once: its empty answer was kept in the history, and every later message was refused
    for it ("message 1 (assistant) is empty"), a chat only `clear` got out of."""
    import glmtune.inference as inference

    answers = iter(["", "  ", "连衣裙"])
    monkeypatch.setattr(inference, "generate", lambda *args, **kwargs: [next(answers)])
    chat = Recording(models["glm4"], max_new_tokens=3)
    screen = io.StringIO()
    interactive(chat, io.StringIO("类型#裙\n类型#裤\n类型#衫\nexit\n"), screen)
    assert chat.asked == [[{"role": "user", "content": text}] for text in ("类型#裙", "类型#裤", "类型#衫")]
    assert screen.getvalue().count("(no answer: the model wrote nothing") == 2 and "Not sent" not in screen.getvalue()
    assert "Assistant: 连衣裙" in screen.getvalue()


def test_a_family_sharing_another_ones_prefix_is_told_by_the_shipped_template_or_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A GLM-4 variant with `<eop>` closing every message has GLM-4's prefix: infer took glm4, the first to fit, and
    laid prompts out without the `<eop>` training used, without a word (h12). The merged model ships its family's
    Jinja; without it the choice is refused, naming --template."""
    import dataclasses

    from glmtune.chat_template import get_template
    from glmtune.family import FAMILIES, GLM4
    from glmtune.inference import BadRequest, detect_template

    chat = dataclasses.replace(GLM4.chat, end_of_turn="<eop>", stop=(*GLM4.chat.stop, "<eop>"))
    variant = dataclasses.replace(GLM4, name="glm4eop", chat=chat)
    vocab = {token: number for number, token in enumerate(("[gMASK]", "<sop>", "<eop>"))}

    class Tokenizer:
        def __init__(self, chat_template: str | None) -> None:
            self.chat_template = chat_template

        def get_vocab(self) -> dict[str, int]:
            return vocab

    assert detect_template(Tokenizer(None)).name == "glm4"  # one family fits: as before
    monkeypatch.setitem(FAMILIES, "glm4eop", variant)
    assert detect_template(Tokenizer(get_template("glm4eop").jinja())).name == "glm4eop"
    assert detect_template(Tokenizer(get_template("glm4").jinja())).name == "glm4"
    with pytest.raises(BadRequest, match=r"the chat prefixes of glm4 or glm4eop all fit the tokenizer and its chat "
                                         r"template is none of theirs\); pass --template \(glm4 or glm4eop\)"):
        detect_template(Tokenizer("{{ messages }}"))


def test_missing_or_cut_weights_are_named_before_loading(models: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An adapter folder without its weights went to the Hub (peft took the path for a repo id: a network
    traceback); a merged folder without weights or with a file cut short failed in loading with a traceback."""
    err = refused([str(models["glm4_no_weights"]), "--prompt", "类型#裙"], capsys)
    assert "no weights (*.safetensors or pytorch_model*.bin)" in err
    cut = Path(shutil.copytree(models["glm4"], tmp_path / "cut"))
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "model.safetensors: cut short" in refused([str(cut), "--prompt", "类型#裙"], capsys)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"peft_type": "LORA", "base_model_name_or_path": str(models["glm4"])}
    (adapter / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    err = refused([str(adapter), "--prompt", "类型#裙"], capsys)
    assert f"{adapter}: an adapter folder (adapter_config.json) without its weights" in err


def test_input_dash_reads_the_standard_input(models: dict[str, Path], tmp_path: Path) -> None:
    """`--input -` was read as a file named "-" (not found)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "glmtune.cli", "infer", str(models["glm4"]), "--input", "-",
                          "--max-new-tokens", "2"], input='{"prompt": "类型#裙"}\n{"prompt": "类型#裤"}\n',
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == ["类型#裙", "类型#裤"] and all("response" in row for row in rows)



def test_output_dash_is_the_standard_output(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """`--output -` wrote a file named "-"; it is stdout, as JSON lines (the text alone is --prompt's without it)."""
    assert main(["infer", str(models["glm4"]), "--prompt", "类型#裙", "--max-new-tokens", "2", "--output", "-"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["prompt"] == "类型#裙" and "response" in row and not Path("-").exists()


def test_a_folder_with_a_single_file_and_an_index_loads_the_single_file_as_transformers_does(
        models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The workflow refuses it (the export reads the index); infer loads with transformers, which takes the single
    file: it answered before the weights check and does again (h24)."""
    folder = Path(shutil.copytree(models["glm4"], tmp_path / "both"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-00001-of-00002.safetensors"}}))
    assert main(["infer", str(folder), "--prompt", "类型#裙", "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.strip()
