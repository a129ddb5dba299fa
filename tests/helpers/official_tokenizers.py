"""The official GLM-4 / ChatGLM3 tokenizers rebuilt from a folder holding their `tokenizer.model`, by family."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerFast

from glmtune.model.tokenizers import tokenizer_from_model_file


def load_glm4_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """GLM-4-9B-chat's tokenizer from a folder holding its tiktoken `tokenizer.model`."""
    return tokenizer_from_model_file(folder, "glm4")


def load_chatglm3_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """ChatGLM3-6B's tokenizer from a folder holding its SentencePiece `tokenizer.model`."""
    return tokenizer_from_model_file(folder, "chatglm3")
