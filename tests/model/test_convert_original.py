"""glmtune.model.convert_original: original ChatGLM3 / GLM-4 checkpoints -> native GlmForCausalLM folders.

Random scaled-down checkpoints in the ORIGINAL on-disk layout are converted, loaded with plain
`AutoModelForCausalLM` (no remote code) and compared with an independent reference forward pass
(tests/helpers/reference_glm.py) that runs on the original state dict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from glmtune.model import convert_original as checkpoints
from glmtune.model.convert_original import (
    convert_checkpoint,
    convert_state_dict_shard,
    is_native,
    native_config,
    original_family,
)

from conftest import shared_data
from helpers import reference_glm
from helpers.original_checkpoints import ORIGINAL_CONFIGS, SEQ, native_logits, original_state, write_original

@pytest.mark.parametrize("family,fmt", [("glm4", "safetensors"), ("chatglm3", "safetensors"),
                                        ("chatglm3", "bin"), ("glm4", "bin")])
def test_converted_logits_match_reference(tmp_path: Path, family: str, fmt: str) -> None:
    config, state = write_original(tmp_path / "orig", family, fmt)
    dst = convert_checkpoint(tmp_path / "orig", tmp_path / "native")
    saved = json.loads((dst / "config.json").read_text())
    assert saved["model_type"] == "glm" and saved["architectures"] == ["GlmForCausalLM"]
    assert "auto_map" not in saved and (dst / "model.safetensors.index.json").exists()
    ids = torch.randint(0, config["padded_vocab_size"], (SEQ,), generator=torch.Generator().manual_seed(1))
    expected = reference_glm.forward(state, config, ids)
    got = native_logits(dst, ids)
    assert got.shape == expected.shape == (SEQ, 128)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_reference_is_sensitive_to_the_conventions() -> None:
    """Guards the test above against a weak setup: wrong rope base or swapped gate/up halves change logits."""
    config = ORIGINAL_CONFIGS["glm4"]
    state = original_state(config)
    ids = torch.randint(0, 128, (SEQ,), generator=torch.Generator().manual_seed(1))
    logits = reference_glm.forward(state, config, ids)
    other_base = reference_glm.forward(state, {**config, "rope_ratio": 1}, ids)
    assert (logits - other_base)[SEQ // 2:].abs().max() > 1e-2
    swapped = dict(state)
    for n in range(2):
        key = f"transformer.encoder.layers.{n}.mlp.dense_h_to_4h.weight"
        swapped[key] = torch.cat(state[key].chunk(2)[::-1])
    assert (logits - reference_glm.forward(swapped, config, ids)).abs().max() > 1e-2


def test_native_config_fields() -> None:
    glm4, chatglm3 = native_config(ORIGINAL_CONFIGS["glm4"]), native_config(ORIGINAL_CONFIGS["chatglm3"])
    assert glm4.rope_parameters["rope_theta"] == 5_000_000 and chatglm3.rope_parameters["rope_theta"] == 10_000
    for cfg in (glm4, chatglm3):
        assert cfg.rope_parameters["partial_rotary_factor"] == 0.5
        assert (cfg.num_key_value_heads, cfg.head_dim, cfg.vocab_size, cfg.intermediate_size) == (2, 16, 128, 96)
        assert cfg.attention_bias is True and cfg.tie_word_embeddings is False
    assert chatglm3.rms_norm_eps == 1e-5 and chatglm3.max_position_embeddings == 8192
    with pytest.raises(ValueError, match="add_bias_linear"):
        native_config({**ORIGINAL_CONFIGS["glm4"], "add_bias_linear": True})


@pytest.mark.parametrize("family", ["glm4", "chatglm3"])
def test_official_configs(family: str) -> None:
    name = {"glm4": "glm-4-9b-chat", "chatglm3": "chatglm3-6b"}[family]
    official = json.loads(shared_data(f"tokenizers/{name}/config.json").read_text(encoding="utf-8"))
    assert set(ORIGINAL_CONFIGS[family]) - {"num_hidden_layers"} <= set(official)
    assert original_family(official) == family
    assert original_family({k: v for k, v in official.items() if k != "_name_or_path"}) == family
    cfg = native_config(official)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4096, 32, 2, 128)
    assert cfg.vocab_size == official["padded_vocab_size"] and cfg.intermediate_size == 13696
    assert cfg.rope_parameters["rope_theta"] == (5_000_000 if family == "glm4" else 10_000)
    assert cfg.num_hidden_layers == (40 if family == "glm4" else 28)


def test_original_family_by_name_and_sizes() -> None:
    assert original_family(ORIGINAL_CONFIGS["glm4"]) == "glm4"
    assert original_family(ORIGINAL_CONFIGS["chatglm3"]) == "chatglm3"
    assert original_family({"padded_vocab_size": 65024}) == "chatglm3"
    assert original_family({"padded_vocab_size": 151552}) == "glm4"
    with pytest.raises(ValueError):
        original_family({"padded_vocab_size": 1000})


def test_native_folder_passes_through(tmp_path: Path) -> None:
    write_original(tmp_path / "orig", "chatglm3")
    native = convert_checkpoint(tmp_path / "orig", tmp_path / "native")
    assert is_native(native) and not is_native(tmp_path / "orig")
    assert convert_checkpoint(native, tmp_path / "again") == native
    assert not (tmp_path / "again").exists()


def test_missing_tensor_leaves_no_dst(tmp_path: Path) -> None:
    write_original(tmp_path / "orig", "glm4", drop="transformer.encoder.layers.1.mlp.dense_4h_to_h.weight")
    with pytest.raises(ValueError, match="lacks 1 tensors"):
        convert_checkpoint(tmp_path / "orig", tmp_path / "native")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orig"]  # no dst, no temporary folder left


def test_a_shard_cut_short_stops_the_conversion_and_leaves_no_dst(tmp_path: Path) -> None:
    """An interrupted download of an original checkpoint: named with both sizes before any tensor is converted."""
    from glmtune.model.weight_files import WeightFilesError

    write_original(tmp_path / "orig", "glm4")
    shard = tmp_path / "orig/model-00002-of-00002.safetensors"
    with shard.open("r+b") as handle:
        handle.truncate(shard.stat().st_size - 1)
    with pytest.raises(WeightFilesError, match="model-00002-of-00002.safetensors: cut short"):
        convert_checkpoint(tmp_path / "orig", tmp_path / "native")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orig"]


def test_unexpected_tensor_is_refused() -> None:
    config = ORIGINAL_CONFIGS["glm4"]
    with pytest.raises(ValueError, match="unexpected tensor"):
        convert_state_dict_shard({"transformer.vision.patch.weight": torch.zeros(2)}, config)
    bad = {"transformer.encoder.layers.0.self_attention.query_key_value.weight": torch.zeros(10, 64)}
    with pytest.raises(ValueError, match="rows"):
        convert_state_dict_shard(bad, config)


def test_conversion_goes_shard_by_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, state = write_original(tmp_path / "orig", "chatglm3", "bin")
    calls: list[set[str]] = []

    def spy(tensors: dict[str, torch.Tensor], original: dict[str, Any]) -> dict[str, torch.Tensor]:
        calls.append(set(tensors))
        return convert_state_dict_shard(tensors, original)

    monkeypatch.setattr(checkpoints, "convert_state_dict_shard", spy)
    dst = convert_checkpoint(tmp_path / "orig", tmp_path / "native")
    assert len(calls) == 2 and all(0 < len(keys) < len(state) for keys in calls)
    assert calls[0] | calls[1] == set(state) and not calls[0] & calls[1]
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                         "model-00002-of-00002.safetensors"]
    assert all((dst / name).exists() for name in index["weight_map"].values())


def test_dtype_generation_config_and_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, GenerationConfig, PreTrainedTokenizerFast

    write_original(tmp_path / "orig", "glm4")
    (tmp_path / "orig" / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [120, 121, 122], "pad_token_id": 120, "do_sample": True, "temperature": 0.8, "top_p": 0.8,
         "max_length": 128000, "transformers_version": "4.40.2"}), encoding="utf-8")
    backend = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "world": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    dst = convert_checkpoint(tmp_path / "orig", tmp_path / "native", dtype="bfloat16", tokenizer=tokenizer)
    assert json.loads((dst / "config.json").read_text())["dtype"] == "bfloat16"
    from safetensors import safe_open
    with safe_open(str(dst / "model-00001-of-00002.safetensors"), framework="pt") as handle:
        assert all(handle.get_tensor(k).dtype == torch.bfloat16 for k in handle.keys())
    generation = GenerationConfig.from_pretrained(dst)
    assert generation.eos_token_id == [120, 121, 122] and generation.temperature == 0.8
    assert AutoTokenizer.from_pretrained(dst)("hello world")["input_ids"] == [1, 2]
    with pytest.raises(ValueError, match="dtype"):
        convert_checkpoint(tmp_path / "orig", tmp_path / "other", dtype="int8")


def test_fetch_converts_an_original_glm4_folder_with_its_real_tokenizer(tmp_path: Path) -> None:
    """`source: path` on an original-layout GLM-4 folder gives a native folder and tokenizer, no remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.model_folders import fetch_model_folder

    ranks = shared_data("tokenizers/glm-4-9b-chat/tokenizer.model")
    config = {**ORIGINAL_CONFIGS["glm4"], "padded_vocab_size": 151552, "eos_token_id": [151329, 151336, 151338],
              "pad_token_id": 151329}
    src = tmp_path / "glm-4-9b-chat"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(config))
    save_file(original_state(config), src / "model.safetensors")
    (src / "tokenizer.model").write_bytes(ranks.read_bytes())
    out = fetch_model_folder("glm4", {"source": "path", "path": str(src)}, tmp_path / "native", tmp_path / "cache")
    assert not out.is_symlink() and is_native(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "GlmForCausalLM"
    assert tokenizer.convert_tokens_to_ids(["[gMASK]", "<sop>", "<|user|>"]) == [151331, 151333, 151336]
    # A native folder is linked, not copied: file by file.
    again = fetch_model_folder("glm4", {"source": "path", "path": str(out)}, tmp_path / "linked", tmp_path / "cache")
    assert (again / "model.safetensors").is_symlink()
    assert (again / "model.safetensors").resolve() == (out / "model.safetensors").resolve()


def test_fetch_converts_an_original_chatglm3_folder_with_its_real_tokenizer(tmp_path: Path) -> None:
    """ChatGLM3: the SentencePiece tokenizer (64,798 ids) under a model vocabulary padded to 65,024; generation stops
    at </s>, <|user|> and <|observation|>; padded rows of the output layer are never produced by the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from helpers.model_folders import fetch_model_folder

    sentencepiece = shared_data("tokenizers/chatglm3-6b/tokenizer.model")
    config = {**ORIGINAL_CONFIGS["chatglm3"], "padded_vocab_size": 65024}
    src = tmp_path / "chatglm3-6b"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(config))
    state = original_state(config)
    save_file(state, src / "model.safetensors")
    (src / "tokenizer.model").write_bytes(sentencepiece.read_bytes())
    out = fetch_model_folder("chatglm3", {"source": "path", "path": str(src)}, tmp_path / "native", tmp_path / "cache")
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "GlmForCausalLM" and model.config.vocab_size == 65024
    assert tokenizer.convert_tokens_to_ids(["[gMASK]", "sop", "<|user|>", "<|observation|>"]) == [64790, 64792, 64795, 64797]
    assert len(tokenizer) <= 65024
    assert GenerationConfig.from_pretrained(out).eos_token_id == [2, 64795, 64797]
    ids = torch.tensor([64790, 64792, 64795, *tokenizer.encode("你好，给我讲个笑话", add_special_tokens=False)])
    with torch.inference_mode():
        logits = model(ids[None]).logits[0]
    expected = reference_glm.forward(state, config, ids)
    assert logits.shape == (len(ids), 65024) and torch.allclose(logits, expected, atol=1e-4)
