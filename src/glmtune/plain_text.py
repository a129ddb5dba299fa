"""Message text encoded as text: the string of a special token inside a message is its characters, not the token.

A tokenizer reads `<|user|>`, `<|endoftext|>` or ChatGLM3's `</s>` / `eop` written inside a string as that special
token, as the demos' and LLaMA-Factory's encoding does. Scraped chats quote them ("what does <|endoftext|> mean?"):
a user message would then open a forged turn, and an answer holding the end token would teach the model to stop
there. The layout's structure comes from the roles alone, so such text is encoded with its special tokens split
into plain pieces (the official tokenizers' own plain encoding: tiktoken without special tokens, SentencePiece);
`found`, where given, collects which strings were so encoded, for the tokenize stage to count. Text without them
encodes exactly as before, so the parity with the demos stands for it.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=16)
def _special_tokens(tokenizer: Any) -> dict[int, str]:
    """id -> string of every token a tokenizer reads from a string of its own (special and added tokens)."""
    named = {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    return {token_id: token for token, token_id in {**named, **tokenizer.get_added_vocab()}.items()}


def encode_text(tokenizer: Any, text: str, found: set[str] | None = None) -> list[int]:
    """The ids of `text` as text (no special tokens added, none read from it)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    special = _special_tokens(tokenizer)
    read_as_tokens = {special[token] for token in ids if token in special}
    if not read_as_tokens:
        return ids
    if found is not None:
        found.update(read_as_tokens)
    return _split_special_tokens(tokenizer, text)


def _split_special_tokens(tokenizer: Any, text: str) -> list[int]:
    """`text` encoded with its special tokens' strings as plain text. A fast tokenizer is asked through its backend:
    transformers 4.4x (the remote-code environment) takes no split_special_tokens for it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))
    before = backend.encode_special_tokens
    backend.encode_special_tokens = True
    try:
        return list(backend.encode(text, add_special_tokens=False).ids)
    finally:
        backend.encode_special_tokens = before
