"""Random scaled-down ChatGLM3 / GLM-4 checkpoints in the ORIGINAL on-disk layout (key names and non-size config values
as in the official config.json files), for the conversion tests and the remote-code stand-in
(tests/helpers/remote_code_model.py, which imports this module by its folder, so it imports nothing from tests/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

# Key names (and non-size values) as in the official config.json files; sizes scaled down.
COMMON = {
    "model_type": "chatglm", "architectures": ["ChatGLMModel"], "add_bias_linear": False, "add_qkv_bias": True,
    "apply_query_key_layer_scaling": True, "apply_residual_connection_post_layernorm": False,
    "attention_dropout": 0.0, "attention_softmax_in_fp32": True, "bias_dropout_fusion": True,
    "ffn_hidden_size": 96, "fp32_residual_connection": False, "hidden_dropout": 0.0, "hidden_size": 64,
    "kv_channels": 16, "multi_query_attention": True, "multi_query_group_num": 2, "num_attention_heads": 4,
    "num_layers": 2, "original_rope": True, "padded_vocab_size": 128, "post_layer_norm": True, "rmsnorm": True,
    "use_cache": True, "tie_word_embeddings": False,
}
ORIGINAL_CONFIGS: dict[str, dict[str, Any]] = {
    "glm4": {**COMMON, "_name_or_path": "THUDM/glm-4-9b-chat", "num_hidden_layers": 2, "rope_ratio": 500,
             "layernorm_epsilon": 1.5625e-07, "seq_length": 131072, "torch_dtype": "bfloat16",
             "eos_token_id": [120, 121, 122], "pad_token_id": 120},
    "chatglm3": {**COMMON, "_name_or_path": "THUDM/chatglm3-6b", "layernorm_epsilon": 1e-05, "seq_length": 8192,
                 "torch_dtype": "float16", "eos_token_id": 2, "pad_token_id": 0},
}
SEQ = 24  # long enough that wrong rotary frequencies or pairing show


def original_state(config: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.1, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std + mean

    hidden, ffn, vocab = config["hidden_size"], config["ffn_hidden_size"], config["padded_vocab_size"]
    qkv = (config["num_attention_heads"] + 2 * config["multi_query_group_num"]) * config["kv_channels"]
    state = {"transformer.embedding.word_embeddings.weight": rand(vocab, hidden, std=1.0)}
    for n in range(config["num_layers"]):
        p = f"transformer.encoder.layers.{n}."
        state |= {
            p + "input_layernorm.weight": rand(hidden, mean=1.0),
            p + "self_attention.query_key_value.weight": rand(qkv, hidden, std=0.3),
            p + "self_attention.query_key_value.bias": rand(qkv, std=0.3),
            p + "self_attention.dense.weight": rand(hidden, config["num_attention_heads"] * config["kv_channels"]),
            p + "post_attention_layernorm.weight": rand(hidden, mean=1.0),
            p + "mlp.dense_h_to_4h.weight": rand(2 * ffn, hidden, std=0.2),
            p + "mlp.dense_4h_to_h.weight": rand(hidden, ffn),
        }
    state["transformer.encoder.final_layernorm.weight"] = rand(hidden, mean=1.0)
    state["transformer.output_layer.weight"] = rand(vocab, hidden, std=0.2)
    if "rope_ratio" not in config:  # ChatGLM3 checkpoints carry the rotary buffer
        state["transformer.rotary_pos_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8)
    return state


def write_original(folder: Path, family: str, fmt: str = "safetensors",
                   drop: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An original-layout folder with two shards and an index; returns (config, state dict)."""
    config = ORIGINAL_CONFIGS[family]
    state = original_state(config)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2).replace("\n", "\r\n"), encoding="utf-8")
    keys = [k for k in state if k != drop]
    first = [k for k in keys if "layers.1." not in k and "final_layernorm" not in k and "output_layer" not in k]
    shards = [first, [k for k in keys if k not in first]]
    weight_map = {}
    for i, names in enumerate(shards, 1):
        if fmt == "safetensors":
            name = f"model-{i:05d}-of-00002.safetensors"
            save_file({k: state[k] for k in names}, str(folder / name), metadata={"format": "pt"})
        else:
            name = f"pytorch_model-{i:05d}-of-00002.bin"
            torch.save({k: state[k] for k in names}, folder / name)
        weight_map |= dict.fromkeys(names, name)
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    return config, state


def native_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids[None]).logits[0]
