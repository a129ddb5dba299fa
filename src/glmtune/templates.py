"""Chat templates as data, and the one function that turns a conversation into ids and labels.

Layout shared by GLM-4 and ChatGLM3: a prefix of special tokens, then per message
`<|role|>` + metadata + "\\n" (the header) followed by the content; an eos token closes the sample.
Loss follows the official finetune demos: a trained message's tokens are marked, the marks are
shifted right by one, so the model learns the header's newline, the content, and the token that
ends the turn (the next role token, or eos).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

IGNORE_INDEX = -100


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def convert_tokens_to_ids(self, token: str) -> int: ...


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    prefix: tuple[str, ...]
    eos: str
    stop: tuple[str, ...]  # tokens that end generation
    role_format: str = "<|{role}|>"
    # What the rendered text puts after a header so that tokenizing it whole gives the ids of encoding
    # header and content apart. SentencePiece (ChatGLM3) prefixes every text segment with '▁': the
    # official ChatGLM3 chat template writes "\n " for that reason.
    jinja_header_end: str = "\n"

    def role_token(self, role: str) -> str:
        return self.role_format.format(role=role)

    def jinja(self) -> str:
        """A Hugging Face chat template that renders the same text (for `apply_chat_template`)."""
        return (
            "{{ '" + "".join(self.prefix) + "' }}"
            "{% for m in messages %}{{ '<|' + m['role'] + '|>' + (m.get('metadata') or '') + '"
            + self.jinja_header_end.replace("\n", "\\n") + "' + m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
        )


TEMPLATES: dict[str, ChatTemplate] = {
    "glm4": ChatTemplate(
        name="glm4",
        prefix=("[gMASK]", "<sop>"),
        eos="<|endoftext|>",
        stop=("<|endoftext|>", "<|user|>", "<|observation|>"),
    ),
    "chatglm3": ChatTemplate(
        name="chatglm3",
        prefix=("[gMASK]", "sop"),
        eos="</s>",
        stop=("</s>", "<|user|>", "<|observation|>"),
        jinja_header_end="\n ",
    ),
}


def get_template(name: str) -> ChatTemplate:
    if name not in TEMPLATES:
        raise KeyError(f"unknown chat template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def _ids(tokenizer: Tokenizer, tokens: Sequence[str]) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(token) for token in tokens]


def encode_messages(tokenizer: Tokenizer, template: ChatTemplate, messages: Sequence[dict[str, Any]]) -> tuple[list[int], list[bool]]:
    """Token ids of the prefix and every message, and per token whether its message is trained."""
    ids = _ids(tokenizer, template.prefix)
    marks = [False] * len(ids)
    for msg in messages:
        header = _ids(tokenizer, [template.role_token(msg["role"])])
        header += tokenizer.encode((msg.get("metadata") or "") + "\n", add_special_tokens=False)
        body = header + tokenizer.encode(msg["content"], add_special_tokens=False)
        ids += body
        marks += [bool(msg.get("loss"))] * len(body)
    return ids, marks


def encode_conversation(
    tokenizer: Tokenizer, template: ChatTemplate, messages: Sequence[dict[str, Any]], cutoff_len: int | None = None
) -> tuple[list[int], list[int], bool]:
    """Return (input_ids, labels, truncated) for training, with the demos' shifted loss marks."""
    ids, marks = encode_messages(tokenizer, template, messages)
    ids.append(tokenizer.convert_tokens_to_ids(template.eos))
    shifted = [False, *marks]
    labels = [token if mark else IGNORE_INDEX for token, mark in zip(ids, shifted)]
    truncated = cutoff_len is not None and len(ids) > cutoff_len
    if truncated:
        ids, labels = ids[:cutoff_len], labels[:cutoff_len]
    return ids, labels, truncated


def encode_prompt(tokenizer: Tokenizer, template: ChatTemplate, messages: Sequence[dict[str, Any]], max_length: int | None = None) -> list[int]:
    """Ids of a conversation up to and including the assistant role token, ready for generation.

    Over-long prompts keep their start (the prefix and system prompt), as the demos' `[:max_input_length]`.
    """
    ids, _ = encode_messages(tokenizer, template, messages)
    if max_length:
        ids = ids[: max_length - 1]
    return ids + _ids(tokenizer, [template.role_token("assistant")])


def split_for_generation(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Split a conversation into (prompt messages, reference answer): the last assistant message is the reference."""
    for position in range(len(messages) - 1, -1, -1):
        if messages[position]["role"] == "assistant":
            return list(messages[:position]), messages[position]["content"]
    raise ValueError("conversation has no assistant message to evaluate against")


def stop_token_ids(tokenizer: Tokenizer, template: ChatTemplate) -> list[int]:
    return _ids(tokenizer, template.stop)
