"""LLaMA-Factory's dataset_info.json entries read as LLaMA-Factory reads them: format, columns, tags, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.formats import A, S, U, convert

from glmtune.data.formats import dataset_info_file, from_dataset_info
from glmtune.data.conversation import InvalidRecord

INFO = {
    "plain": {"file_name": "plain.json"},
    "renamed": {"file_name": "sub/qa.jsonl", "columns": {"prompt": "question", "response": "answer", "system": "sys"}},
    "chat": {"file_name": "chat.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}},
    "chat_default": {"file_name": "chat.json", "formatting": "sharegpt"},
    "openai_like": {"file_name": "o.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"}},
    "hub": {"hf_hub_url": "someone/data", "columns": {"prompt": "q"}},
    "script": {"script_url": "my_script"},
    "rlhf": {"file_name": "dpo.json", "ranking": True, "formatting": "sharegpt", "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "kto": {"file_name": "kto.json", "formatting": "sharegpt", "columns": {"messages": "messages", "kto_tag": "label"}},
    "mm": {"file_name": "mm.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"}},
    "openai": {"file_name": "o.json", "formatting": "openai"},
    "pretrain": {"file_name": "c4.json", "columns": {"prompt": "text"}},
    "bad_tags": {"file_name": "o.json", "formatting": "sharegpt", "tags": {"role_tag": "role"}},
}


@pytest.fixture
def info_path(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "dataset_info.json"
    path.parent.mkdir()
    path.write_text(json.dumps(INFO), encoding="utf-8")
    return path


def test_dataset_info_alpaca_defaults_read_only_instruction_input_output(info_path: Path) -> None:
    fmt, options = from_dataset_info(info_path, "plain")
    assert (fmt, options) == ("alpaca", {"columns": {"prompt": "instruction", "query": "input", "response": "output",
                                                      "system": None, "history": None, "tools": None}})
    record = {"instruction": "q", "input": "x", "output": "a", "system": "not read by LLaMA-Factory without columns.system"}
    assert convert(fmt, record, **options) == [U("q\nx"), A("a")]


def test_dataset_info_columns_replace_all_defaults(info_path: Path) -> None:
    fmt, options = from_dataset_info(info_path, "renamed")
    assert options["columns"] == {"prompt": "question", "query": None, "response": "answer", "system": "sys", "history": None, "tools": None}
    assert convert(fmt, {"question": "q", "input": "not read", "answer": "a", "sys": "s"}, **options) == [S("s"), U("q"), A("a")]
    assert dataset_info_file(info_path, "renamed") == info_path.parent / "sub" / "qa.jsonl"


def test_dataset_info_sharegpt(info_path: Path) -> None:
    assert from_dataset_info(info_path, "chat") == ("sharegpt", {"columns": {"messages": "conversations", "system": None, "tools": "tools"}})
    assert from_dataset_info(info_path, "chat_default") == ("sharegpt", {"columns": {"messages": "conversations", "system": None, "tools": None}})
    fmt, options = from_dataset_info(info_path, "openai_like")
    assert options["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                               "observation_tag": None, "function_tag": None, "system_tag": "system"}
    record = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert convert(fmt, record, **options) == [S("s"), U("q"), A("a")]
    with pytest.raises(InvalidRecord, match="unknown role 'observation'"):  # its observation tag is unset, as in LLaMA-Factory
        convert(fmt, {"messages": [{"role": "user", "content": "q"}, {"role": "observation", "content": "r"}]}, **options)


@pytest.mark.parametrize(("name", "message"), [
    ("missing", "no dataset entry 'missing'"),
    ("hub", "dataset 'hub' has no local file_name (it loads from hf_hub_url 'someone/data'"),
    ("script", "dataset 'script' has no local file_name (it loads from script_url 'my_script'"),
    ("rlhf", "dataset 'rlhf': preference data (ranking: true) is not supported"),
    ("kto", "dataset 'kto': KTO data (columns.kto_tag) is not supported"),
    ("mm", "dataset 'mm': images (columns.images) is not supported"),
    ("openai", "dataset 'openai': formatting 'openai' is not supported"),
    ("pretrain", "dataset 'pretrain': needs prompt and response columns"),
    ("bad_tags", "dataset 'bad_tags': tags must name role_tag, content_tag, user_tag and assistant_tag"),
])
def test_dataset_info_unsupported_entries_name_file_and_entry(info_path: Path, name: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        from_dataset_info(info_path, name)
    assert str(info.value).startswith(f"{info_path}: ")
    assert message in str(info.value)


def test_dataset_info_file_needs_a_file_name(info_path: Path) -> None:
    assert dataset_info_file(info_path, "plain") == info_path.parent / "plain.json"
    with pytest.raises(ValueError, match="has no local file_name"):
        dataset_info_file(info_path, "hub")


def test_an_entry_written_twice_or_with_a_key_twice_is_refused_other_entries_still_read(tmp_path: Path) -> None:
    path = tmp_path / "dataset_info.json"
    path.write_text('{"mine": {"file_name": "a.json"}, "mine": {"file_name": "b.json"}, "fine": {"file_name": "f.json"},'
                    ' "cols": {"file_name": "c.json", "columns": {"prompt": "q", "prompt": "p", "response": "r"}}}',
                    encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{path}: mine written twice: JSON \\(and LLaMA-Factory\\) keeps only the last"):
        dataset_info_file(path, "mine")
    with pytest.raises(ValueError, match=r"cols\.columns\.prompt written twice"):
        from_dataset_info(path, "cols")
    assert dataset_info_file(path, "fine") == tmp_path / "f.json"
