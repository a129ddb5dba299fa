"""A stand-in for an original ChatGLM / GLM-4 checkpoint WITH its remote modeling code, and the stages run on it.

The real ChatGLM3-6B / GLM-4-9B-chat remote code (modeling_chatglm.py) cannot be downloaded here, so the
checkpoint folder gets a small modeling module of our own: the original on-disk layout and module names
(`transformer.encoder.layers.N.self_attention.query_key_value`, ...), a `config.json` whose `auto_map` points at
it, and the forward pass of tests/helpers/reference_glm.py (copied beside it and imported relatively, as the real code
imports its configuration). No KV cache: generation recomputes the whole sequence each step.

Also runnable as a script, so the same stages run under another interpreter (the pinned old transformers):

    python tests/helpers/remote_code_model.py MODEL_DIR SPLITS_DIR WORK_DIR     # prints one JSON object
    python tests/helpers/remote_code_model.py MODEL_DIR SPLITS_DIR WORK_DIR --checkpointing    # checkpointed_lora
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# A tiny tiktoken rank file: every byte, plus a few merges so the BPE has some.
MERGED = (b"th", b"he", b"the", b"in", b"er", b"an", b"re", b"on")
RANKS = [bytes([b]) for b in range(256)] + list(MERGED)
FIRST_SPECIAL = len(RANKS)  # <|endoftext|>, [MASK], [gMASK], [sMASK], <sop>, <eop>, <|system|>, <|user|>, ...
ENDOFTEXT, USER, OBSERVATION = FIRST_SPECIAL, FIRST_SPECIAL + 7, FIRST_SPECIAL + 9

CONFIG: dict[str, Any] = {
    "_name_or_path": "THUDM/glm-4-9b-chat", "model_type": "chatglm", "architectures": ["ChatGLMModel"],
    "auto_map": {
        "AutoConfig": "configuration_chatglm.ChatGLMConfig",
        "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    },
    "add_bias_linear": False, "add_qkv_bias": True, "apply_residual_connection_post_layernorm": False,
    "attention_dropout": 0.0, "ffn_hidden_size": 96, "hidden_dropout": 0.0, "hidden_size": 64, "kv_channels": 16,
    "layernorm_epsilon": 1.5625e-07, "multi_query_attention": True, "multi_query_group_num": 2,
    "num_attention_heads": 4, "num_layers": 2, "num_hidden_layers": 2, "padded_vocab_size": 288,
    "post_layer_norm": True, "rmsnorm": True, "rope_ratio": 500, "seq_length": 131072, "tie_word_embeddings": False,
    "torch_dtype": "float32", "use_cache": False, "eos_token_id": [ENDOFTEXT, USER, OBSERVATION],
    "pad_token_id": ENDOFTEXT,
}

CONFIGURATION_PY = '''"""Stand-in for THUDM's configuration_chatglm.py (test-only)."""
from transformers import PretrainedConfig


class ChatGLMConfig(PretrainedConfig):
    model_type = "chatglm"

    def __init__(self, num_layers=2, padded_vocab_size=288, hidden_size=64, ffn_hidden_size=96, kv_channels=16,
                 num_attention_heads=4, multi_query_attention=True, multi_query_group_num=2, layernorm_epsilon=1e-5,
                 rope_ratio=1, add_qkv_bias=True, seq_length=8192, **kwargs):
        kwargs.pop("num_hidden_layers", None)
        self.num_layers = self.num_hidden_layers = num_layers
        self.padded_vocab_size = self.vocab_size = padded_vocab_size
        self.hidden_size, self.ffn_hidden_size, self.kv_channels = hidden_size, ffn_hidden_size, kv_channels
        self.num_attention_heads, self.multi_query_attention = num_attention_heads, multi_query_attention
        self.multi_query_group_num, self.layernorm_epsilon = multi_query_group_num, layernorm_epsilon
        self.rope_ratio, self.add_qkv_bias, self.seq_length = rope_ratio, add_qkv_bias, seq_length
        super().__init__(**kwargs)
'''

MODELING_PY = '''"""Stand-in for THUDM's modeling_chatglm.py (test-only): the original module names, reference_glm's math, no KV cache."""
import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from transformers import PreTrainedModel
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_chatglm import ChatGLMConfig
from .reference_glm import rms_norm, rotary


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class SelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.groups = config.multi_query_group_num if config.multi_query_attention else self.heads
        self.head_dim = config.kv_channels
        self.base = 10000.0 * config.rope_ratio
        width = (self.heads + 2 * self.groups) * self.head_dim
        self.query_key_value = nn.Linear(config.hidden_size, width, bias=config.add_qkv_bias)
        self.dense = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x, allowed):
        batch, seq, _ = x.shape
        sizes = [self.heads * self.head_dim, self.groups * self.head_dim, self.groups * self.head_dim]
        q, k, v = self.query_key_value(x).split(sizes, dim=-1)
        positions = torch.arange(seq)  # as the original: positions do not skip left padding
        q = rotary(q.reshape(batch, seq, self.heads, self.head_dim), positions, self.base)
        k = rotary(k.reshape(batch, seq, self.groups, self.head_dim), positions, self.base)
        k = k.repeat_interleave(self.heads // self.groups, dim=2)  # consecutive query heads share a group
        v = v.reshape(batch, seq, self.groups, self.head_dim).repeat_interleave(self.heads // self.groups, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
        out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
        return self.dense(out.reshape(batch, seq, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, 2 * config.ffn_hidden_size, bias=False)
        self.dense_4h_to_h = nn.Linear(config.ffn_hidden_size, config.hidden_size, bias=False)

    def forward(self, x):
        first, second = self.dense_h_to_4h(x).chunk(2, dim=-1)
        return self.dense_4h_to_h(F.silu(first) * second)


class GLMBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.layernorm_epsilon)
        self.self_attention = SelfAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.layernorm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, allowed):
        x = x + self.self_attention(self.input_layernorm(x), allowed)
        return x + self.mlp(self.post_attention_layernorm(x))


class Embedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)


class GLMTransformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(GLMBlock(config) for _ in range(config.num_layers))
        self.final_layernorm = RMSNorm(config.hidden_size, config.layernorm_epsilon)
        self.gradient_checkpointing = False


class ChatGLMModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embedding = Embedding(config)
        self.encoder = GLMTransformer(config)
        self.output_layer = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)

    def forward(self, input_ids, attention_mask=None):
        seq = input_ids.shape[1]
        allowed = torch.ones(seq, seq, dtype=torch.bool, device=input_ids.device).tril()[None]
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, :].bool()
        x = self.embedding.word_embeddings(input_ids)
        for layer in self.encoder.layers:
            if self.encoder.gradient_checkpointing and self.training:
                # ChatGLM3's call names no use_reentrant, so torch checkpoints reentrantly, as here
                x = torch.utils.checkpoint.checkpoint(layer, x, allowed, use_reentrant=True)
            else:
                x = layer(x, allowed)
        return self.output_layer(self.encoder.final_layernorm(x))


class ChatGLMPreTrainedModel(PreTrainedModel):
    config_class = ChatGLMConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["GLMBlock"]
    supports_gradient_checkpointing = True

    def _set_gradient_checkpointing(self, module, value=False):  # the original's hook, of transformers < 4.35
        if isinstance(module, GLMTransformer):
            module.gradient_checkpointing = value

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class ChatGLMForConditionalGeneration(ChatGLMPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.transformer = ChatGLMModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.embedding.word_embeddings

    def set_input_embeddings(self, value):
        self.transformer.embedding.word_embeddings = value

    def get_output_embeddings(self):
        return self.transformer.output_layer

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None, **kwargs):
        logits = self.transformer(input_ids, attention_mask)
        loss = None
        if labels is not None:  # shifted inside, as the original
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}  # no cache: the whole sequence each step
'''

# The original tokenizer is remote code too; this one must never run (glmtune uses its own fast tokenizer).
TOKENIZATION_PY = '''raise ImportError("tokenization_chatglm.py must not be used: glmtune builds its own fast tokenizer")
'''
TOKENIZER_CONFIG = {"auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", None]},
                    "tokenizer_class": "ChatGLM4Tokenizer", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}


def write_remote_checkpoint(folder: Path) -> dict[str, Any]:
    """An original-layout GLM-4 folder with remote code, random weights and a tiny tokenizer.model; its state dict."""
    from safetensors.torch import save_file

    sys.path.insert(0, str(HERE))
    from original_checkpoints import original_state

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2), encoding="utf-8")
    (folder / "configuration_chatglm.py").write_text(CONFIGURATION_PY, encoding="utf-8")
    (folder / "modeling_chatglm.py").write_text(MODELING_PY, encoding="utf-8")
    shutil.copyfile(HERE / "reference_glm.py", folder / "reference_glm.py")
    (folder / "tokenization_chatglm.py").write_text(TOKENIZATION_PY, encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG), encoding="utf-8")
    (folder / "tokenizer.model").write_text(
        "".join(f"{base64.b64encode(token).decode()} {rank}\n" for rank, token in enumerate(RANKS)), encoding="ascii")
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": CONFIG["eos_token_id"],
                                                               "pad_token_id": ENDOFTEXT}), encoding="utf-8")
    state = original_state(CONFIG)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return state


def write_splits(folder: Path) -> Path:
    """Tiny canonical conversations (ASCII, so a byte-level tokenizer keeps them short): a learnable mapping."""
    colors = {"red": "warm", "blue": "calm", "green": "fresh", "black": "classic", "white": "clean", "pink": "sweet"}

    def row(color: str, mood: str) -> str:
        return json.dumps({"conversations": [
            {"role": "user", "content": f"describe a {color} dress", "loss": False},
            {"role": "assistant", "content": f"the {color} dress is {mood} and easy to wear", "loss": True},
        ]})

    folder.mkdir(parents=True)
    rows = [row(c, m) for c, m in colors.items()]
    (folder / "train.jsonl").write_text("\n".join(rows * 4) + "\n", encoding="utf-8")
    (folder / "validation.jsonl").write_text("\n".join(rows[:2]) + "\n", encoding="utf-8")
    (folder / "test.jsonl").write_text("\n".join(rows[2:4]) + "\n", encoding="utf-8")
    return folder


# Overrides of the schema's train defaults (tests/helpers/settings.py fills in the rest).
TRAIN_SETTINGS = {
    "method": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["query_key_value"]},
    "max_steps": 24, "batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 1e-2, "lr_scheduler": "constant",
    "warmup_steps": 0, "weight_decay": 0.0, "logging_steps": 4, "save_steps": 24, "seed": 0,
}


def tokenize_for_training(model_dir: Path, splits: Path, work: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The train and validation splits tokenized for the stand-in (the folders, and the stats)."""
    from glmtune.tokenize.splits import tokenize_splits
    from helpers.settings import model_settings, tokenize_settings

    tokenized = {"train": work / "tok" / "train", "validation": work / "tok" / "validation"}
    stats = tokenize_splits({s: splits / f"{s}.jsonl" for s in tokenized}, tokenized, work / "tok" / "stats.json",
                            model_dir, tokenize_settings(max_input_length=64, max_output_length=64),
                            model_settings(template="glm4", trust_remote_code=True))
    return tokenized, stats


def checkpointed_lora(model_dir: Path, splits: Path, work: Path) -> dict[str, Any]:
    """LoRA with train.gradient_checkpointing on the original code, which checkpoints its layers reentrantly: the
    adapter's lora_B weights (zero at the start) that training left at zero, i.e. that got no gradient."""
    import transformers
    from safetensors.torch import load_file

    from glmtune.train.trainer import train_model
    from helpers.settings import train_settings

    tokenized, _ = tokenize_for_training(model_dir, splits, work)
    settings = train_settings(**{**TRAIN_SETTINGS, "max_steps": 2, "save_steps": 100, "gradient_checkpointing": True})
    train_model(tokenized["train"], tokenized["validation"], model_dir.resolve(), work / "adapter", work / "log.jsonl",
                work / "loss.png", work / "checkpoints", settings, trust_remote_code=True, family="glm4")
    weights = load_file(work / "adapter" / "adapter_model.safetensors")
    lora_b = sorted(name for name in weights if "lora_B" in name)
    return {"transformers": transformers.__version__, "lora_b": len(lora_b),
            "untrained": [name for name in lora_b if not weights[name].abs().sum()]}


def run_stages(model_dir: Path, splits: Path, work: Path) -> dict[str, Any]:
    """tokenize -> LoRA training -> evaluation (generation) -> export merge, with trust_remote_code; what came out."""
    import transformers
    from transformers import AutoModelForCausalLM

    from glmtune.evaluate.predict import evaluate_model
    from glmtune.export.merge import merge_adapter
    from glmtune.evaluate.generation import generate
    from glmtune.model.loading import load_trained
    from glmtune.io import read_jsonl
    from glmtune.chat_template import get_template
    from glmtune.train.trainer import train_model
    from helpers.settings import evaluate_settings, export_settings, model_settings, tokenize_settings, train_settings

    model = model_settings(template="glm4", trust_remote_code=True)
    tokenized, stats = tokenize_for_training(model_dir, splits, work)
    summary = train_model(tokenized["train"], tokenized["validation"], model_dir.resolve(), work / "adapter",
                         work / "log.jsonl", work / "loss.png", work / "checkpoints", train_settings(**TRAIN_SETTINGS),
                         trust_remote_code=True, family="glm4")
    adapter_config = json.loads((work / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    scores = evaluate_model(model_dir=work / "adapter", test_path=splits / "test.jsonl",
                            predictions_path=work / "eval" / "predictions.jsonl", scores_path=work / "eval" / "scores.json",
                            settings=evaluate_settings(max_samples=2, batch_size=2, max_new_tokens=6), model=model,
                            tokenize=tokenize_settings(max_input_length=64), base_model=model_dir)
    worst = merge_adapter(work / "adapter", model_dir, work / "merged", splits / "test.jsonl",
                          export_settings(tolerance=1e-4), model)
    merged, tokenizer = load_trained(work / "merged", trust_remote_code=True)
    again = generate(merged, tokenizer, get_template("glm4"), [tokenizer.encode("describe", add_special_tokens=False)],
                     max_new_tokens=3, progress=False)
    reloaded = AutoModelForCausalLM.from_pretrained(str(work / "merged"), trust_remote_code=True)
    return {
        "transformers": transformers.__version__, "samples": stats["splits"]["train"]["samples"],
        "losses": [row["loss"] for row in read_jsonl(work / "log.jsonl") if "loss" in row], "steps": summary["steps"],
        "lora_targets": sorted(adapter_config["target_modules"]),
        "predictions": [row["prediction"] for row in read_jsonl(work / "eval" / "predictions.jsonl")],
        "num_samples": scores["num_samples"], "merge_worst": worst, "merged_generation": again,
        "merged_files": sorted(p.name for p in (work / "merged").iterdir()),
        "merged_auto_map": json.loads((work / "merged" / "config.json").read_text(encoding="utf-8")).get("auto_map"),
        "reloaded_class": type(reloaded).__name__,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))  # tests/, for helpers.settings
    model_arg, splits_arg, work_arg = map(Path, sys.argv[1:4])
    run = checkpointed_lora if sys.argv[4:] == ["--checkpointing"] else run_stages
    print(json.dumps(run(model_arg, splits_arg, work_arg)))
