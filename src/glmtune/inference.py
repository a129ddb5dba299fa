"""Inference like the official `inference_hf.py`: one prompt, an interactive chat, or a JSON-lines batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from transformers import PreTrainedTokenizerBase

from glmtune.evaluate.generation import generate
from glmtune.model.loading import load_trained
from glmtune.chat_template import ChatTemplate, encode_prompt, get_template
from glmtune.family import FAMILIES


def detect_template(tokenizer: PreTrainedTokenizerBase) -> ChatTemplate:
    """The first family whose chat prefix the tokenizer has: GLM-4 tokenizers carry `<sop>`, ChatGLM3's carry `sop`."""
    vocab = tokenizer.get_vocab()
    for name in FAMILIES:
        template = get_template(name)
        if all(token in vocab for token in template.prefix):
            return template
    raise ValueError(f"cannot tell the chat template from the tokenizer; pass --template ({' or '.join(FAMILIES)})")


class Chat:
    """A loaded model with its template, answering message lists."""

    def __init__(self, model_dir: str | Path, base_model: str | Path | None = None, template: str | None = None,
                 max_new_tokens: int = 256, batch_size: int = 16, trust_remote_code: bool = False) -> None:
        self.model, self.tokenizer = load_trained(model_dir, base_model, trust_remote_code=trust_remote_code)
        self.template = get_template(template) if template else detect_template(self.tokenizer)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def answer(self, conversations: list[list[dict[str, Any]]]) -> list[str]:
        prompts = [encode_prompt(self.tokenizer, self.template, messages) for messages in conversations]
        return generate(self.model, self.tokenizer, self.template, prompts, self.batch_size, self.max_new_tokens, progress=len(prompts) > self.batch_size)


def batch_file(chat: Chat, rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Each input line is {"prompt": ...} or {"messages": [...]}; each output line adds "response"."""
    rows = list(rows)
    conversations = [row["messages"] if "messages" in row else [{"role": "user", "content": row["prompt"]}] for row in rows]
    for row, response in zip(rows, chat.answer(conversations)):
        out.write(json.dumps({**row, "response": response}, ensure_ascii=False) + "\n")
    return len(rows)


def interactive(chat: Chat, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """A multi-turn chat on the terminal; `clear` starts over, `exit` (or end of input) quits."""
    history: list[dict[str, Any]] = []
    stdout.write("Chat with the model. Type 'clear' to start over, 'exit' to quit.\n")
    while True:
        stdout.write("\nUser: ")
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "exit":
            return
        if line.strip() == "clear":
            history = []
            continue
        history.append({"role": "user", "content": line.rstrip("\n")})
        response = chat.answer([history])[0]
        history.append({"role": "assistant", "content": response})
        stdout.write(f"Assistant: {response}\n")
