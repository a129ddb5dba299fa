"""The forward pass of a GlmForCausalLM read layer by layer from its shards, in fp32, never holding the model.

GlmModel.forward's steps, one module at a time: the prompts' embedding rows (read alone), then for each decoder
layer a `GlmDecoderLayer(config, i)` built on the meta device, given its weights (assign: no second copy), applied
to every prompt's hidden states and dropped; the final norm; the head in chunks of rows. Peak memory: one layer in
fp32 plus one head chunk, whatever the model's depth. transformers' own layer, rotary embedding and causal mask
are used, so this equals the whole model's forward (tested).

`weight(name)` gives the fp32 weight the model runs with (the base's, or the merged one); `deltas` (base weight
name -> lora_math.Delta) adds the LoRA on the fly as PEFT's LoRA Linear does: base(x) + B(A(x)) * scaling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from glmtune.export.lora_math import Delta
from glmtune.export.shards import Weights

HEAD_ROWS = 8192  # vocabulary rows of the head multiplied at once (8192 x 4096 in fp32: 128 MB)


class LoraLinear(nn.Module):
    """A Linear with a LoRA beside it, PEFT's forward: base(x) + lora_B(lora_A(x)) * scaling (no dropout: eval)."""

    def __init__(self, base: nn.Linear, delta: Delta) -> None:
        super().__init__()
        self.base, self.delta = base, delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lora = nn.functional.linear(nn.functional.linear(x, self.delta.lora_a), self.delta.lora_b)
        return self.base(x) + lora * self.delta.scaling


def streamed_logits(config: object, weights: Weights, weight: Callable[[str], torch.Tensor], prompts: list[list[int]],
                    deltas: dict[str, Delta] | None = None) -> list[torch.Tensor]:
    """Each prompt's logits (1 x length x vocabulary, fp32), the model read one layer at a time."""
    from transformers.masking_utils import create_causal_mask
    from transformers.models.glm.modeling_glm import GlmDecoderLayer, GlmRMSNorm, GlmRotaryEmbedding

    config._attn_implementation = "sdpa"  # what from_pretrained picks on a CPU and on a GPU without flash-attn
    embed = "model.embed_tokens.weight"
    hidden = [_embedding_rows(weights, embed, ids) for ids in prompts]
    positions = [torch.arange(len(ids)).unsqueeze(0) for ids in prompts]
    rotary = GlmRotaryEmbedding(config=config)
    with torch.inference_mode():
        rope = [rotary(h, p) for h, p in zip(hidden, positions)]
        masks = [create_causal_mask(config=config, inputs_embeds=h, attention_mask=None, past_key_values=None,
                                    position_ids=p) for h, p in zip(hidden, positions)]
        for index in range(config.num_hidden_layers):
            layer = _load_layer(GlmDecoderLayer, config, index, weight, deltas or {})
            hidden = [layer(h, attention_mask=m, position_embeddings=r, position_ids=p)
                      for h, m, r, p in zip(hidden, masks, rope, positions)]
            del layer
        norm = GlmRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        norm.weight = nn.Parameter(weight("model.norm.weight"), requires_grad=False)
        hidden = [norm(h) for h in hidden]
        head = "lm_head.weight" if "lm_head.weight" in weights.entries else embed  # tied embeddings
        return _head(weights, head, hidden)


def _embedding_rows(weights: Weights, name: str, ids: list[int]) -> torch.Tensor:
    """The embedding of a prompt from the rows its tokens use (each row read alone; the table is never loaded)."""
    rows = [weights.rows(name, token, token + 1) for token in ids]
    return torch.cat(rows).to(torch.float32).unsqueeze(0)


def _load_layer(layer_class: type, config: object, index: int, weight: Callable[[str], torch.Tensor],
                deltas: dict[str, Delta]) -> nn.Module:
    with torch.device("meta"):
        layer = layer_class(config, index)
    prefix = f"model.layers.{index}."
    layer.load_state_dict({key: weight(prefix + key) for key in layer.state_dict()}, assign=True, strict=True)
    for module_name, module in list(layer.named_modules()):
        delta = deltas.get(f"{prefix}{module_name}.weight")
        if delta is not None:
            parent, _, child = module_name.rpartition(".")
            setattr(layer.get_submodule(parent) if parent else layer, child, LoraLinear(module, delta))
    return layer.eval()


def _head(weights: Weights, name: str, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
    """hidden @ W.T, W read HEAD_ROWS vocabulary rows at a time."""
    vocabulary = weights.entries[name].shape[0]
    parts: list[list[torch.Tensor]] = [[] for _ in hidden]
    for start in range(0, vocabulary, HEAD_ROWS):
        chunk = weights.rows(name, start, min(start + HEAD_ROWS, vocabulary)).to(torch.float32)
        for part, h in zip(parts, hidden):
            part.append(nn.functional.linear(h, chunk))
    return [torch.cat(part, dim=-1) for part in parts]
