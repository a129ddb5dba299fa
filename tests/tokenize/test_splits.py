"""tokenize_splits on a small tiny-model tokenizer: length limits that drop every sample, an empty validation split."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from glmtune.io import read_jsonl, write_jsonl
from glmtune.chat_template import IGNORE_INDEX, encode_conversation, get_template
from glmtune.config_rules import min_cutoff_len
from glmtune.tokenize.splits import tokenize_splits

from conftest import TRAIN_SETTINGS
from helpers.settings import model_settings, tiny_settings, tokenize_settings, train_settings


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Converted synthetic train rows, an empty validation file, and a tiny model built on them."""
    from glmtune.data.convert import convert_file
    from helpers.settings import convert_settings
    from glmtune.data.synthetic import write_advertisegen
    from glmtune.model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tokenize")
    raw = write_advertisegen(root / "raw", 60, 6, 3)
    convert_file(raw["train"], root / "train.jsonl", root / "rejects.jsonl", root / "report.json", "advertisegen", "adgen", convert_settings())
    write_jsonl(root / "validation.jsonl", [])
    model = build_tiny_model([root / "train.jsonl"], root / "model", tiny_settings(hidden_size=32, intermediate_size=64), family="glm4")
    return {"root": root, "model": model, "train": root / "train.jsonl", "validation": root / "validation.jsonl"}


def tokenize(data: dict[str, Path], out: Path, **lengths) -> dict:
    lengths = {"max_input_length": 64, "max_output_length": 128, **lengths}
    return tokenize_splits({s: data[s] for s in ("train", "validation")}, {s: out / s for s in ("train", "validation")},
                           out / "stats.json", data["model"], tokenize_settings(**lengths), model_settings(template="glm4"))


@pytest.mark.parametrize(("lengths", "setting"), [
    ({"cutoff_len": 6}, "tokenize.cutoff_len"),
    ({"max_input_length": 2, "max_output_length": 2}, "tokenize.max_input_length + max_output_length + 1"),
], ids=["cutoff_len", "input-output"])
def test_a_limit_that_drops_every_training_sample_stops_naming_the_setting(data, tmp_path: Path, lengths, setting) -> None:
    with pytest.raises(ValueError, match=r"no usable train sample: all 60 lost every trained token .*"
                                         + rf"\({setting.replace('+', '[+]')}\)"):
        tokenize(data, tmp_path, **lengths)


def test_a_limit_past_the_models_positions_stops_before_tokenizing(data, tmp_path: Path) -> None:
    """A downloaded model's positions are known first here (a local folder's before any job: test_config_checks)."""
    import json
    import shutil

    model = shutil.copytree(data["model"], tmp_path / "model")
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 150}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"model: tokenize.max_input_length \+ max_output_length \+ 1 lets a sample hold "
                                         r"193 tokens, but the model was trained for 150 positions"):
        tokenize({**data, "model": model}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    tokenize({**data, "model": model}, tmp_path / "out", cutoff_len=150)


def test_the_shortest_allowed_limit_keeps_one_answer_token() -> None:
    """min_cutoff_len (the before-any-job bound) is prefix + role header + one answer token, on a real layout."""

    class Chars:  # one token per character; special tokens by a table
        special = {"[gMASK]": 1, "<sop>": 2, "<|assistant|>": 3, "<|endoftext|>": 4}
        all_special_tokens = list(special)

        def get_added_vocab(self) -> dict[str, int]:
            return self.special

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [ord(c) for c in text]

        def convert_tokens_to_ids(self, token: str) -> int:
            return self.special[token]

    shortest = min_cutoff_len("glm4")
    messages = [{"role": "assistant", "content": "好的", "loss": True}]
    ids, labels, _ = encode_conversation(Chars(), get_template("glm4"), messages, shortest)
    assert ids[-1] == ord("好") and labels[-1] == ord("好")
    ids, labels, _ = encode_conversation(Chars(), get_template("glm4"), messages, shortest - 1)
    assert ord("好") not in [label for label in labels if label != IGNORE_INDEX]


def test_an_empty_validation_split_loads_and_training_runs_without_it(data, tmp_path: Path, caplog) -> None:
    """The README's train + test layout leaves validation empty: it is logged, loads as 0 rows, and is skipped."""
    from datasets import load_from_disk

    from glmtune.train.trainer import train_model

    with caplog.at_level(logging.WARNING, logger="glmtune.tokenize.splits"):
        stats = tokenize(data, tmp_path / "tok")
    assert stats["splits"]["validation"]["samples"] == 0
    assert "validation split has no sample" in caplog.text
    validation = load_from_disk(str(tmp_path / "tok" / "validation"))
    assert len(validation) == 0 and set(validation.features) == {"input_ids", "labels"}
    train = load_from_disk(str(tmp_path / "tok" / "train"))
    assert len(train) == 60 and train.features == validation.features
    settings = {**TRAIN_SETTINGS, "max_steps": 2, "save_steps": 2}
    summary = train_model(tmp_path / "tok" / "train", tmp_path / "tok" / "validation", data["model"].resolve(),
                         tmp_path / "adapter", tmp_path / "log.jsonl", tmp_path / "loss.png", tmp_path / "ckpt",
                         train_settings(**settings), trust_remote_code=False, family="glm4")
    assert summary["steps"] == 2 and "validation_loss" not in summary
    packed = train_model(tmp_path / "tok" / "train", tmp_path / "tok" / "validation", data["model"].resolve(),
                        tmp_path / "packed", tmp_path / "plog.jsonl", tmp_path / "ploss.png", tmp_path / "pckpt",
                        train_settings(**{**settings, "packing": True, "pack_length": 512}), trust_remote_code=False, family="glm4")
    assert packed["steps"] == 2 and "validation_loss" not in packed


def test_truncation_is_counted_logged_and_stops_training_over_the_threshold(data, tmp_path: Path, caplog) -> None:
    """Most answers cut by a cutoff_len below most samples' length: counted per split against an independent count, logged with the limits that
    keep 95 % whole, and over tokenize.max_truncated_ratio the job stops before writing anything."""
    from glmtune.model.loading import load_tokenizer

    tokenizer, template = load_tokenizer(data["model"], trust_remote_code=False), get_template("glm4")
    rows = list(read_jsonl(data["train"]))
    encoded = [encode_conversation(tokenizer, template, row["conversations"]) for row in rows]
    answers = [sum(label != IGNORE_INDEX for label in labels) for _, labels, _ in encoded]
    cutoff = sorted(len(ids) for ids, _, _ in encoded)[len(encoded) // 6]
    kept = [sum(label != IGNORE_INDEX for label in labels[:cutoff]) for _, labels, _ in encoded]
    lost = sum(k < a for k, a in zip(kept, answers))
    assert lost > len(rows) / 2  # the case under test

    with pytest.raises(ValueError, match=rf"tokenize: {lost} of 60 training samples \(\d+%\) lose answer tokens .* at "
                                         rf"{cutoff} tokens \(tokenize.cutoff_len\), more than tokenize.max_truncated_ratio 0.5; 95 % stay "
                                         r"whole with tokenize.max_input_length: \d+ and max_output_length: \d+ "
                                         r"\(or cutoff_len: \d+\), or raise tokenize.max_truncated_ratio"):
        tokenize(data, tmp_path / "stopped", cutoff_len=cutoff)
    assert not (tmp_path / "stopped").exists()

    with caplog.at_level(logging.INFO, logger="glmtune.tokenize.splits"):
        stats = tokenize(data, tmp_path / "allowed", cutoff_len=cutoff, max_truncated_ratio=1.0)
    train = stats["splits"]["train"]
    assert train["answer_truncated"] + train["dropped_no_trained_tokens"] == lost
    assert train["dropped_no_trained_tokens"] == sum(k == 0 for k in kept)
    assert train["dropped_records"] == [row["source"] for row, k in zip(rows, kept) if k == 0]  # found, not only counted
    first = train["dropped_records"][0]
    assert f"adgen {first['file']}: {first['index']}" in caplog.text and first["file"].endswith(".json")
    assert f"train: {lost} of 60 samples lost answer tokens to truncation at {cutoff} tokens" in caplog.text
    assert train["before_truncation"]["length"]["p100"] == max(len(ids) for ids, _, _ in encoded)

    whole = train["whole_95"]  # the suggested limits keep at least 95 % of the samples whole
    again = tokenize(data, tmp_path / "whole", max_input_length=whole["max_input_length"],
                     max_output_length=whole["max_output_length"])["splits"]["train"]
    assert again["answer_truncated"] + again["dropped_no_trained_tokens"] <= 0.05 * 60
    assert tokenize(data, tmp_path / "cut", cutoff_len=whole["cutoff_len"])["splits"]["train"]["truncated"] <= 3


def test_special_tokens_strings_in_messages_are_counted_and_warned(data, tmp_path: Path, caplog) -> None:
    rows = list(read_jsonl(data["train"]))
    rows[0]["conversations"][-1]["content"] += "<|endoftext|>"
    rows[1]["conversations"][0]["content"] += "<|assistant|>"
    rows[2]["conversations"][-1]["content"] += "<|endoftext|>"
    quoting = {**data, "train": tmp_path / "train.jsonl"}
    write_jsonl(quoting["train"], rows)
    with caplog.at_level(logging.WARNING):
        stats = tokenize(quoting, tmp_path / "out")
    assert stats["splits"]["train"]["special_token_text"] == {"<|assistant|>": 1, "<|endoftext|>": 2}
    assert "message text holds the string of a special token (<|assistant|> 1, <|endoftext|> 2" in caplog.text
    assert stats["splits"]["validation"]["special_token_text"] == {}


def two_turns(data: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The train rows joined two by two into two-turn conversations (the second question after the first answer)."""
    rows = list(read_jsonl(data["train"]))
    joined = [{**first, "conversations": first["conversations"] + second["conversations"]}
              for first, second in zip(rows[::2], rows[1::2])]
    write_jsonl(tmp_path / "train.jsonl", joined)
    return {**data, "train": tmp_path / "train.jsonl"}


def test_the_advised_max_input_length_holds_multi_turn_evaluation_prompts(data, tmp_path: Path) -> None:
    """An evaluation prompt holds the earlier answers too: the advice counted the untrained tokens only, and the
    max_input_length it gave cut every multi-turn test prompt (the evaluation then stopped, asking for more)."""
    from glmtune.chat_template import split_for_generation
    from glmtune.evaluate.prompts import generation_prompts
    from glmtune.model.loading import load_tokenizer

    multi = two_turns(data, tmp_path)
    train = tokenize(multi, tmp_path / "out")["splits"]["train"]
    whole = train["whole_95"]
    tokenizer, template = load_tokenizer(data["model"], trust_remote_code=False), get_template("glm4")
    prompts = [split_for_generation(row["conversations"])[0] for row in read_jsonl(multi["train"])]
    settings = tokenize_settings(max_input_length=whole["max_input_length"], max_output_length=whole["max_output_length"])
    _, cut = generation_prompts(tokenizer, template, prompts, settings, multi["train"])
    assert cut <= 0.05 * len(prompts)
    # The output limit's floor is the last answer's, not every trained token's (the earlier answers are in the prompt
    # already: counted twice, the advised pair reached far past the samples' p95, h16); still 95 % stay whole.
    assert whole["max_output_length"] < train["before_truncation"]["answer"]["p95"]
    again = tokenize(multi, tmp_path / "whole", max_input_length=whole["max_input_length"],
                     max_output_length=whole["max_output_length"])["splits"]["train"]
    assert again["answer_truncated"] + again["dropped_no_trained_tokens"] <= 0.05 * again["samples_in"]


def test_single_turn_advice_is_the_untrained_and_trained_tokens_p95(data, tmp_path: Path) -> None:
    """Single-turn, the evaluation prompt is the untrained tokens and the last answer every trained one: the advice
    is what it was before multi-turn prompts were counted."""
    from glmtune.tokenize.splits import whole_limits

    train = tokenize(data, tmp_path / "out")["splits"]["train"]
    before = train["before_truncation"]
    assert train["whole_95"] == whole_limits(before["prompt"]["p95"], before["answer"]["p95"], before["length"]["p95"])
    assert before["prompt"]["p95"] + before["answer"]["p95"] >= before["length"]["p95"]


@pytest.mark.parametrize("empty", ["question", "observation"])
def test_a_message_the_template_writes_nothing_for_stops_the_tokenize_job_naming_its_record(
        data, tmp_path: Path, empty: str) -> None:
    """An empty question kept by clean.drop_empty_turns: false, or a tool's empty result: GLM-4's template (as the
    official one) writes nothing for it, so the answer before it was trained to end with <|assistant|>, not <|user|>,
    and a tool call to run on into the answer instead of ending with <|observation|> (h15)."""
    multi = two_turns(data, tmp_path)
    rows = list(read_jsonl(multi["train"]))
    if empty == "question":
        rows[3]["conversations"][2]["content"] = ""
    else:
        rows[3]["conversations"][1:2] = [{"role": "assistant", "content": "{}", "loss": True, "metadata": "clear_cache"},
                                         {"role": "observation", "content": "", "loss": False}, rows[3]["conversations"][1]]
    write_jsonl(multi["train"], rows)
    source, position, role = rows[3]["source"], 2, "user" if empty == "question" else "observation"
    place = re.escape(f"adgen {source['file']}: {source['index']}")  # the file too: a dataset's files share line numbers
    with pytest.raises(ValueError, match=rf"tokenize: .*train.jsonl: {place}: message {position} "
                                         rf"\({role}\) is empty, and the glm4 chat template writes nothing .*"):
        tokenize(multi, tmp_path / "out")
    assert not (tmp_path / "out").exists()

