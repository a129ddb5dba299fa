"""`glmtune infer --input`: every line is checked before the model loads; a bad one stops with the file, the line and
the reason (no traceback, no output file), and the answers file is written whole or not at all. A file that cannot
be read or is not UTF-8 is named the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glmtune.inference import BadRequest, read_requests

USER = {"role": "user", "content": "你好"}


def write_lines(path: Path, *lines: str, bom: bool = False) -> Path:
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_prompts_and_conversations_are_read_as_conversations(tmp_path: Path) -> None:
    tools = [{"name": "weather", "description": "天气", "parameters": {"type": "object"}}]
    conversation = [{"role": "system", "content": "", "tools": tools}, USER,
                    {"role": "assistant", "content": "{\"city\": \"北京\"}", "metadata": "weather"},
                    {"role": "observation", "content": "晴"}]
    path = write_lines(tmp_path / "in.jsonl", json.dumps({"prompt": "你好", "id": 7}, ensure_ascii=False), "",
                       json.dumps({"messages": conversation}, ensure_ascii=False), bom=True)
    requests = read_requests(path)
    assert requests == [({"prompt": "你好", "id": 7}, [USER]), ({"messages": conversation}, conversation)]
    # OpenAI-style tools, as training and the exported chat template read them, are the same functions
    openai = [{**conversation[0], "tools": [{"type": "function", "function": tools[0]}]}, *conversation[1:]]
    path = write_lines(tmp_path / "openai.jsonl", json.dumps({"messages": openai}, ensure_ascii=False))
    assert read_requests(path) == [({"messages": openai}, conversation)]


@pytest.mark.parametrize(("line", "reason"), [
    ('{"prompt": "a"', "line 2: not JSON (Expecting ',' delimiter, column 15)"),
    ('{"bad": 1}', """line 2: expected an object with "prompt" (a string) or "messages" (a list of {"role", "content"} objects), one of them; got 'bad'"""),
    ('{"prompt": "a", "messages": []}', "one of them; got 'prompt', 'messages'"),
    ('["a"]', "one of them; got list"),
    ('{"prompt": " "}', 'line 2: "prompt" must be a non-empty string'),
    ('{"messages": [{"role": "human", "content": "a"}]}', "line 2: \"messages\": message 0: unknown role 'human'"),
    ('{"messages": [{"role": "user"}]}', "line 2: \"messages\": message 0: missing key 'content'"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "tool", "name": "f", "parameters": {}, "observation": "o"}]}',
     "message 1: unknown role 'tool' (expected one of system, user, assistant, observation); a ChatGLM3 demo `tool` "
     "message (a data format: format chatglm3) is here an assistant message with the function's name as `metadata`"),
    ('{"messages": []}', 'line 2: "messages": no user message'),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
     "line 2: \"messages\" ends with an assistant message; the model answers the last user or observation message"),
    ('{"prompt": "a", "prompt": "b"}', "line 2: prompt written twice in one object: JSON keeps only the last"),
    ('{"messages": [{"role": "user", "content": "a", "content": "b"}]}', "line 2: messages[0].content written twice"),
    ('{"prompt": "抱抱你\\ud83d"}', "line 2: prompt (\\ud83d at character 3): a lone UTF-16 surrogate"),  # the tokenizer's TypeError
    # a system prompt or history beside "prompt" was carried along as another key and answered without (h22)
    ('{"prompt": "a", "system": "你是心理咨询师"}', """line 2: "prompt" beside 'system': a "prompt" is answered alone"""),
    ('{"prompt": "a", "history": [["q", "r"]], "id": 3}', """line 2: "prompt" beside 'history': a "prompt" is answered"""),
])
def test_a_bad_line_is_named_with_its_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = write_lines(tmp_path / "in.jsonl", '{"prompt": "ok"}', line)
    with pytest.raises(BadRequest) as caught:
        read_requests(path)
    assert str(caught.value).startswith(f"{path}, ") and reason in str(caught.value), str(caught.value)


@pytest.mark.parametrize(("data", "reason"), [
    (b'{"prompt": "ok"}\n{"prompt": "\xff bad"}\n', "line 2: not UTF-8 (byte 0xff, invalid start byte)"),
    (b'\xef\xbb\xbf{"prompt": "ok"}\r{"prompt": "\xe4\xb8"}\n', "line 2: not UTF-8 (byte 0xe4, invalid continuation byte)"),
    (b'{"prompt": "ok"}\r\n\r\n\x80{"prompt": "x"}\n', "line 3: not UTF-8 (byte 0x80, invalid start byte)"),
])
def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path: Path, data: bytes, reason: str) -> None:
    (path := tmp_path / "in.jsonl").write_bytes(data)
    with pytest.raises(BadRequest) as caught:
        read_requests(path)
    assert str(caught.value) == f"{path}, {reason}: save the file as UTF-8"


def test_a_missing_file_or_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"missing\.jsonl: cannot read it \(No such file or directory\)"):
        read_requests(tmp_path / "missing.jsonl")
    with pytest.raises(BadRequest, match=r": cannot read it \(Is a directory\)"):
        read_requests(tmp_path)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no request in the file"):
        read_requests(write_lines(tmp_path / "in.jsonl", "", " "))


@pytest.mark.parametrize(("data", "error"), [
    (b'{"prompt": "ok"}\n{"bad": 1}\n', "{path}, line 2: expected an object"),
    (b'{"prompt": "ok"}\n{"prompt": "\xff bad"}\n', "{path}, line 2: not UTF-8 (byte 0xff, invalid start byte)"),
    (None, "{path}: cannot read it (No such file or directory)"),
])
def test_the_command_checks_the_input_before_loading_the_model(tmp_path: Path, data: bytes | None, error: str) -> None:
    """The model folder does not exist: the input's error comes first, and no output file is left."""
    path = tmp_path / "in.jsonl"
    if data is not None:
        path.write_bytes(data)
    out = tmp_path / "answers.jsonl"
    result = subprocess.run([sys.executable, "-m", "glmtune.cli", "infer", str(tmp_path / "no-model"), "--input",
                             str(path), "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith(f"glmtune: error: {error.format(path=path)}") and len(result.stderr.splitlines()) == 1
    assert not out.exists()
