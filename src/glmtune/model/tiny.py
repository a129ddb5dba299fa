"""The embedded default model: a tiny random GLM-4 (`GlmForCausalLM`) and a locally trained tokenizer.

It lets the whole workflow run offline on a CPU in minutes while exercising the real architecture,
the real special tokens and the real chat layout. Any registered family (glmtune.family) can be built so: the model
is the family's architecture (Family.architecture), its tokenizer carries the family's chat special tokens and chat
template, its generation stops at the family's stop tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from glmtune.chat_template import get_template, stop_token_ids
from glmtune.family import get_family
from glmtune.io import atomic_path, read_jsonl
from glmtune.model.tokenizer_files import save_tokenizer
from glmtune.model.tokenizers import sentencepiece_decoder
from glmtune.settings import TinySettings

log = logging.getLogger(__name__)

# GLM-4-9B-chat's positions: a random model was trained for no context, so no length limit a user sets is refused
# for it (glmtune.config_rules.positions_problem); rotary positions hold no weights, so it costs nothing.
MAX_POSITIONS = 131072


def conversation_texts(paths: Iterable[str | Path]) -> Iterable[str]:
    for path in paths:
        for row in read_jsonl(path):
            for msg in row["conversations"]:
                yield msg["content"]


def train_tokenizer(texts: Iterable[str], vocab_size: int, family: str) -> PreTrainedTokenizerFast:
    """A BPE over the training text in the family's tokenizer style, carrying its chat special tokens (in its official
    order; their ids follow the learned vocabulary here) and its chat template.

    Byte-level, as GLM-4's tiktoken; for a SentencePiece family (ChatGLM3) every text segment starts with '▁' and a
    space is '▁', as its dummy prefix makes them: the chat template's text ("\n " after a role token) then tokenizes
    to the ids of encoding the header and the content apart, as training does (characters never seen: their bytes).
    """
    spec = get_family(family)
    specials = spec.chat_special_tokens()
    named = {"eos_token": spec.chat.eos, "pad_token": spec.pad, **({"unk_token": spec.unk} if spec.unk else {})}
    sentencepiece = spec.tokenizer == "sentencepiece"
    core = Tokenizer(models.BPE())
    if sentencepiece:  # pieces split at '▁' and punctuation, of a few characters: a word is never one token
        core.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
            pre_tokenizers.Punctuation(behavior="isolated"), pre_tokenizers.Digits(individual_digits=False),
        ])
    else:
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - (len(BYTE_PIECES) if sentencepiece else 0), special_tokens=specials,
        initial_alphabet=[] if sentencepiece else pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        **({"max_token_length": SENTENCEPIECE_MAX_CHARS} if sentencepiece else {}),
    )
    core.train_from_iterator(texts, trainer=trainer)
    if sentencepiece:
        with_byte_fallback(core, spec.unk)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, **named,
        additional_special_tokens=[token for token in specials if token not in named.values()], padding_side="left",
    )
    tokenizer.chat_template = get_template(family).jinja()
    return tokenizer


SENTENCEPIECE_MAX_CHARS = 3  # ChatGLM3's Chinese pieces are mostly one to three characters
BYTE_PIECES = [f"<0x{byte:02X}>" for byte in range(256)]  # SentencePiece's byte fallback pieces


def with_byte_fallback(core: Tokenizer, unk: str | None) -> None:
    """The trained BPE with SentencePiece's 256 byte pieces after its vocabulary and byte fallback on, as ChatGLM3's
    model has them: a character the training text never held (a newline in a header, an emoji) is its UTF-8 bytes,
    not the unk token."""
    trained = json.loads(core.to_str())["model"]
    vocab = {**trained["vocab"], **{piece: len(trained["vocab"]) + i for i, piece in enumerate(BYTE_PIECES)}}
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in trained["merges"]]
    core.model = models.BPE(vocab, merges, unk_token=unk, byte_fallback=True)
    core.decoder = sentencepiece_decoder(add_dummy_prefix=True)


def build_tiny_model(
    train_files: Iterable[str | Path], out_dir: str | Path, size: TinySettings, family: str,
) -> Path:
    """Train the tokenizer on `train_files`, initialise a random model of the family's architecture (seeded by
    size.seed), save both."""
    torch.manual_seed(size.seed)
    spec = get_family(family)
    tokenizer = train_tokenizer(conversation_texts(train_files), size.vocab_size, family)
    template = get_template(family)
    stops = stop_token_ids(tokenizer, template)
    config = AutoConfig.for_model(
        spec.architecture.model_type,
        vocab_size=-(-len(tokenizer) // 64) * 64,  # padded like the real 151552-word vocabulary
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        head_dim=size.hidden_size // size.num_attention_heads,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stops,
        initializer_range=size.initializer_range,
        **spec.architecture.options,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tokenizer.pad_token_id, do_sample=False)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
    params = sum(p.numel() for p in model.parameters())
    log.info("tiny %s model (%s): %d parameters, vocabulary %d, saved to %s", spec.title, type(model).__name__, params,
             len(tokenizer), out_dir)
    return Path(out_dir)
