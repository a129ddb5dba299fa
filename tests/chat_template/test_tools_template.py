"""Tools on the system message, per family, with a tiny trained tokenizer: the ids training uses, the
text the saved chat template renders, and the two agreeing after a save/load round trip.

The expected GLM-4 text is written out here from the official glm-4-9b-chat chat template as transformers
renders it, the ChatGLM3 text from its tool finetune code (finetune_demo/preprocess_utils.py), not taken
from glmtune.chat_template.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from glmtune.chat_template import (IGNORE_INDEX, encode_conversation, encode_prompt, get_template, reference_answer,
                                    split_for_generation)
from glmtune.model.tiny import train_tokenizer

GLM4 = get_template("glm4")
# The ChatGLM3 layout on GLM-4's special tokens, so the tiny tokenizer can encode it.
CHATGLM3_LAYOUT = dataclasses.replace(GLM4, tools_layout="chatglm3")

FUNCTION = {"name": "get_weather", "description": "查询天气",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SYSTEM, USER, ARGS, OBSERVATION, ANSWER = "你是助手", "北京天气？", '{"city": "北京"}', '{"temp": 25}', "北京25度"

# glm-4-9b-chat's chat template for a system message with tools, written out by hand (rendered with
# trim_blocks, so a single "\n" before "## name": the template's first newline follows an `{% if %}` tag).
GLM4_TOOLS_TEXT = (
    "\n你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。"
    "\n\n# 可用工具"
    "\n## get_weather\n\n"
    '{\n    "name": "get_weather",\n    "description": "查询天气",\n    "parameters": {\n        "type": "object",\n'
    '        "properties": {\n            "city": {\n                "type": "string"\n            }\n        },\n'
    '        "required": [\n            "city"\n        ]\n    }\n}'
    "\n在调用上述函数时，请使用 Json 格式表示调用的参数。"
)


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer([GLM4_TOOLS_TEXT, SYSTEM, USER, ARGS, OBSERVATION, ANSWER], 400, family="glm4")


def enc(tok: Any, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def tid(tok: Any, token: str) -> int:
    return tok.convert_tokens_to_ids(token)


def conversation(system: str = SYSTEM, tools: list[Any] | None = None) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system, "loss": False, "tools": tools or [FUNCTION]},
        {"role": "user", "content": USER, "loss": False},
        {"role": "assistant", "content": ARGS, "loss": True, "metadata": "get_weather"},
        {"role": "observation", "content": OBSERVATION, "loss": False},
        {"role": "assistant", "content": ANSWER, "loss": True},
    ]


def test_the_function_block_is_tojson_indent_4() -> None:
    assert GLM4_TOOLS_TEXT.split("\n## get_weather\n\n")[1].split("\n在调用")[0] == json.dumps(FUNCTION, indent=4, ensure_ascii=False)


def test_glm4_tools_block_then_system_text_by_hand(tok: Any) -> None:
    ids, labels, _ = encode_conversation(tok, GLM4, conversation())
    s, u, a, o = (tid(tok, t) for t in ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"))
    nl = enc(tok, "\n")
    call = [*enc(tok, "get_weather\n"), *enc(tok, ARGS)]
    answer = [*nl, *enc(tok, ANSWER)]
    prompt = [tid(tok, "[gMASK]"), tid(tok, "<sop>"), s, *enc(tok, GLM4_TOOLS_TEXT), s, *nl, *enc(tok, SYSTEM), u, *nl, *enc(tok, USER), a]
    middle = [o, *nl, *enc(tok, OBSERVATION), a]
    assert ids == [*prompt, *call, *middle, *answer, tok.eos_token_id]
    ignore = [IGNORE_INDEX]
    assert labels == [*ignore * len(prompt), *call, o, *ignore * (len(middle) - 1), *answer, tok.eos_token_id]


def test_glm4_tools_only_system_message_has_no_content_block(tok: Any) -> None:
    ids, _, _ = encode_conversation(tok, GLM4, conversation(system=""))
    s, u = tid(tok, "<|system|>"), tid(tok, "<|user|>")
    assert ids[:3 + len(enc(tok, GLM4_TOOLS_TEXT)) + 1] == [tid(tok, "[gMASK]"), tid(tok, "<sop>"), s, *enc(tok, GLM4_TOOLS_TEXT), u]
    assert ids.count(s) == 1


@pytest.mark.parametrize("template", [GLM4, CHATGLM3_LAYOUT], ids=["glm4", "chatglm3"])
def test_tools_text_is_never_trained(tok: Any, template: Any) -> None:
    """Both families: a trained system message trains its text block (the second <|system|>), never the tools."""
    messages = conversation()
    messages[0]["loss"] = True
    ids, labels, _ = encode_conversation(tok, template, messages)
    _, untrained, _ = encode_conversation(tok, template, conversation())
    second_system = [i for i, token in enumerate(ids) if token == tid(tok, "<|system|>")][1]
    trained_system = [i for i, (x, y) in enumerate(zip(labels, untrained)) if x != y]
    assert trained_system and min(trained_system) == second_system + 1


# ChatGLM3's tool finetune code (preprocess_utils.py): a first system message of its own, TOOL_DEFINITION_PREFIX +
# json.dumps(tools, indent=4, ensure_ascii=False), written out by hand.
CHATGLM3_TOOLS = ('Answer the following questions as best as you can. You have access to the following tools:\n'
                  '[\n    {\n        "name": "get_weather",\n        "description": "查询天气",\n        "parameters": {\n'
                  '            "type": "object",\n            "properties": {\n                "city": {\n'
                  '                    "type": "string"\n                }\n            },\n            "required": [\n'
                  '                "city"\n            ]\n        }\n    }\n]')
CHATGLM3_CALL = "```python\ntool_call(city='北京')\n```"  # how ChatGLM3 writes a call (its chat() evals it)


def test_chatglm3_layout_is_its_finetune_codes_prompt_and_python_call(tok: Any) -> None:
    """Structured tools encode as the demo's two system messages (the text's only when non-empty), pre-rendered
    here as plain messages, and the JSON arguments as ChatGLM3's call."""
    for system in (SYSTEM, ""):
        text = [{"role": "system", "content": system, "loss": False}] if system else []
        rendered = [{"role": "system", "content": CHATGLM3_TOOLS, "loss": False}, *text,
                    *conversation()[1:2], {**conversation()[2], "content": CHATGLM3_CALL}, *conversation()[3:]]
        assert encode_conversation(tok, CHATGLM3_LAYOUT, conversation(system)) == encode_conversation(tok, CHATGLM3_LAYOUT, rendered)
    assert CHATGLM3_LAYOUT.blocks(conversation()[2])[0].texts == ("get_weather\n", CHATGLM3_CALL)
    assert GLM4.blocks(conversation()[2])[0].texts == ("get_weather\n", ARGS)  # GLM-4 writes the JSON itself
    # Content that is no JSON object (interpreter code, say) is left as it is.
    code = {"role": "assistant", "content": "print(1)", "loss": True, "metadata": "interpreter"}
    assert CHATGLM3_LAYOUT.blocks(code)[0].texts == ("interpreter\n", "print(1)")


@pytest.mark.parametrize(("template", "call"), [(GLM4, ARGS), (CHATGLM3_LAYOUT, CHATGLM3_CALL)], ids=["glm4", "chatglm3"])
def test_a_test_conversation_ending_in_a_tool_call_is_scored_against_what_the_model_writes(tok: Any, template: Any, call: str) -> None:
    """Generation decodes what follows <|assistant|>: the function name's line, then the call (GLM-4: the JSON, as the
    official template renders `<|assistant|>get_weather\n{...}`; ChatGLM3: its python call), not the bare arguments.
    (This byte-level tokenizer decodes its ids back to the text; ChatGLM3's SentencePiece: test_parity_chatglm3.)"""
    assert split_for_generation(conversation()[:3]) == (conversation()[:2], conversation()[2])
    assert reference_answer(tok, template, conversation()[2]) == "get_weather\n" + call
    assert split_for_generation(conversation()) == (conversation()[:4], conversation()[4])
    assert reference_answer(tok, template, conversation()[4]) == ANSWER


@pytest.mark.parametrize("template", [GLM4, CHATGLM3_LAYOUT], ids=["glm4", "chatglm3"])
def test_openai_style_tools_render_as_their_function(tok: Any, template: Any) -> None:
    openai = [{"type": "function", "function": FUNCTION}]
    assert encode_conversation(tok, template, conversation(tools=openai)) == encode_conversation(tok, template, conversation())


def test_glm4_chat_template_text_by_hand(tok: Any) -> None:
    prompt = conversation()[:4]
    text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert text == ("[gMASK]<sop><|system|>" + GLM4_TOOLS_TEXT + "<|system|>\n" + SYSTEM + "<|user|>\n" + USER
                    + "<|assistant|>get_weather\n" + ARGS + "<|observation|>\n" + OBSERVATION + "<|assistant|>")
    tools_only = tok.apply_chat_template(conversation(system="")[:2], add_generation_prompt=True, tokenize=False)
    assert tools_only == "[gMASK]<sop><|system|>" + GLM4_TOOLS_TEXT + "<|user|>\n" + USER + "<|assistant|>"


@pytest.mark.parametrize("tools", [[FUNCTION], [{"type": "function", "function": FUNCTION}]], ids=["plain", "openai"])
@pytest.mark.parametrize("template", [GLM4, CHATGLM3_LAYOUT], ids=["glm4", "chatglm3"])
def test_saved_chat_template_gives_the_training_ids(tok: Any, template: Any, tools: list[Any], tmp_path: Path) -> None:
    """What an exported model's `apply_chat_template` produces is the prompt and the sample training used."""
    tok.chat_template = template.jinja()
    try:
        tok.save_pretrained(tmp_path)
    finally:
        tok.chat_template = GLM4.jinja()  # the module's tokenizer, as train_tokenizer made it
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    messages = conversation(tools=tools)
    if template is CHATGLM3_LAYOUT:  # the saved template writes a call's content as given: ChatGLM3's own form
        messages[2]["content"] = CHATGLM3_CALL
    for system in (SYSTEM, ""):
        messages[0]["content"] = system
        prompt_text = loaded.apply_chat_template(messages[:4], add_generation_prompt=True, tokenize=False)
        assert enc(loaded, prompt_text) == encode_prompt(tok, template, messages[:4])
        full_text = loaded.apply_chat_template(messages, tokenize=False)
        ids, _, _ = encode_conversation(tok, template, messages)
        assert enc(loaded, full_text) + [loaded.eos_token_id] == ids
