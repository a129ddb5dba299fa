"""encode_conversation / encode_prompt checked against ids built by hand from a tiny trained tokenizer."""

from __future__ import annotations

from typing import Any

import pytest

from glmtune.chat_template import (
    IGNORE_INDEX,
    encode_conversation,
    encode_prompt,
    get_template,
    reference_answer,
    split_for_generation,
    stop_token_ids,
)
from glmtune.family import GLM4_CHAT_TOKENS as SPECIAL_TOKENS
from glmtune.model.tiny import train_tokenizer

GLM4 = get_template("glm4")
TEXTS = ["你是一个乐于助人的助手", "今天天气怎么样", "今天天气很好，适合去公园散步", "类型#裙*颜色#红色", "你好", "再见"]


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer(TEXTS, 300, family="glm4")


def tid(tok: Any, token: str) -> int:
    value = tok.convert_tokens_to_ids(token)
    assert isinstance(value, int) and value != tok.unk_token_id
    return value


def enc(tok: Any, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def msg(role: str, content: str, loss: bool) -> dict[str, Any]:
    return {"role": role, "content": content, "loss": loss}


SYSTEM, QUESTION, ANSWER = "你是一个乐于助人的助手", "今天天气怎么样", "今天天气很好，适合去公园散步"
CONVERSATION = [msg("system", SYSTEM, False), msg("user", QUESTION, False), msg("assistant", ANSWER, True)]


def test_special_tokens_are_single_distinct_ids(tok: Any) -> None:
    ids = [tid(tok, t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    assert enc(tok, "<|user|>") == [tid(tok, "<|user|>")]
    assert tok.eos_token_id == tid(tok, "<|endoftext|>")


def test_system_user_assistant_by_hand(tok: Any) -> None:
    ids, labels, truncated = encode_conversation(tok, GLM4, CONVERSATION)
    nl = enc(tok, "\n")
    system_part = [tid(tok, "<|system|>"), *nl, *enc(tok, SYSTEM)]
    user_part = [tid(tok, "<|user|>"), *nl, *enc(tok, QUESTION)]
    answer = enc(tok, ANSWER)
    prefix = [tid(tok, "[gMASK]"), tid(tok, "<sop>")]
    eos = tid(tok, "<|endoftext|>")
    expected = [*prefix, *system_part, *user_part, tid(tok, "<|assistant|>"), *nl, *answer, eos]
    assert ids == expected
    assert ids[:2] == prefix
    n_untrained = len(prefix) + len(system_part) + len(user_part) + 1  # ... up to and including <|assistant|>
    assert labels == [IGNORE_INDEX] * n_untrained + [*nl, *answer, eos]
    assert len(labels) == len(ids)
    assert truncated is False


def test_metadata_goes_in_the_header(tok: Any) -> None:
    messages = [msg("user", "你好", False), {**msg("assistant", "再见", True), "metadata": "今天"}]
    ids, labels, _ = encode_conversation(tok, GLM4, messages)
    header = [tid(tok, "<|assistant|>"), *enc(tok, "今天\n")]
    start = 2 + 1 + len(enc(tok, "\n")) + len(enc(tok, "你好"))
    assert ids[start:] == [*header, *enc(tok, "再见"), tok.eos_token_id]
    assert labels[start] == IGNORE_INDEX and labels[start + 1:] == ids[start + 1:]


def test_two_turns_train_the_next_role_token_as_terminator(tok: Any) -> None:
    messages = [msg("user", "你好", False), msg("assistant", "你好", True),
                msg("user", "再见", False), msg("assistant", "再见", True)]
    ids, labels, _ = encode_conversation(tok, GLM4, messages)
    nl = enc(tok, "\n")
    u, a = tid(tok, "<|user|>"), tid(tok, "<|assistant|>")
    first = [u, *nl, *enc(tok, "你好"), a, *nl, *enc(tok, "你好")]
    second = [u, *nl, *enc(tok, "再见"), a, *nl, *enc(tok, "再见")]
    assert ids == [tid(tok, "[gMASK]"), tid(tok, "<sop>"), *first, *second, tok.eos_token_id]
    ignored = lambda n: [IGNORE_INDEX] * n  # noqa: E731
    q1 = 1 + len(nl) + len(enc(tok, "你好"))
    q2 = len(nl) + len(enc(tok, "再见"))  # second user turn after its <|user|> (which is trained)
    expected = [
        *ignored(2 + q1 + 1), *nl, *enc(tok, "你好"),   # first answer
        u,                                              # its terminator: the next <|user|>
        *ignored(q2 + 1), *nl, *enc(tok, "再见"), tok.eos_token_id,
    ]
    assert labels == expected
    assert labels.count(u) == 1


def test_untrained_assistant_turn_is_not_learned(tok: Any) -> None:
    messages = [msg("user", "你好", False), msg("assistant", "你好", False), msg("user", "再见", False), msg("assistant", "再见", True)]
    ids, labels, _ = encode_conversation(tok, GLM4, messages)
    second_user = len(ids) - 1 - len(enc(tok, "再见")) - len(enc(tok, "\n")) - 1 - len(enc(tok, "再见")) - len(enc(tok, "\n")) - 1
    assert ids[second_user] == tid(tok, "<|user|>")
    assert set(labels[: second_user + 1]) == {IGNORE_INDEX}


@pytest.mark.parametrize("cutoff", [5, 12])
def test_cutoff_len_truncates(tok: Any, cutoff: int) -> None:
    full_ids, full_labels, full_truncated = encode_conversation(tok, GLM4, CONVERSATION)
    assert not full_truncated and len(full_ids) > cutoff
    ids, labels, truncated = encode_conversation(tok, GLM4, CONVERSATION, cutoff_len=cutoff)
    assert truncated is True
    assert ids == full_ids[:cutoff] and labels == full_labels[:cutoff]


def test_cutoff_len_exactly_the_length_does_not_truncate(tok: Any) -> None:
    full_ids, _, _ = encode_conversation(tok, GLM4, CONVERSATION)
    ids, _, truncated = encode_conversation(tok, GLM4, CONVERSATION, cutoff_len=len(full_ids))
    assert truncated is False and ids == full_ids


def test_encode_prompt_matches_the_tokenizers_chat_template(tok: Any) -> None:
    prompt_messages, answer = split_for_generation(CONVERSATION)
    assert reference_answer(tok, GLM4, answer) == ANSWER and [m["role"] for m in prompt_messages] == ["system", "user"]
    ids = encode_prompt(tok, GLM4, prompt_messages)
    assert ids[-1] == tid(tok, "<|assistant|>")
    text = tok.apply_chat_template(prompt_messages, add_generation_prompt=True, tokenize=False)
    assert text == f"[gMASK]<sop><|system|>\n{SYSTEM}<|user|>\n{QUESTION}<|assistant|>"
    assert ids == enc(tok, text)
    # the prompt is exactly the training ids up to the assistant role token
    full_ids, _, _ = encode_conversation(tok, GLM4, CONVERSATION)
    assert full_ids[: len(ids)] == ids


def test_encode_prompt_max_length_cuts_as_the_demos_do(tok: Any) -> None:
    """The official finetune demos' process_batch_eval (ChatGLM3 and GLM-4): `input_ids[:max_input_length] +
    output_prompt[:1]`, input_ids being [gMASK] <sop> and the messages before the answer, output_prompt[:1] the
    <|assistant|> token: the messages keep max_input_length tokens, then the role token comes whole."""
    messages = [tid(tok, "[gMASK]"), tid(tok, "<sop>"), tid(tok, "<|system|>"), *enc(tok, "\n"), *enc(tok, SYSTEM),
                tid(tok, "<|user|>"), *enc(tok, "\n"), *enc(tok, QUESTION)]
    assistant = [tid(tok, "<|assistant|>")]
    assert encode_prompt(tok, GLM4, CONVERSATION[:2]) == messages + assistant
    for max_input_length in (6, len(messages) - 1):
        assert encode_prompt(tok, GLM4, CONVERSATION[:2], max_length=max_input_length) == messages[:max_input_length] + assistant
    assert encode_prompt(tok, GLM4, CONVERSATION[:2], max_length=len(messages)) == messages + assistant


def test_split_for_generation_without_assistant() -> None:
    with pytest.raises(ValueError, match="no assistant"):
        split_for_generation([msg("user", "q", False)])


def test_stop_tokens_and_unknown_template(tok: Any) -> None:
    assert stop_token_ids(tok, GLM4) == [tid(tok, "<|endoftext|>"), tid(tok, "<|user|>"), tid(tok, "<|observation|>")]
    with pytest.raises(KeyError, match="unknown chat template"):
        get_template("llama")
