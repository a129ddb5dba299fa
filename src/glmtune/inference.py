"""Inference like the official `inference_hf.py`: one prompt, an interactive chat, or a JSON-lines batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from transformers import PreTrainedTokenizerBase

from glmtune.chat_template import ChatTemplate, encode_prompt, get_template
from glmtune.data.conversation import InvalidRecord, validate_conversation
from glmtune.evaluate.generation import generate
from glmtune.family import FAMILIES
from glmtune.model.loading import load_trained
from glmtune.data.surrogates import surrogate_problem
from glmtune.repeated_keys import loads, repeated_paths

ANSWERED_ROLES = ("user", "observation")  # the message a model answers


class BadRequest(ValueError):
    """A line of an --input file that is not a request: the message names the file, the line and the reason."""


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


Request = tuple[dict[str, Any], list[dict[str, Any]]]  # (the input row, the conversation to answer)


def read_requests(path: str | Path) -> list[Request]:
    """Every line of a JSON-lines --input file as a request (conversation_of), all checked before any model loads:
    a bad line stops with the file, the line and the reason."""
    requests = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                raise BadRequest(f"{where}: not JSON ({err.msg}, column {err.colno})") from None
            if repeated := repeated_paths(row):
                raise BadRequest(f"{where}: {', '.join(repeated)} written twice in one object: JSON keeps only the "
                                 "last, which may not be the one meant")
            if half := surrogate_problem(row):
                raise BadRequest(f"{where}: {half}")
            requests.append((row, conversation_of(row, where)))
    if not requests:
        raise BadRequest(f"{path}: no request in the file")
    return requests


def conversation_of(row: Any, where: str) -> list[dict[str, Any]]:
    """{"prompt": text} (one user message) or {"messages": [...]}: a conversation the answer completes, by the
    training data's rules (glmtune.data.conversation), ending with the message the model answers."""
    if not isinstance(row, dict) or ("prompt" in row) == ("messages" in row):
        keys = ", ".join(map(repr, row)) if isinstance(row, dict) else type(row).__name__
        raise BadRequest(f'{where}: expected an object with "prompt" (a string) or "messages" (a list of '
                         f'{{"role", "content"}} objects), one of them; got {keys or "an empty object"}')
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise BadRequest(f'{where}: "prompt" must be a non-empty string, got {row["prompt"]!r}')
        return [{"role": "user", "content": row["prompt"]}]
    messages = row["messages"]
    try:  # the answer's place taken by a stand-in, so the training rules apply as they are
        validate_conversation([*messages, {"role": "assistant", "content": "answer"}] if isinstance(messages, list) else messages)
    except InvalidRecord as err:
        raise BadRequest(f'{where}: "messages": {err}') from None
    if messages[-1]["role"] not in ANSWERED_ROLES:
        raise BadRequest(f'{where}: "messages" ends with a {messages[-1]["role"]} message; the model answers the '
                         f"last {' or '.join(ANSWERED_ROLES)} message, so end with one")
    return list(messages)


def batch_file(chat: Chat, requests: Iterable[Request], out: TextIO) -> int:
    """Answer every request (read_requests); each output line is its input row with "response" added."""
    requests = list(requests)
    for (row, _), response in zip(requests, chat.answer([conversation for _, conversation in requests])):
        out.write(json.dumps({**row, "response": response}, ensure_ascii=False) + "\n")
    return len(requests)


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
