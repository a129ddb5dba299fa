"""The model's pre-job checks (glmtune.model_checks) through check_config on plain validated configs: keys its source
does not read, tiny head counts, and a local folder's config, weights, tokenizer, template and positions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers.config_check import check, fails, validated
from helpers.model_folders import sharded
from helpers.settings import schema, with_defaults

from conftest import shared_data


@pytest.mark.parametrize(("model", "message"), [
    ({"path": "/somewhere/glm-4-9b-chat"}, "config: model.path is read only with source: path, and this one's source is "
                                           "tiny, which would ignore it: set model.source to the one meant, or remove path"),
    ({"repo_id": "THUDM/glm-4-9b-chat"}, "config: model.repo_id is read only with source: huggingface or source: modelscope"),
    ({"revision": "main"}, "config: model.revision is read only with source: huggingface or source: modelscope"),
    ({"tiny": {"num_attention_heads": 4, "num_key_value_heads": 3}},
     "config: model.tiny: num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
    ({"tiny": {"hidden_size": 100, "num_attention_heads": 3, "num_key_value_heads": 1}},
     "config: model.tiny: hidden_size 100 is not a multiple of num_attention_heads 3"),
], ids=["path-with-tiny", "repo-id-with-tiny", "revision-with-tiny", "kv-heads", "heads"])
def test_a_model_key_its_source_does_not_read_or_tiny_heads_that_cannot_split_are_refused(model: dict[str, Any], message: str) -> None:
    """`path:` added to a copy of config/config.yaml without `source: path` trained a random tiny model, exit 0."""
    config = validated()
    config["model"] = with_defaults(schema(), {"model": {"name": "m", "source": "tiny", **model}})["model"]
    assert fails(config).startswith(message)


@pytest.mark.parametrize(("model", "message"), [
    ({"source": "huggingface"}, "config: model.repo_id is required with model.source: huggingface"),
    ({"source": "path"}, "config: model.path is required with model.source: path"),
    ({"source": "path", "path": "/no/model"}, "config: model.path: /no/model is not a model folder (no config.json)"),
    ({"source": "tiny", "trust_remote_code": True}, "config: model.trust_remote_code runs an original checkpoint's"),
])
def test_a_bad_model_names_its_key(model: dict[str, Any], message: str) -> None:
    assert fails(validated(model={"name": "m", **model})).startswith(message)


def test_a_model_folder_without_weights_stops_before_any_job() -> None:
    """The official GLM-4-9B-chat config and tokenizer files: a folder a user may point model.path at by mistake."""
    folder = shared_data("tokenizers/glm-4-9b-chat/config.json").parent
    assert fails(validated(model={"name": "m", "source": "path", "path": str(folder)})) == (
        f"config: model.path: {folder}: no weights (*.safetensors or pytorch_model*.bin); a folder with only config "
        "and tokenizer files cannot be fine-tuned")


def test_a_model_folder_with_a_shard_missing_stops_before_any_job(tmp_path: Path) -> None:
    folder = sharded(tmp_path / "m")
    check(validated(model={"name": "m", "source": "path", "path": str(folder)}))  # whole: passes
    (folder / "model-00001-of-00003.safetensors").unlink()
    assert fails(validated(model={"name": "m", "source": "path", "path": str(folder)})) == (
        f"config: model.path: {folder}/model.safetensors.index.json: 1 of its 3 shards are missing "
        "(model-00001-of-00003.safetensors): an incomplete download or copy?")


def test_a_native_model_folder_with_bin_weights_only_stops_before_any_job(tmp_path: Path) -> None:
    """Training loads pytorch_model.bin, but the export streams safetensors: it stopped at the end of the whole job."""
    import torch

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "glm", "architectures": ["GlmForCausalLM"]}))
    torch.save({"layer.weight": torch.zeros(4)}, folder / "pytorch_model.bin")
    (folder / "tokenizer.model").write_bytes(b"")
    message = fails(validated(model={"name": "m", "source": "path", "path": str(folder)}))
    assert message.startswith(f"config: model.path: {folder} holds its weights as pytorch_model*.bin only; the export "
                              "reads safetensors")
    assert f"save_pretrained('{folder}-safetensors')" in message
    (folder / "config.json").write_text(json.dumps({"model_type": "chatglm"}))  # an original: converted to safetensors
    check(validated(model={"name": "m", "source": "path", "path": str(folder)}))


@pytest.mark.parametrize(("model_type", "refused"), [("glm", False), ("chatglm", False), ("glm4", True), ("llama", True)])
def test_a_model_folder_of_a_model_type_no_family_loads_as_stops_before_any_job(
        tmp_path: Path, model_type: str, refused: bool) -> None:
    """GLM-4-0414 (model_type glm4) was taken for an original checkpoint and failed converting, naming tokenizer.model."""
    folder = sharded(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": ["Glm4ForCausalLM"]}))
    config = validated(model={"name": "m", "source": "path", "path": str(folder)})
    if not refused:
        check(config)
        return
    assert fails(config) == (
        f"config: model.path: {folder}/config.json: model_type {model_type!r} (Glm4ForCausalLM) is not a model glmtune "
        "trains: it trains GLM-4 and ChatGLM3 checkpoints, native (model_type 'glm', e.g. THUDM/glm-4-9b-chat-hf) or "
        "original (model_type 'chatglm', e.g. THUDM/chatglm3-6b)")
    (folder / "config.json").write_text("[]")
    assert fails(config).startswith(f"config: model.path: {folder}/config.json: not a JSON object")


def test_a_model_folder_without_a_tokenizer_or_with_another_models_stops_before_any_job(tmp_path: Path) -> None:
    """A model saved without its tokenizer failed in the first evaluation ("Couldn't instantiate the backend
    tokenizer"), a larger tokenizer of another model with a bare IndexError, after the data stages."""
    folder = sharded(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({"model_type": "glm", "vocab_size": 1024}))
    (folder / "tokenizer.model").unlink()
    model = {"name": "m", "source": "path", "path": str(folder)}
    assert fails(validated(model=model)) == (
        f"config: model.path: {folder} has no tokenizer (tokenizer.json or tokenizer.model): save the tokenizer with "
        "the model (tokenizer.save_pretrained into the same folder)")
    tokenizer = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1000}},
                 "added_tokens": [{"id": 1022, "content": "[gMASK]", "special": True}, {"id": 1023, "content": "<sop>", "special": True}]}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[gMASK]"}))
    check(validated(model=model))  # ids up to 1,023 in 1,024 rows
    tokenizer["added_tokens"].append({"id": 151329, "content": "<|endoftext|>", "special": True})
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert fails(validated(model=model)) == (
        f"config: model.path: {folder}/tokenizer.json gives ids up to 151,329, but config.json's vocabulary has 1,024 "
        "rows: the tokenizer is another model's (its ids would index past the embedding); copy this model's own "
        "tokenizer files")


# THUDM/glm-4-9b-chat-hf's config.json, as far as the checks read it
GLM4_HF_CONFIG = {"model_type": "glm", "architectures": ["GlmForCausalLM"], "vocab_size": 151552,
                  "eos_token_id": [151329, 151336, 151338], "pad_token_id": 151329}


def native_folder_with(tmp_path: Path, family: str) -> tuple[Path, dict[str, Any]]:
    """A native GLM-4 folder holding the real `family` tokenizer (rebuilt from the official tokenizer.model, saved as
    save_pretrained saves it), and the model config that points at it."""
    from helpers.official_tokenizers import convert_tokenizer

    source = shared_data(f"tokenizers/{ {'glm4': 'glm-4-9b-chat', 'chatglm3': 'chatglm3-6b'}[family]}/tokenizer.model")
    folder = sharded(tmp_path / "m", shards=1)
    (folder / "tokenizer.model").unlink()
    convert_tokenizer(source.parent, family, tmp_path / "tokenizer")
    for file in (tmp_path / "tokenizer").iterdir():
        file.rename(folder / file.name)
    (folder / "config.json").write_text(json.dumps(GLM4_HF_CONFIG))
    return folder, {"name": "m", "source": "path", "path": str(folder), "template": "glm4"}


def test_a_native_folder_without_tokenizer_config_or_a_pad_token_stops_before_any_job(tmp_path: Path) -> None:
    """tokenizer.json alone loads with no pad token: every check passed, then train failed with "Could not infer
    dtype of NoneType", naming nothing."""
    folder, model = native_folder_with(tmp_path, "glm4")
    check(validated(model=model))
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "pad_token"}))
    assert fails(validated(model=model)) == (
        f"config: model.path: {folder}/tokenizer_config.json names no pad_token (nor does special_tokens_map.json): "
        "training cannot pad a batch")
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<|user|>"}))  # id 151336
    assert fails(validated(model=model)) == (
        f"config: model.path: {folder}/tokenizer_config.json's pad_token '<|user|>' is id 151,336 of tokenizer.json, "
        "but config.json's pad_token_id is 151,329: the tokenizer is another model's; copy this model's own tokenizer files")
    (folder / "tokenizer_config.json").unlink()
    assert fails(validated(model=model)) == (
        f"config: model.path: {folder}/tokenizer_config.json is missing: it names the tokenizer's pad and eos tokens, "
        "without which training cannot pad a batch; copy this model's tokenizer_config.json beside its tokenizer.json")


@pytest.mark.parametrize("template", ["glm4", "chatglm3"])
def test_a_smaller_tokenizer_of_another_model_stops_before_any_job_naming_it(tmp_path: Path, template: str) -> None:
    """ChatGLM3's tokenizer (ids up to 64,797) in a GLM-4 folder (vocabulary 151,552) trained and exited 0 with
    template chatglm3; with glm4 the message recommended chatglm3."""
    folder, model = native_folder_with(tmp_path, "chatglm3")
    assert fails(validated(model={**model, "template": template})) == (
        f"config: model.path: {folder}/tokenizer.json has no token of id 151,329, which config.json gives as its "
        "eos_token_id (the tokenizer's ids go up to 64,797): the tokenizer is another model's; copy this model's own "
        "tokenizer files")


@pytest.mark.parametrize(("tokens", "template", "fits"), [
    (["[gMASK]", "<sop>", "<|user|>"], "chatglm3", "glm4"),  # GLM-4's spelling of the prefix
    (["[gMASK]", "sop", "<|user|>"], "glm4", "chatglm3"),
])
def test_a_model_folder_of_another_family_than_the_template_stops_before_any_job(
    tmp_path: Path, tokens: list[str], template: str, fits: str,
) -> None:
    folder = sharded(tmp_path / "m")
    check(validated(model={"name": "m", "source": "path", "path": str(folder), "template": template}))  # no tokenizer.json
    added = [{"id": i, "content": token, "special": True} for i, token in enumerate(tokens)]
    (folder / "tokenizer.json").write_text(json.dumps({"added_tokens": added, "model": {"type": "BPE"}}))
    check(validated(model={"name": "m", "source": "path", "path": str(folder), "template": fits}))
    message = fails(validated(model={"name": "m", "source": "path", "path": str(folder), "template": template}))
    assert message.startswith(f"config: model.template: {template} starts every conversation with ")
    assert message.endswith(f"the model is not of that family; set model.template: {fits}")


def test_lengths_past_a_model_folders_positions_are_refused_before_any_job(tmp_path: Path) -> None:
    """ChatGLM3-6B holds 8,192 positions: a longer sample would train positions it never saw, and nothing fails."""
    folder = sharded(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    model = {"name": "m", "source": "path", "path": str(folder), "template": "glm4"}
    check(validated(model=model, tokenize={"cutoff_len": 8192}, evaluate={"max_new_tokens": 128}, runs={"a": {
        "tokenize": {"cutoff_len": None, "max_input_length": 8000, "max_output_length": 191}}}))  # 8000 + 191 + 1
    assert fails(validated(model=model, tokenize={"cutoff_len": 8193})) == (
        "config: tokenize.cutoff_len lets a sample hold 8193 tokens, but the model was trained for 8192 positions (its "
        f"config.json's max_position_embeddings): set the limit to 8192 or less (model.path: {folder})")
    assert fails(validated(model=model, runs={"a": {"tokenize": {"max_input_length": 8000, "max_output_length": 192}}})
                 ).startswith("config: runs.a: tokenize.max_input_length + max_output_length + 1 lets a sample hold 8193")
    assert fails(validated(model=model, tokenize={"cutoff_len": 8000}, evaluate={"max_new_tokens": 192})) == (
        "config: an evaluation prompt of tokenize.cutoff_len 8000 tokens, the assistant's role token and "
        "evaluate.max_new_tokens 192 come to 8193 tokens, but the model was trained for 8192 positions (its config.json's "
        f"max_position_embeddings): lower one of them (model.path: {folder})")
    (folder / "config.json").write_text(json.dumps({"seq_length": 100}))  # an original checkpoint's key
    assert "trained for 100 positions" in fails(validated(model=model, tokenize={"cutoff_len": 101}))
    (folder / "config.json").write_text("{")
    assert fails(validated(model=model)).startswith(f"config: model.path: {folder}/config.json is not valid JSON")
