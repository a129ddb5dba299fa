"""`glmtune infer --input`: every line is checked before the model loads; a bad one stops with the file, the line and
the reason (no traceback, no output file), and the answers file is written whole or not at all."""

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


@pytest.mark.parametrize(("line", "reason"), [
    ('{"prompt": "a"', "line 2: not JSON (Expecting ',' delimiter, column 15)"),
    ('{"bad": 1}', """line 2: expected an object with "prompt" (a string) or "messages" (a list of {"role", "content"} objects), one of them; got 'bad'"""),
    ('{"prompt": "a", "messages": []}', "one of them; got 'prompt', 'messages'"),
    ('["a"]', "one of them; got list"),
    ('{"prompt": " "}', 'line 2: "prompt" must be a non-empty string'),
    ('{"messages": [{"role": "human", "content": "a"}]}', "line 2: \"messages\": message 0: unknown role 'human'"),
    ('{"messages": [{"role": "user"}]}', "line 2: \"messages\": message 0: missing key 'content'"),
    ('{"messages": []}', 'line 2: "messages": no user message'),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
     "line 2: \"messages\" ends with a assistant message; the model answers the last user or observation message"),
    ('{"prompt": "a", "prompt": "b"}', "line 2: prompt written twice in one object: JSON keeps only the last"),
    ('{"messages": [{"role": "user", "content": "a", "content": "b"}]}', "line 2: messages[0].content written twice"),
    ('{"prompt": "抱抱你\\ud83d"}', "line 2: prompt (\\ud83d at character 3): a lone UTF-16 surrogate"),  # the tokenizer's TypeError
])
def test_a_bad_line_is_named_with_its_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = write_lines(tmp_path / "in.jsonl", '{"prompt": "ok"}', line)
    with pytest.raises(BadRequest) as caught:
        read_requests(path)
    assert str(caught.value).startswith(f"{path}, ") and reason in str(caught.value), str(caught.value)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no request in the file"):
        read_requests(write_lines(tmp_path / "in.jsonl", "", " "))


def test_the_command_checks_the_input_before_loading_the_model(tmp_path: Path) -> None:
    """The model folder does not exist: the input's error comes first, and no output file is left."""
    path = write_lines(tmp_path / "in.jsonl", '{"prompt": "ok"}', '{"bad": 1}')
    out = tmp_path / "answers.jsonl"
    result = subprocess.run([sys.executable, "-m", "glmtune.cli", "infer", str(tmp_path / "no-model"), "--input",
                             str(path), "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith(f"glmtune: error: {path}, line 2: expected an object")
    assert not out.exists()
