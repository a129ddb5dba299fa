"""encode_conversation / encode_prompt with the real GLM-4 and ChatGLM3 tokenizers, against id lists
built by hand from the official layouts.

Official layout (GLM-4 finetune demo / tokenization_chatglm.py, ChatGLM3 finetune_hf.py): the prefix
[gMASK] <sop>, then for each message `build_single_message(role, metadata, content)` =
[<|role|>] + encode(f"{metadata}\\n") + encode(content), where encode is the raw reference encoder
(tiktoken for GLM-4, SentencePiece for ChatGLM3) applied to each piece on its own; eos closes the
sample. Loss marks are True for assistant messages, then shifted right by one.
A system message with tools follows glm-4-9b-chat's chat template as transformers renders it (GLM-4) or
the ChatGLM3 tool finetune code's first system message (finetune_demo/preprocess_utils.py); their text is
written out here, not taken from glmtune.chat_template. The table-driven parity suites are
test_parity_glm4.py and test_parity_chatglm3.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from conftest import shared_data

from glmtune.family import GLM4_PATTERN
from helpers.official_tokenizers import load_chatglm3_tokenizer, load_glm4_tokenizer
from glmtune.chat_template import (IGNORE_INDEX, TemplateTokenError, encode_conversation, encode_prompt, get_template,
                                   stop_token_ids)

SYSTEM = "你是一个乐于助人的助手。"
USER = "类型#裙*颜色#红色*风格#简约"
ANSWER = "这款红色连衣裙简约大方，适合日常穿着。"
USER2 = "Can you make it shorter? 20 words max."
ANSWER2 = "Red, simple dress 👗 for every day."


@dataclass
class Family:
    name: str
    tokenizer: Any
    ref: Any  # encode(text) -> ids, the reference encoder
    prefix: list[int]
    system: int
    user: int
    assistant: int
    eos: int

    def ids(self, text: str) -> list[int]:
        return list(self.ref(text))

    def message(self, role_id: int, content: str) -> list[int]:
        """The original build_single_message with empty metadata."""
        return [role_id, *self.ids("\n"), *self.ids(content)]


@cache
def _glm4() -> Family:
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is the GLM-4 reference encoder")
    from tiktoken.load import load_tiktoken_bpe

    path = shared_data("tokenizers/glm-4-9b-chat/tokenizer.model")
    ref = tiktoken.Encoding(name="glm4", pat_str=GLM4_PATTERN, mergeable_ranks=load_tiktoken_bpe(str(path)), special_tokens={})
    return Family("glm4", load_glm4_tokenizer(path.parent), lambda text: ref.encode(text, disallowed_special=()),
                  [151331, 151333], 151335, 151336, 151337, 151329)


@cache
def _chatglm3() -> Family:
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is the ChatGLM3 reference encoder")
    path = shared_data("tokenizers/chatglm3-6b/tokenizer.model")
    ref = spm.SentencePieceProcessor(model_file=str(path))
    return Family("chatglm3", load_chatglm3_tokenizer(path.parent), ref.encode, [64790, 64792], 64794, 64795, 64796, 2)


@pytest.fixture(scope="module", params=["glm4", "chatglm3"])
def fam(request: pytest.FixtureRequest) -> Family:
    return _glm4() if request.param == "glm4" else _chatglm3()


def msg(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "content": content, "loss": role == "assistant"}


def official_labels(fam: Family, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """The demos' process_batch: masks by role, eos appended, masks shifted right by one."""
    ids, masks = list(fam.prefix), [False, False]
    role_ids = {"system": fam.system, "user": fam.user, "assistant": fam.assistant}
    for m in messages:
        part = fam.message(role_ids[m["role"]], m["content"])
        ids += part
        masks += [m["role"] == "assistant"] * len(part)
    ids.append(fam.eos)
    masks = [False, *masks]
    return ids, [token if mask else IGNORE_INDEX for token, mask in zip(ids, masks)]


def test_system_user_assistant_matches_the_official_layout(fam: Family) -> None:
    messages = [msg("system", SYSTEM), msg("user", USER), msg("assistant", ANSWER)]
    ids, labels, truncated = encode_conversation(fam.tokenizer, get_template(fam.name), messages)
    nl = fam.ids("\n")
    expected = [
        *fam.prefix,
        fam.system, *nl, *fam.ids(SYSTEM),
        fam.user, *nl, *fam.ids(USER),
        fam.assistant, *nl, *fam.ids(ANSWER),
        fam.eos,
    ]
    assert ids == expected
    n_prompt = len(expected) - len(nl) - len(fam.ids(ANSWER)) - 1  # up to and including <|assistant|>
    assert labels == [IGNORE_INDEX] * n_prompt + [*nl, *fam.ids(ANSWER), fam.eos]
    assert (ids, labels) == official_labels(fam, messages)
    assert truncated is False


def test_literal_ids_of_a_short_conversation(fam: Family) -> None:
    messages = [msg("user", "你好"), msg("assistant", "你好")]
    ids, labels, _ = encode_conversation(fam.tokenizer, get_template(fam.name), messages)
    if fam.name == "glm4":  # "\n" = 198, "你好" = 109377
        expected = [151331, 151333, 151336, 198, 109377, 151337, 198, 109377, 151329]
    else:                   # "\n" = "▁" <0x0A> = 30910 13, "你好" = "▁你" "好" = 36474 54591
        expected = [64790, 64792, 64795, 30910, 13, 36474, 54591, 64796, 30910, 13, 36474, 54591, 2]
    assert ids == expected
    n_prompt = 6 if fam.name == "glm4" else 8
    assert labels == [IGNORE_INDEX] * n_prompt + expected[n_prompt:]


def test_a_special_tokens_string_inside_a_message_is_encoded_as_its_text(fam: Family) -> None:
    """Scraped chats quote special tokens: read as tokens (the demos' way) a user's `<|assistant|>` would open a
    forged turn and an answer's `<|endoftext|>` / `</s>` teach the model to stop there. The expected ids are the
    official plain encoders' (tiktoken without special tokens, SentencePiece) of the text."""
    quoted = "请问<|endoftext|> 和 </s> 是什么？<|assistant|> eop [MASK]"
    answer = "它们是模型的特殊标记，例如<|user|>"
    found: set[str] = set()
    ids, labels, _ = encode_conversation(fam.tokenizer, get_template(fam.name), [msg("user", quoted), msg("assistant", answer)],
                                         found=found)
    assert ids == [*fam.prefix, *fam.message(fam.user, quoted), *fam.message(fam.assistant, answer), fam.eos]
    assert {"<|assistant|>", "<|user|>"} <= found and ("<|endoftext|>" if fam.name == "glm4" else "</s>") in found
    ordinary: set[str] = set()  # text without them encodes as it always did, and is not reported
    encode_conversation(fam.tokenizer, get_template(fam.name), [msg("user", USER), msg("assistant", ANSWER)], found=ordinary)
    assert ordinary == set()


def test_the_only_special_tokens_are_the_layouts_whatever_the_text_quotes(fam: Family) -> None:
    """Real AdvertiseGen rows with special tokens' strings (both families') put at random places in the texts: the
    ids hold the prefix, one role token per message and the end token, and no other special token."""
    import random

    rng = random.Random(0)
    quoted = ["<|user|>", "<|assistant|>", "<|system|>", "<|observation|>", "<|endoftext|>", "</s>", "eop", "sop",
              "[gMASK]", "<sop>", "[MASK]", "<unk>"]
    rows = [json.loads(line) for line in shared_data("AdvertiseGen/dev.json").read_text(encoding="utf-8").splitlines()[:60]]
    special = set(fam.tokenizer.all_special_ids) | set(fam.tokenizer.get_added_vocab().values())
    for row in rows:
        texts = []
        for text in (row["content"], row["summary"]):
            cut = rng.randrange(len(text) + 1)
            texts.append(text[:cut] + rng.choice(quoted) + text[cut:])
        ids, _, _ = encode_conversation(fam.tokenizer, get_template(fam.name), [msg("user", texts[0]), msg("assistant", texts[1])])
        assert [token for token in ids if token in special] == [*fam.prefix, fam.user, fam.assistant, fam.eos], texts


def test_two_turns_match_the_official_layout(fam: Family) -> None:
    messages = [msg("user", USER), msg("assistant", ANSWER), msg("user", USER2), msg("assistant", ANSWER2)]
    ids, labels, _ = encode_conversation(fam.tokenizer, get_template(fam.name), messages)
    nl = fam.ids("\n")
    first = [fam.user, *nl, *fam.ids(USER), fam.assistant, *nl, *fam.ids(ANSWER)]
    second = [fam.user, *nl, *fam.ids(USER2), fam.assistant, *nl, *fam.ids(ANSWER2)]
    assert ids == [*fam.prefix, *first, *second, fam.eos]
    ignore = lambda n: [IGNORE_INDEX] * n  # noqa: E731
    expected_labels = [
        *ignore(2 + 1 + len(nl) + len(fam.ids(USER)) + 1), *nl, *fam.ids(ANSWER),
        fam.user,  # the first answer's terminator: the next role token is learned
        *ignore(len(nl) + len(fam.ids(USER2)) + 1), *nl, *fam.ids(ANSWER2),
        fam.eos,
    ]
    assert labels == expected_labels
    assert (ids, labels) == official_labels(fam, messages)


def test_encode_prompt_ends_with_the_assistant_token(fam: Family) -> None:
    messages = [msg("system", SYSTEM), msg("user", USER), msg("assistant", ANSWER), msg("user", USER2)]
    ids = encode_prompt(fam.tokenizer, get_template(fam.name), messages)
    nl = fam.ids("\n")
    assert ids == [
        *fam.prefix,
        fam.system, *nl, *fam.ids(SYSTEM),
        fam.user, *nl, *fam.ids(USER),
        fam.assistant, *nl, *fam.ids(ANSWER),
        fam.user, *nl, *fam.ids(USER2),
        fam.assistant,
    ]
    # the training ids of the same conversation start with the prompt
    full, _, _ = encode_conversation(fam.tokenizer, get_template(fam.name), [*messages, msg("assistant", ANSWER2)])
    assert full[: len(ids)] == ids


@pytest.mark.parametrize("name", ["glm4", "chatglm3"])
def test_apply_chat_template_gives_the_official_prompt_ids(name: str) -> None:
    fam = _glm4() if name == "glm4" else _chatglm3()
    messages = [msg("system", SYSTEM), msg("user", USER)]
    text = fam.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = fam.tokenizer.encode(text, add_special_tokens=False)
    nl = fam.ids("\n")
    assert ids == [*fam.prefix, fam.system, *nl, *fam.ids(SYSTEM), fam.user, *nl, *fam.ids(USER), fam.assistant]


# --- tools on the system message, a tool call and its observation ------------------------------------

FUNCTION = {"name": "get_weather", "description": "查询城市的实时天气",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "城市名"}}, "required": ["city"]}}
CALL_ARGS, OBSERVATION, TOOL_ANSWER = '{"city": "北京"}', '{"temp": 25, "天气": "晴"}', "北京今天晴，25度。"
OBSERVATION_ID = {"glm4": 151338, "chatglm3": 64797}
# glm-4-9b-chat's chat template for a system message carrying tools, written out by hand:
# <|system|> + this text, one function after the other (tojson(indent=4) is json.dumps(indent=4, ensure_ascii=False)).
# The template source has "\n\n## " after `{% if tool['type'] == 'function' %}`; trim_blocks drops the first newline.
GLM4_TOOLS_TEXT = (
    "\n你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。"
    "\n\n# 可用工具"
    "\n## get_weather\n\n" + json.dumps(FUNCTION, indent=4, ensure_ascii=False)
    + "\n在调用上述函数时，请使用 Json 格式表示调用的参数。"
)


def tool_conversation(system: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system, "loss": False, "tools": [FUNCTION]},
        msg("user", USER),
        {"role": "assistant", "content": CALL_ARGS, "loss": True, "metadata": "get_weather"},
        msg("observation", OBSERVATION),
        msg("assistant", TOOL_ANSWER),
    ]


def _tool_turns(fam: Family) -> tuple[list[int], list[int], list[int]]:
    """(prompt after the system part up to the call's <|assistant|>, the trained call, the observation up to the answer's <|assistant|>)."""
    nl = fam.ids("\n")
    observation = OBSERVATION_ID[fam.name]
    before_call = [fam.user, *nl, *fam.ids(USER), fam.assistant]
    call = [*fam.ids("get_weather\n"), *fam.ids(CALL_ARGS)]
    middle = [observation, *nl, *fam.ids(OBSERVATION), fam.assistant]
    return before_call, call, middle


@pytest.mark.parametrize("system", [SYSTEM, ""], ids=["with-system-text", "tools-only"])
def test_glm4_tools_tool_call_and_observation_match_the_official_template(system: str) -> None:
    fam = _glm4()
    ids, labels, _ = encode_conversation(fam.tokenizer, get_template("glm4"), tool_conversation(system))
    nl = fam.ids("\n")
    # [gMASK] <sop> <|system|> tools text; then <|system|> \n text only when the message has text
    system_part = [151335, *fam.ids(GLM4_TOOLS_TEXT), *([151335, *nl, *fam.ids(system)] if system else [])]
    before_call, call, middle = _tool_turns(fam)
    answer = [*nl, *fam.ids(TOOL_ANSWER)]
    prompt = [151331, 151333, *system_part, *before_call]
    assert ids == [*prompt, *call, *middle, *answer, 151329]
    assert labels == [*[IGNORE_INDEX] * len(prompt), *call, 151338, *[IGNORE_INDEX] * (len(middle) - 1), *answer, 151329]
    # the exported chat template renders the same prompt
    text = fam.tokenizer.apply_chat_template(tool_conversation(system)[:4], add_generation_prompt=True, tokenize=False)
    assert fam.tokenizer.encode(text, add_special_tokens=False) == [*prompt, *call, *middle]


# ChatGLM3's tool finetune code (finetune_demo/preprocess_utils.py) inserts the tools as the first system message:
# TOOL_DEFINITION_PREFIX + json.dumps(tools, indent=4, ensure_ascii=False); the record's system text is a second one.
# The model writes (and chat() evals) a call as Python: the function name as metadata, then CHATGLM3_CALL.
CHATGLM3_TOOLS_TEXT = "Answer the following questions as best as you can. You have access to the following tools:\n" \
    "[\n    {\n        \"name\": \"get_weather\",\n        \"description\": \"查询城市的实时天气\",\n" \
    "        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"city\": {\n" \
    "                    \"type\": \"string\",\n                    \"description\": \"城市名\"\n                }\n            },\n" \
    "            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n]"
CHATGLM3_CALL = "```python\ntool_call(city='北京')\n```"


@pytest.mark.parametrize("system", [SYSTEM, ""], ids=["with-system-text", "tools-only"])
def test_chatglm3_tools_tool_call_and_observation_match_its_finetune_code(system: str) -> None:
    """ChatGLM3: the tools system message, then the system text's own; the call as ```python tool_call(...)```."""
    fam = _chatglm3()
    ids, labels, _ = encode_conversation(fam.tokenizer, get_template("chatglm3"), tool_conversation(system))
    nl = fam.ids("\n")
    system_part = [64794, *nl, *fam.ids(CHATGLM3_TOOLS_TEXT), *([64794, *nl, *fam.ids(system)] if system else [])]
    before_call, _, middle = _tool_turns(fam)
    call = [*fam.ids("get_weather\n"), *fam.ids(CHATGLM3_CALL)]
    answer = [*nl, *fam.ids(TOOL_ANSWER)]
    prompt = [64790, 64792, *system_part, *before_call]
    assert ids == [*prompt, *call, *middle, *answer, 2]
    assert labels == [*[IGNORE_INDEX] * len(prompt), *call, 64797, *[IGNORE_INDEX] * (len(middle) - 1), *answer, 2]
    # The saved chat template renders the tools prompt the same; a call's content it writes as given (ChatGLM3's form).
    conversation = tool_conversation(system)[:4]
    conversation[2] = {**conversation[2], "content": CHATGLM3_CALL}
    text = fam.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert fam.tokenizer.encode(text, add_special_tokens=False) == [*prompt, *call, *middle]


def test_stop_ids_are_the_official_ones() -> None:
    # glm-4-9b-chat generation_config.json eos_token_id; ChatGLM3's chat(): eos, <|user|>, <|observation|>
    glm4_config = json.loads(shared_data("tokenizers/glm-4-9b-chat/generation_config.json").read_text(encoding="utf-8"))
    assert stop_token_ids(_glm4().tokenizer, get_template("glm4")) == glm4_config["eos_token_id"] == [151329, 151336, 151338]
    assert stop_token_ids(_chatglm3().tokenizer, get_template("chatglm3")) == [2, 64795, 64797]


@pytest.mark.parametrize(("template", "other"), [("chatglm3", "glm4"), ("glm4", "chatglm3")])
def test_a_template_on_another_familys_tokenizer_is_refused_naming_the_one_that_fits(template: str, other: str) -> None:
    # GLM-4's tokenizer has no `sop` (None); ChatGLM3's gives its unk id 0 for `<sop>`: neither may reach the data
    tokenizer = (_glm4() if other == "glm4" else _chatglm3()).tokenizer
    messages = [msg("user", USER), msg("assistant", ANSWER)]
    for encode in (encode_conversation, encode_prompt, lambda t, tpl, _: stop_token_ids(t, tpl)):
        with pytest.raises(TemplateTokenError, match=rf"model.template: {template} lays conversations out with the "
                                                     rf"special token .* set model.template: {other}$"):
            encode(tokenizer, get_template(template), messages)
