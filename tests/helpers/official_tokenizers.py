"""The official GLM-4 / ChatGLM3 tokenizers rebuilt from a folder holding their `tokenizer.model`, by family."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerFast

from glmtune.io import atomic_path
from glmtune.model.tokenizer_files import save_tokenizer
from glmtune.model.tokenizers import tokenizer_from_model_file


def load_glm4_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """GLM-4-9B-chat's tokenizer from a folder holding its tiktoken `tokenizer.model`."""
    return tokenizer_from_model_file(folder, "glm4")


def load_chatglm3_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """ChatGLM3-6B's tokenizer from a folder holding its SentencePiece `tokenizer.model`."""
    return tokenizer_from_model_file(folder, "chatglm3")


def convert_tokenizer(folder: str | Path, family: str, out_dir: str | Path) -> Path:
    """Save the fast tokenizer of a registered `family` (e.g. "glm4") so `AutoTokenizer.from_pretrained(out_dir)`
    loads it without remote code (tokenizer.json + tokenizer_config.json + chat template)."""
    tokenizer = tokenizer_from_model_file(folder, family)
    with atomic_path(out_dir) as tmp:
        save_tokenizer(tokenizer, tmp)
    return Path(out_dir)
