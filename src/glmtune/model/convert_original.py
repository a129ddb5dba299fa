"""Convert ChatGLM3-6B / GLM-4-9B-chat checkpoints (remote-code "ChatGLMModel" layout) into native `GlmForCausalLM` folders.

Both families share one on-disk layout (`transformer.encoder.layers.N.self_attention.query_key_value.weight`, ...).
The mapping onto transformers' Glm architecture is a pure renaming plus one split:

- `query_key_value` rows are `[q (heads*kv_channels) | k (groups*kv_channels) | v (groups*kv_channels)]` -> q/k/v_proj;
- `dense_h_to_4h` output is chunked as `silu(first half) * second half`, and GlmMLP chunks `gate_up_proj` the same
  way (`gate, up = chunk(2)`, `up * silu(gate)`), so the tensor is kept as is;
- rotary: the original rotates the first `kv_channels // 2` dims of each head as interleaved pairs `(x0, x1)`
  with base `10000 * rope_ratio`; transformers' Glm does the same (`partial_rotary_factor=0.5`, interleaved
  `rotate_half`, `repeat_interleave`d cos/sin), so no q/k permutation is needed.

Conversion streams shard by shard (each output tensor depends on one input tensor only) and writes atomically.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GenerationConfig, GlmConfig, PreTrainedTokenizerFast

from glmtune import family as families
from glmtune.io import atomic_path
from glmtune.model.tokenizer_files import save_tokenizer
from glmtune.model.weight_files import weight_files

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LAYER = re.compile(r"transformer\.encoder\.layers\.(\d+)\.(.+)")
_LAYER_NAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "transformer.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "transformer.encoder.final_layernorm.weight": "model.norm.weight",
    "transformer.output_layer.weight": "lm_head.weight",
}
_DROPPED = {"transformer.rotary_pos_emb.inv_freq"}
_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "added_tokens.json")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8-sig"))  # ChatGLM3's config.json is CRLF; json accepts that


def is_native(folder: str | Path) -> bool:
    """True when `folder` already holds a native transformers Glm model (to be used unchanged)."""
    return families.is_native_config(_read_json(Path(folder) / "config.json"))


def original_family(config: dict[str, Any]) -> str:
    """The family ("glm4", "chatglm3", ...) of an original (remote-code) config.json, by glmtune.family's signs."""
    found = families.recognise_original(config)
    if found is None:
        known = ", ".join(f.title for f in families.FAMILIES.values() if f.original is not None)
        raise ValueError(f"cannot tell the model family ({known}) of this config.json "
                         f"(_name_or_path={config.get('_name_or_path', '')!r}, "
                         f"padded_vocab_size={config.get('padded_vocab_size')!r})")
    return found


def _check_supported(original: dict[str, Any]) -> None:
    unsupported = {"add_bias_linear": True, "rmsnorm": False, "post_layer_norm": False,
                   "apply_residual_connection_post_layernorm": True}
    for key, bad in unsupported.items():
        if original.get(key, not bad) == bad:
            raise ValueError(f"original config has {key}={bad}; GlmForCausalLM cannot represent it")


def _heads(original: dict[str, Any]) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dim) of the original config."""
    heads = original["num_attention_heads"]
    groups = original["multi_query_group_num"] if original.get("multi_query_attention") else heads
    return heads, groups, original.get("kv_channels") or original["hidden_size"] // heads


def native_config(original: dict[str, Any]) -> GlmConfig:
    """The GlmConfig equivalent to an original ChatGLM3 / GLM-4 config.json."""
    _check_supported(original)
    heads, groups, head_dim = _heads(original)
    eos = original.get("eos_token_id")
    return GlmConfig(
        vocab_size=original["padded_vocab_size"], hidden_size=original["hidden_size"],
        intermediate_size=original["ffn_hidden_size"],
        num_hidden_layers=original.get("num_layers") or original["num_hidden_layers"],
        num_attention_heads=heads, num_key_value_heads=groups, head_dim=head_dim, hidden_act="silu",
        attention_dropout=float(original.get("attention_dropout", 0.0)),
        max_position_embeddings=original.get("seq_length", 8192),
        rms_norm_eps=original["layernorm_epsilon"], attention_bias=bool(original.get("add_qkv_bias", False)),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0 * float(original.get("rope_ratio", 1)),
                         "partial_rotary_factor": 0.5},
        pad_token_id=original.get("pad_token_id"), eos_token_id=eos if eos is not None else [],
        tie_word_embeddings=False, architectures=["GlmForCausalLM"],
    )


def _expected_keys(original: dict[str, Any]) -> set[str]:
    per_layer = ["input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.o_proj.weight",
                 "mlp.gate_up_proj.weight", "mlp.down_proj.weight"]
    parts = ("weight", "bias") if original.get("add_qkv_bias") else ("weight",)
    per_layer += [f"self_attn.{p}_proj.{part}" for p in "qkv" for part in parts]
    layers = original.get("num_layers") or original["num_hidden_layers"]
    return set(_TOP_NAMES.values()) | {f"model.layers.{i}.{name}" for i in range(layers) for name in per_layer}


def convert_state_dict_shard(tensors: dict[str, torch.Tensor], original: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename (and split the fused qkv of) one shard's tensors into GlmForCausalLM names. Unknown keys raise."""
    heads, groups, head_dim = _heads(original)
    sizes = [heads * head_dim, groups * head_dim, groups * head_dim]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if key in _DROPPED:
            continue
        if key in _TOP_NAMES:
            out[_TOP_NAMES[key]] = tensor
            continue
        match = _LAYER.fullmatch(key)
        if match is None:
            raise ValueError(f"unexpected tensor {key!r} in a ChatGLM checkpoint")
        prefix, name = f"model.layers.{match[1]}.", match[2]
        if name in _LAYER_NAMES:
            out[prefix + _LAYER_NAMES[name]] = tensor
        elif name in ("self_attention.query_key_value.weight", "self_attention.query_key_value.bias"):
            if tensor.shape[0] != sum(sizes):
                raise ValueError(f"{key}: {tensor.shape[0]} rows, expected {sum(sizes)} "
                                 f"({heads} query heads + 2 x {groups} key/value groups of {head_dim})")
            part = name.rsplit(".", 1)[1]
            for proj, piece in zip("qkv", torch.split(tensor, sizes, dim=0)):
                out[f"{prefix}self_attn.{proj}_proj.{part}"] = piece.clone()  # own storage: safetensors refuses views
        else:
            raise ValueError(f"unexpected tensor {key!r} in a ChatGLM checkpoint")
    return out


def _read_shard(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def _iter_converted(src: Path, original: dict[str, Any], dtype: torch.dtype | None) -> Iterator[dict[str, torch.Tensor]]:
    for path in weight_files(src):  # safetensors preferred, in index order, lengths checked
        converted = convert_state_dict_shard(_read_shard(path), original)
        if dtype is not None:
            converted = {key: value.to(dtype) for key, value in converted.items()}
        yield {key: value.contiguous() for key, value in converted.items()}


def _generation_config(src: Path, original: dict[str, Any], family: str) -> GenerationConfig:
    settings = _read_json(src / "generation_config.json") if (src / "generation_config.json").exists() else {}
    settings.pop("transformers_version", None)
    eos = settings.get("eos_token_id", original.get("eos_token_id"))
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    stops = families.get_family(family).generation_stop_ids()
    if stops and original["padded_vocab_size"] > max(stops):
        eos += [token for token in stops if token not in eos]
    settings["eos_token_id"] = eos
    settings.setdefault("pad_token_id", original.get("pad_token_id"))
    return GenerationConfig(**settings)


def convert_checkpoint(src: str | Path, dst: str | Path, dtype: str | None = None,
                       tokenizer: PreTrainedTokenizerFast | None = None, copy_tokenizer_files: bool = False) -> Path:
    """Write a native GlmForCausalLM folder at `dst` from an original ChatGLM3 / GLM-4 folder `src`; return its path.

    A folder that is already native is returned unchanged (`src`; nothing is written). Shards are read and
    written one at a time; `dtype` ("float32", "bfloat16", "float16") casts the weights, None keeps them.
    `dst` appears only when complete. `tokenizer`, when given, is saved into `dst`; `copy_tokenizer_files`
    copies the original's tokenizer files verbatim instead (they may need remote code).
    """
    src, dst = Path(src), Path(dst)
    if is_native(src):
        return src
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or None, got {dtype!r}")
    original = _read_json(src / "config.json")
    family = original_family(original)
    config = native_config(original)
    with atomic_path(dst) as tmp:
        tmp.mkdir()
        weight_map: dict[str, str] = {}
        written: list[Path] = []
        total_size, found_dtype = 0, None
        for number, tensors in enumerate(_iter_converted(src, original, DTYPES.get(dtype or ""))):
            if not tensors:
                continue
            clash = weight_map.keys() & tensors.keys()
            if clash:
                raise ValueError(f"{src}: tensors found in more than one shard: {sorted(clash)[:3]}")
            path = tmp / f"part-{number}.safetensors"
            save_file(tensors, str(path), metadata={"format": "pt"})
            written.append(path)
            weight_map.update(dict.fromkeys(tensors, path.name))
            total_size += sum(t.numel() * t.element_size() for t in tensors.values())
            found_dtype = found_dtype or next(t.dtype for t in tensors.values())
        missing = _expected_keys(original) - weight_map.keys()
        if missing:
            raise ValueError(f"{src}: checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
        names = {p.name: f"model-{i:05d}-of-{len(written):05d}.safetensors" for i, p in enumerate(written, 1)}
        if len(written) == 1:
            names = {written[0].name: "model.safetensors"}
        for path in written:
            path.rename(tmp / names[path.name])
        if len(written) > 1:
            index = {"metadata": {"total_size": total_size},
                     "weight_map": {key: names[name] for key, name in sorted(weight_map.items())}}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        config.dtype = DTYPES.get(dtype or "", found_dtype)
        config.save_pretrained(tmp)
        _generation_config(src, original, family).save_pretrained(tmp)
        if copy_tokenizer_files:
            for name in _TOKENIZER_FILES:
                if (src / name).exists():
                    shutil.copy2(src / name, tmp / name)
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp)
    return dst


def to_native(src: str | Path, dst: str | Path, dtype: str | None = None) -> Path:
    """An original ChatGLM3 / GLM-4 folder (weights + tokenizer.model) as a native folder with a fast tokenizer."""
    from glmtune.model.tokenizers import tokenizer_from_model_file

    family = original_family(_read_json(Path(src) / "config.json"))
    return convert_checkpoint(src, dst, dtype, tokenizer=tokenizer_from_model_file(src, family))
