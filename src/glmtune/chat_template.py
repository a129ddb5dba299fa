"""Chat templates as data, and the one function that turns a conversation into ids and labels.

Layout shared by GLM-4 and ChatGLM3: a prefix of special tokens, then per message
`<|role|>` + metadata + "\\n" (the header) followed by the content; an eos token closes the sample.
Loss follows the official finetune demos: a trained message's tokens are marked, the marks are
shifted right by one, so the model learns the header's newline, the content, and the token that
ends the turn (the next role token, or eos). A layout with an end-of-turn token (ChatML's <|im_end|>:
ChatLayout.end_of_turn) closes every message with it; that token is then the last one a trained
message's shifted marks reach, and the token after it is not trained.

A system message's `tools` are laid out per family (ChatTemplate.tools_layout names one of
TOOLS_LAYOUTS), as each model's own code does, in two `<|system|>` blocks: first the tools, then the
system text, if any, in a block of its own. GLM-4: the official glm-4-9b-chat chat template as
transformers renders it (`trim_blocks`: one "\\n" before each `## name`). ChatGLM3: the official tool
fine-tuning code (finetune_demo/preprocess_utils.py), whose first system message is "Answer the following
questions as best as you can. You have access to the following tools:\\n" + `json.dumps(tools, indent=4,
ensure_ascii=False)`. Text that carries tools is never trained. A tool call (an assistant message with the
function name as metadata) keeps its JSON arguments for GLM-4 and becomes ChatGLM3's own
```` ```python\\ntool_call(city='北京')\\n``` ````. `ChatTemplate.jinja()` renders the same tools layout, so
`apply_chat_template` on an exported model gives the ids training used (a call's content it writes as given:
ChatGLM3's form there).

What a family's template is (prefix, role tokens, eos, stop tokens, which tools layout) is data in glmtune.family;
this module turns it into ids and Jinja.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from glmtune.family import ROLE_FORMAT, ChatLayout, get_family, template_hint
from glmtune.plain_text import encode_text


def tool_function(tool: Any) -> Any:
    """The function object of a tool: OpenAI style wraps it in `function`, glaive/ChatGLM3 data give it plain."""
    return tool["function"] if isinstance(tool, dict) and "function" in tool else tool


IGNORE_INDEX = -100


class Tokenizer(Protocol):
    all_special_tokens: list[str]

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def convert_tokens_to_ids(self, token: str) -> int: ...
    def get_added_vocab(self) -> dict[str, int]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class TemplateTokenError(ValueError):
    """A special token of the chat template that the tokenizer does not have: the model is of another family."""


@dataclass(frozen=True)
class Block:
    """One `<|role|>` segment: the texts after the role token, encoded one by one (ChatGLM3) or joined (GLM-4)."""

    role: str
    texts: tuple[str, ...]
    trainable: bool = True  # False: never trained, whatever the message's loss flag (tools text)


def _header(msg: dict[str, Any]) -> str:
    return (msg.get("metadata") or "") + "\n"


def _plain_blocks(msg: dict[str, Any]) -> list[Block]:
    return [Block(msg["role"], (_header(msg), msg["content"]))]


def _jinja_text(text: str) -> str:
    """A Jinja string literal of `text`."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _jinja_plain(template: ChatTemplate) -> str:
    return ("{{ " + template.jinja_role() + " + (m.get('metadata') or '') + " + _jinja_text(template.jinja_header_end)
            + " + m['content'] }}" + _jinja_end(template))


def _jinja_end(template: ChatTemplate) -> str:
    """The Jinja that closes a message: its end-of-turn token, if the layout has one."""
    return "{{ " + _jinja_text(template.end_of_turn) + " }}" if template.end_of_turn else ""


# The glm-4-9b-chat chat template's tools prompt, word for word.
GLM4_TOOLS_INTRO = ("\n你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
                    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具")
GLM4_TOOL_OUTRO = "\n在调用上述函数时，请使用 Json 格式表示调用的参数。"


def glm4_tools_text(tools: Sequence[Any]) -> str:
    """What follows `<|system|>` in GLM-4's tools block (its template's `tojson(indent=4)` is this json.dumps)."""
    # The template's "\n\n## " loses its first newline to trim_blocks (it follows an `{% if %}` tag).
    listed = "".join(f"\n## {function['name']}\n\n{json.dumps(function, indent=4, ensure_ascii=False)}{GLM4_TOOL_OUTRO}"
                     for function in map(tool_function, tools))
    return GLM4_TOOLS_INTRO + listed


def _glm4_tool_blocks(msg: dict[str, Any]) -> list[Block]:
    # As the official template: the content block only when there is content.
    tools = Block("system", (glm4_tools_text(msg["tools"]),), trainable=False)
    return [tools, *(_plain_blocks(msg) if msg["content"] else [])]


def _glm4_tools_jinja(template: ChatTemplate) -> str:
    return ("{{ " + _jinja_text(template.role_token("system")) + " + " + _jinja_text(GLM4_TOOLS_INTRO) + " }}"
            "{% for tool in m['tools'] %}{% set f = tool['function'] if tool['function'] is defined else tool %}"
            "{{ '\\n## ' + f['name'] + '\\n\\n' + (f | tojson(indent=4)) + " + _jinja_text(GLM4_TOOL_OUTRO) + " }}"
            "{% endfor %}" + _jinja_end(template) + "{% if m['content'] %}" + _jinja_plain(template) + "{% endif %}")


# The official ChatGLM3 tool fine-tuning code's TOOL_DEFINITION_PREFIX (finetune_demo/preprocess_utils.py); its
# chat/tool usage puts the same sentence in the system content, which build_chat_input follows with "\n" + JSON.
CHATGLM3_TOOLS_INTRO = "Answer the following questions as best as you can. You have access to the following tools:\n"


def chatglm3_tools_text(tools: Sequence[Any]) -> str:
    """The content of ChatGLM3's first system message: the intro, then json.dumps(tools, indent=4, ensure_ascii=False)."""
    return CHATGLM3_TOOLS_INTRO + json.dumps([tool_function(tool) for tool in tools], indent=4, ensure_ascii=False)


def chatglm3_tool_call(arguments: str) -> str:
    """A tool call's JSON arguments as ChatGLM3's tool finetune code writes a call (format_function_call: keyword
    arguments, each value's repr) and its chat() evals it: ```python\ntool_call(city='北京')\n```. Content that is
    not a JSON object (e.g. interpreter code) stays."""
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
    if not isinstance(parsed, dict):
        return arguments
    return "```python\ntool_call(" + ", ".join(f"{key}={value!r}" for key, value in parsed.items()) + ")\n```"


def _chatglm3_tool_blocks(msg: dict[str, Any]) -> list[Block]:
    # The demo inserts the tools as a system message of their own; the record's system text stays a second one.
    tools = Block("system", ("\n", chatglm3_tools_text(msg["tools"])), trainable=False)
    return [tools, *(_plain_blocks(msg) if msg["content"] else [])]


def _chatglm3_tools_jinja(template: ChatTemplate) -> str:
    # transformers' tojson is json.dumps(ensure_ascii=False); json.dumps(indent=4) of a list, item by item.
    return ("{{ " + _jinja_text(template.role_token("system")) + " + "
            + _jinja_text(template.jinja_header_end + CHATGLM3_TOOLS_INTRO + "[") + " }}"
            "{% for tool in m['tools'] %}{{ (',' if not loop.first else '') + '\\n    ' }}"
            "{{ ((tool['function'] if tool['function'] is defined else tool) | tojson(indent=4)).replace('\\n', '\\n    ') }}"
            "{% endfor %}{{ '\\n]' }}" + _jinja_end(template) + "{% if m['content'] %}" + _jinja_plain(template)
            + "{% endif %}")


@dataclass(frozen=True)
class ToolsLayout:
    """How one family lays out a system message that carries tools, in Python and in Jinja, and a tool call's
    arguments (an assistant message with the function name as metadata)."""

    blocks: Callable[[dict[str, Any]], list[Block]]
    jinja: Callable[[ChatTemplate], str]  # the template -> Jinja rendering such a message `m`
    tool_call: Callable[[str], str]  # JSON arguments -> the text the model writes for the call


TOOLS_LAYOUTS: dict[str, ToolsLayout] = {
    "glm4": ToolsLayout(_glm4_tool_blocks, _glm4_tools_jinja, lambda arguments: arguments),
    "chatglm3": ToolsLayout(_chatglm3_tool_blocks, _chatglm3_tools_jinja, chatglm3_tool_call),
}


@dataclass(frozen=True, kw_only=True)
class ChatTemplate(ChatLayout):
    """A family's chat layout (glmtune.family.ChatLayout) with what encodes and renders it."""

    name: str

    def jinja_role(self) -> str:
        """A Jinja expression of message `m`'s role token."""
        opening, closing = ROLE_FORMAT.split("{role}")
        default = _jinja_text(opening) + " + m['role'] + " + _jinja_text(closing)
        if not self.role_tokens:
            return default
        return f"(roles[m['role']] if m['role'] in roles else {default})"  # `roles`: set by jinja() from role_tokens

    def blocks(self, msg: dict[str, Any]) -> list[Block]:
        """The segments one message is encoded as."""
        layout = TOOLS_LAYOUTS[self.tools_layout]
        if msg.get("tools"):
            return layout.blocks(msg)
        if self.drop_empty and not msg["content"]:
            return []
        if msg["role"] == "assistant" and msg.get("metadata"):
            msg = {**msg, "content": layout.tool_call(msg["content"])}
        return _plain_blocks(msg)

    def jinja(self) -> str:
        """A Hugging Face chat template that renders the same text (for `apply_chat_template`)."""
        plain = _jinja_plain(self)
        if self.drop_empty:
            plain = "{% if m['content'] %}" + plain + "{% endif %}"
        roles = ""
        if self.role_tokens:
            pairs = ", ".join(f"{_jinja_text(role)}: {_jinja_text(token)}" for role, token in self.role_tokens)
            roles = "{% set roles = {" + pairs + "} %}"
        return (
            roles + "{{ " + _jinja_text("".join(self.prefix)) + " }}"
            "{% for m in messages %}{% if m.get('tools') %}" + TOOLS_LAYOUTS[self.tools_layout].jinja(self)
            + "{% else %}" + plain + "{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ " + _jinja_text(self.role_token("assistant")) + " }}{% endif %}"
        )


def get_template(name: str) -> ChatTemplate:
    """The chat template of the registered family `name` (glmtune.family.FAMILIES)."""
    layout = get_family(name, "chat template").chat
    return ChatTemplate(name=name, **{f.name: getattr(layout, f.name) for f in fields(ChatLayout)})


def has_special_token(tokenizer: Tokenizer, token: str) -> bool:
    """Whether `token` is one special token of the tokenizer. Not the id alone: an unknown token gets None or the
    unk id (ChatGLM3's 0), and a word the vocabulary holds as ordinary text would pass for one."""
    return token in tokenizer.get_added_vocab() or token in tokenizer.all_special_tokens


def _ids(tokenizer: Tokenizer, template: ChatTemplate, tokens: Sequence[str]) -> list[int]:
    """The ids of the template's special tokens; one the tokenizer has not stops (ids of None or unk would go into
    the training data, or a prompt, and pass for text)."""
    for token in tokens:
        if not has_special_token(tokenizer, token):
            hint = template_hint(lambda name: has_special_token(tokenizer, name))
            raise TemplateTokenError(f"model.template: {template.name} lays conversations out with the special token "
                                     f"{token!r}, which the model's tokenizer does not have: the model is not of that "
                                     f"family; {hint}")
    return [tokenizer.convert_tokens_to_ids(token) for token in tokens]


def encode_messages(tokenizer: Tokenizer, template: ChatTemplate, messages: Sequence[dict[str, Any]],
                    found: set[str] | None = None) -> tuple[list[int], list[bool]]:
    """Token ids of the prefix and every message, and per token whether its message is trained. Message text is
    text (glmtune.plain_text): `found` collects the special tokens' strings it held."""
    ids = _ids(tokenizer, template, template.prefix)
    marks = [False] * len(ids)
    for msg in messages:
        for block in template.blocks(msg):
            body = _ids(tokenizer, template, [template.role_token(block.role)])
            for text in ("".join(block.texts),) if template.encode_whole else block.texts:
                body += encode_text(tokenizer, text, found)
            ids += body
            marks += [block.trainable and bool(msg.get("loss"))] * len(body)
            if template.end_of_turn:  # unmarked: shifted, the message's last mark trains it, and nothing after it
                ids += _ids(tokenizer, template, [template.end_of_turn])
                marks.append(False)
    return ids, marks


def unwritten_problem(template: ChatTemplate, messages: Sequence[dict[str, Any]]) -> str | None:
    """Why the template cannot lay these messages out as given, or None: a message after the system prompt it writes
    nothing for (GLM-4's, as the official one, an empty one; ChatGLM3's writes every message). Trained, the message
    before it would run on into the next one; asked, the model would answer what comes before it."""
    position = next((position for position, msg in enumerate(messages)
                     if msg["role"] != "system" and not template.blocks(msg)), None)
    if position is None:
        return None
    role = messages[position]["role"]
    fix = ("write the tool's empty result as text (e.g. \"{}\" or \"null\")" if role == "observation"
           else "fill it or leave it out")
    return (f"message {position} ({role}) is empty, and the {template.name} chat template writes nothing for an empty "
            f"message (as the official one does): the message before it would run on into the next one; {fix}")


def encode_conversation(
    tokenizer: Tokenizer, template: ChatTemplate, messages: Sequence[dict[str, Any]], cutoff_len: int | None = None,
    found: set[str] | None = None,
) -> tuple[list[int], list[int], bool]:
    """Return (input_ids, labels, truncated) for training, with the demos' shifted loss marks (`found`: see
    encode_messages)."""
    ids, marks = encode_messages(tokenizer, template, messages, found)
    if template.eos != template.end_of_turn:  # an end-of-turn eos (Qwen's <|im_end|>) already closes the sample
        ids += _ids(tokenizer, template, [template.eos])
    shifted = [False, *marks]
    labels = [token if mark else IGNORE_INDEX for token, mark in zip(ids, shifted)]
    truncated = cutoff_len is not None and len(ids) > cutoff_len
    if truncated:
        ids, labels = ids[:cutoff_len], labels[:cutoff_len]
    return ids, labels, truncated


def encode_prompt(tokenizer: Tokenizer, template: ChatTemplate, messages: Sequence[dict[str, Any]], max_length: int | None = None) -> list[int]:
    """Ids of a conversation up to and including the assistant role token, ready for generation; with `max_length`,
    cut as the demos cut (cut_prompt)."""
    return cut_prompt(*prompt_parts(tokenizer, template, messages), max_length)


def prompt_parts(tokenizer: Tokenizer, template: ChatTemplate, messages: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(the messages' ids, the assistant's role header ids): a prompt for generation is the two joined."""
    ids, _ = encode_messages(tokenizer, template, messages)
    return ids, _ids(tokenizer, template, [template.role_token("assistant")])


def cut_prompt(messages_ids: list[int], header: list[int], max_length: int | None) -> list[int]:
    """The demos' cut of an evaluation prompt: the messages keep their first `max_length` tokens (the prefix and
    system prompt stay; the end, the question included, goes), then the role header comes whole, as their
    `input_ids[:max_input_length] + output_prompt[:1]`."""
    return messages_ids[:max_length] + header


def split_for_generation(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Split a conversation into (prompt messages, the answer): the last assistant message is the answer, the
    messages before it the prompt (reference_answer gives the answer's text to score against)."""
    for position in range(len(messages) - 1, -1, -1):
        if messages[position]["role"] == "assistant":
            return list(messages[:position]), messages[position]
    raise ValueError("conversation has no assistant message to evaluate against")


def decode_answer(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """The text of what a model wrote after the assistant role token, as the evaluation scores it: special tokens
    (the stop token) skipped, the ends stripped."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def reference_answer(tokenizer: Tokenizer, template: ChatTemplate, answer: dict[str, Any]) -> str:
    """The reference a prediction is scored against: the ids training encodes `answer` as, after its role token,
    decoded as generation is (decode_answer), as the official demos decode their label ids. For a tool call that
    is the function name's line and the call in the family's form (`get_weather\n{"city": "北京"}` for GLM-4). Not
    the texts joined: ChatGLM3 encodes the name's line and the call apart, SentencePiece-style, and the model that
    writes those ids decodes to `get_weather\n ```python…`, a space the joined text lacks."""
    return decode_answer(tokenizer, answer_ids(tokenizer, template, answer))


def answer_ids(tokenizer: Tokenizer, template: ChatTemplate, answer: dict[str, Any]) -> list[int]:
    """The ids a model writes for `answer` after the assistant role token, as training encodes it: the header's
    newline (or a tool call's name line) and the text, without an end-of-turn token (what max_new_tokens must hold
    for the answer to come whole)."""
    ids, _ = encode_messages(tokenizer, template, [answer])
    after_role = len(template.prefix) + 1  # the prefix's special tokens, then the answer's <|assistant|>
    return ids[after_role:len(ids) - (1 if template.end_of_turn else 0)]


def stop_token_ids(tokenizer: Tokenizer, template: ChatTemplate) -> list[int]:
    return _ids(tokenizer, template, template.stop)
