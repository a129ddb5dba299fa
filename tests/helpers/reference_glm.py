"""An independent reference of the original ChatGLM2/3 / GLM-4 forward pass (THUDM "ChatGLMModel"), test-only.

Written from the architecture, not from transformers' Glm code: it runs directly on the ORIGINAL state dict
(`transformer.encoder.layers.N.self_attention.query_key_value.weight`, ...) and original config.json keys.
Rotary embedding uses complex multiplication on interleaved pairs, a formulation unlike both the original
code's and transformers'.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate the first half of the last dim of x [seq, heads, head_dim] as interleaved pairs (x0 + i*x1)."""
    head_dim = x.shape[-1]
    rot = head_dim // 2                                   # RotaryEmbedding(kv_channels // 2)
    theta = base ** (-torch.arange(0, rot, 2, dtype=torch.float64) / rot)   # rot/2 frequencies
    angles = positions.to(torch.float64)[:, None] * theta[None, :]          # [seq, rot/2]
    phase = torch.polar(torch.ones_like(angles), angles)[:, None, :]        # [seq, 1, rot/2]
    pairs = x[..., :rot].to(torch.float64).reshape(*x.shape[:-1], rot // 2, 2)
    rotated = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * phase).reshape(*x.shape[:-1], rot)
    return torch.cat([rotated.to(x.dtype), x[..., rot:]], dim=-1)


def forward(state: dict[str, torch.Tensor], config: dict[str, Any], input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [seq, padded_vocab] for one sequence of token ids [seq]."""
    heads = config["num_attention_heads"]
    groups = config["multi_query_group_num"] if config.get("multi_query_attention") else heads
    head_dim = config["kv_channels"]
    eps = config["layernorm_epsilon"]
    base = 10000.0 * config.get("rope_ratio", 1)
    seq = input_ids.shape[0]
    positions = torch.arange(seq)
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()

    x = state["transformer.embedding.word_embeddings.weight"][input_ids]
    for n in range(config["num_layers"]):
        p = f"transformer.encoder.layers.{n}."
        h = rms_norm(x, state[p + "input_layernorm.weight"], eps)
        qkv = h @ state[p + "self_attention.query_key_value.weight"].T
        if config.get("add_qkv_bias"):
            qkv = qkv + state[p + "self_attention.query_key_value.bias"]
        q = qkv[:, : heads * head_dim].reshape(seq, heads, head_dim)
        k = qkv[:, heads * head_dim: (heads + groups) * head_dim].reshape(seq, groups, head_dim)
        v = qkv[:, (heads + groups) * head_dim:].reshape(seq, groups, head_dim)
        q, k = rotary(q, positions, base), rotary(k, positions, base)
        outputs = []
        for head in range(heads):
            group = head // (heads // groups)             # consecutive query heads share one key/value group
            scores = (q[:, head] @ k[:, group].T) / math.sqrt(head_dim)
            scores = scores.masked_fill(~causal, float("-inf"))
            outputs.append(torch.softmax(scores, dim=-1) @ v[:, group])
        attention = torch.cat(outputs, dim=-1) @ state[p + "self_attention.dense.weight"].T
        x = x + attention
        h = rms_norm(x, state[p + "post_attention_layernorm.weight"], eps)
        first, second = (h @ state[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, dim=-1)
        x = x + (F.silu(first) * second) @ state[p + "mlp.dense_4h_to_h.weight"].T
    x = rms_norm(x, state["transformer.encoder.final_layernorm.weight"], eps)
    return x @ state["transformer.output_layer.weight"].T
