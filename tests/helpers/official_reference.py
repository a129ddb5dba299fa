"""The official data procedures of GLM-4 and ChatGLM3, written out by hand for the parity tests.

Nothing here imports glmtune's templates: expected ids come from the official rules only.

GLM-4 (THUDM/GLM-4 finetune_demo/finetune.py, `process_batch`): `[gMASK] <sop>`, then per message
`tokenizer.apply_chat_template([message])[2:]` with the official glm-4-9b-chat `chat_template`
(tokenizer_config.json, rendered by transformers' own Jinja environment), loss by role (system / user /
observation untrained), `eos_token_id` appended (the demo as of June 2024; later versions append `<|user|>`),
the masks shifted right by one.

ChatGLM3 (THUDM/ChatGLM3 finetune_demo/preprocess_utils.py `format_conversation`, and the tokenizer's
`build_single_message` in tokenization_chatglm.py): `[gMASK] sop`; with `tools`, a first system message
TOOL_DEFINITION_PREFIX + json.dumps(tools, indent=4, ensure_ascii=False); per message
`[<|role|>] + sp.encode(f"{metadata}\\n") + sp.encode(content)`; a `tool` message is an assistant call
```` ```python\\ntool_call(...)\\n``` ```` (metadata: its name) plus an untrained observation; eos closes it.
Loss: a message's `loss`, else the finetune README's rule (system and user untrained, every other role
trained). The demo code forces system/user to untrained even when `loss` says otherwise; the README rule,
which the project follows, honours `loss` on any role.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

IGNORE = -100

# GLM-4 ids (glm-4-9b-chat tokenizer_config.json / generation_config.json)
GLM4_PREFIX, GLM4_EOS = [151331, 151333], 151329
GLM4_UNTRAINED = ("system", "user", "observation")

# ChatGLM3 ids (the original tokenizer adds its command tokens after the 64789 SentencePiece pieces)
CHATGLM3_PREFIX, CHATGLM3_EOS = [64790, 64792], 2
CHATGLM3_ROLE_IDS = {"system": 64794, "user": 64795, "assistant": 64796, "observation": 64797}
TOOL_DEFINITION_PREFIX = "Answer the following questions as best as you can. You have access to the following tools:\n"
FUNCTION_CALL_PREFIX, FUNCTION_CALL_POSTFIX = "```python\n", "\n```"


def shifted_labels(ids: list[int], masks: list[bool]) -> list[int]:
    """Both demos: the loss mask moves right by one, so a trained message's tokens predict the next token."""
    shifted = [False, *masks[:-1]]
    return [token if mask else IGNORE for token, mask in zip(ids, shifted)]


# --- GLM-4 ---------------------------------------------------------------------------------------


def glm4_process(tokenizer: Any, chat_template: str, messages: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """finetune_demo/finetune.py process_batch for one conversation; a message's `loss` (not in the demo's
    format) overrides the role rule, as the project allows."""
    ids, masks = list(GLM4_PREFIX), [False, False]
    for message in messages:
        message = dict(message)
        trained = message.pop("loss", message["role"] not in GLM4_UNTRAINED)
        new = tokenizer.apply_chat_template([message], chat_template=chat_template, tokenize=True, return_dict=False)[2:]
        ids += new
        masks += [trained] * len(new)
    ids.append(GLM4_EOS)
    masks.append(False)
    return ids, shifted_labels(ids, masks)


def glm4_tool(function: dict[str, Any]) -> dict[str, Any]:
    """The official template lists only `{"type": "function", "function": ...}` tools."""
    return function if "function" in function else {"type": "function", "function": function}


# --- ChatGLM3 ------------------------------------------------------------------------------------


def build_single_message(encode: Callable[[str], list[int]], role: str, metadata: str, message: str) -> list[int]:
    """tokenization_chatglm.py: role token, then the metadata line and the message encoded apart."""
    return [CHATGLM3_ROLE_IDS[role], *encode(f"{metadata}\n"), *encode(message)]


def format_function_call(function_name: str, parameters: dict[str, Any]) -> str:
    """preprocess_utils.py builds a Call node and unparses it (astunparse; stdlib ast.unparse writes the same)."""
    keywords = [ast.keyword(arg=name, value=ast.Constant(value)) for name, value in parameters.items()]
    return ast.unparse(ast.Call(func=ast.Name(id=function_name), args=[], keywords=keywords)).strip()


def chatglm3_segments(item: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """format_conversation as (role, metadata, text, trained) segments, before tokenizing."""
    conversations = deepcopy(item["conversations"])
    if "tools" in item:
        tools_text = TOOL_DEFINITION_PREFIX + json.dumps(item["tools"], indent=4, ensure_ascii=False)
        conversations.insert(0, {"role": "system", "content": tools_text, "loss": False})
    segments = []
    for conv in conversations:
        loss = conv.get("loss", conv["role"] not in ("system", "user"))
        if conv["role"] == "tool":
            call = FUNCTION_CALL_PREFIX + format_function_call("tool_call", conv["parameters"]) + FUNCTION_CALL_POSTFIX
            segments.append(("assistant", conv["name"], call, loss))
            value = conv.get("observation", None)
            segments.append(("observation", "", value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), False))
        else:
            segments.append((conv["role"], "", conv["content"], loss))
    return segments


def chatglm3_ids(encode: Callable[[str], list[int]], segments: Sequence[tuple[str, str, str, bool]]) -> tuple[list[int], list[int]]:
    """Token ids and shifted labels of (role, metadata, text, trained) segments, eos closing the sample."""
    ids, masks = list(CHATGLM3_PREFIX), [False, False]
    for role, metadata, text, trained in segments:
        new = build_single_message(encode, role, metadata, text)
        ids += new
        masks += [trained] * len(new)
    ids.append(CHATGLM3_EOS)
    masks.append(False)
    return ids, shifted_labels(ids, masks)


# --- public data in each family's official format ------------------------------------------------


def glaive_turns(record: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """A glaive sharegpt row as (tools, [(kind, value)]): function_call values parsed to {"name", "arguments"}."""
    tools = json.loads(record["tools"]) if record.get("tools") else []
    turns = [(turn["from"], json.loads(turn["value"]) if turn["from"] == "function_call" else turn["value"])
             for turn in record["conversations"]]
    return tools, turns


def glaive_as_glm4(record: dict[str, Any]) -> list[dict[str, Any]]:
    """GLM-4 demo messages: tools on an empty system message, a call as metadata = name + JSON arguments."""
    tools, turns = glaive_turns(record)
    messages = [{"role": "system", "content": "", "tools": [glm4_tool(tool) for tool in tools]}] if tools else []
    for kind, value in turns:
        if kind == "function_call":
            messages.append({"role": "assistant", "metadata": value["name"],
                             "content": json.dumps(value["arguments"], ensure_ascii=False)})
        else:
            messages.append({"role": {"human": "user", "gpt": "assistant"}.get(kind, kind), "content": value})
    return messages


def glaive_as_chatglm3(record: dict[str, Any]) -> dict[str, Any]:
    """ChatGLM3 demo record: a function_call and the observation after it become one `tool` message."""
    tools, turns = glaive_turns(record)
    conversations: list[dict[str, Any]] = []
    for kind, value in turns:
        if kind == "function_call":
            conversations.append({"role": "tool", "name": value["name"], "parameters": value["arguments"]})
        elif kind == "observation":
            conversations[-1]["observation"] = value
        else:
            conversations.append({"role": {"human": "user", "gpt": "assistant"}[kind], "content": value})
    return {"tools": tools, "conversations": conversations} if tools else {"conversations": conversations}


def emollm_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """EmoLLM turns as plain messages (system only on the first turn), the same for both families."""
    messages = []
    for turn in record["conversation"]:
        if turn.get("system"):
            messages.append({"role": "system", "content": turn["system"]})
        messages += [{"role": "user", "content": turn["input"]}, {"role": "assistant", "content": turn["output"]}]
    return messages


def glaive_tool_rows(path: Any, count: int) -> list[tuple[int, dict[str, Any]]]:
    """The first `count` glaive rows that offer tools and that LLaMA-Factory accepts (each observation follows a
    function_call; rows 197 and 293 of the demo file do not), with their index."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    chosen = []
    for index, row in enumerate(rows):
        kinds = [turn["from"] for turn in row["conversations"]]
        orphan = any(kind == "observation" and (i == 0 or kinds[i - 1] != "function_call") for i, kind in enumerate(kinds))
        if json.loads(row["tools"] or "[]") and not orphan:
            chosen.append((index, row))
    return chosen[:count]


def emollm_multiturn_rows(path: Any, count: int) -> list[tuple[int, dict[str, Any]]]:
    """The first `count` EmoLLM records with at least two turns, with their index."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [(index, row) for index, row in enumerate(rows) if len(row["conversation"]) >= 2][:count]


def json_lines(path: Any, count: int) -> list[tuple[int, dict[str, Any]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(index, json.loads(line)) for index, line in enumerate(lines[:count])]
