"""glmtune.plain_text on a tokenizer with no Rust backend (a Python `PreTrainedTokenizer`, as a user's remote-code
tokenizer is): special tokens' strings inside message text still come out as their characters.

The fast-tokenizer path is tested against the official plain encoders in tests/chat_template/test_templates_real.py.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizer

from glmtune.plain_text import encode_text


class CharTokenizer(PreTrainedTokenizer):
    """One id per printable ASCII character (its code point); added tokens get ids from 200 up."""

    def __init__(self, **kwargs: object) -> None:
        self.vocab = {chr(code): code for code in range(32, 127)}
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return 200

    def get_vocab(self) -> dict[str, int]:
        return {**self.vocab, **self.added_tokens_encoder}

    def _tokenize(self, text: str) -> list[str]:
        return list(text)

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab[token]

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index)


def _tokenizer() -> CharTokenizer:
    tokenizer = CharTokenizer(eos_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>"]})
    assert getattr(tokenizer, "backend_tokenizer", None) is None  # the branch under test
    return tokenizer


def test_a_python_tokenizer_encodes_special_token_strings_as_their_characters() -> None:
    tokenizer = _tokenizer()
    text = "a<|user|>b<|endoftext|>"
    assert len(tokenizer.encode(text, add_special_tokens=False)) == 4  # the tokenizer itself reads two tokens
    found: set[str] = set()
    assert encode_text(tokenizer, text, found) == [ord(char) for char in text]
    assert found == {"<|user|>", "<|endoftext|>"}


def test_text_without_special_token_strings_is_the_tokenizers_own_encoding() -> None:
    tokenizer = _tokenizer()
    found: set[str] = set()
    assert encode_text(tokenizer, "plain <user> text", found) == [ord(char) for char in "plain <user> text"]
    assert found == set()
