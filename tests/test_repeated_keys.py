"""Keys written twice in one JSON object or YAML mapping are found, with where they are, not kept silently."""

from __future__ import annotations

import json
from pathlib import Path

from glmtune.repeated_keys import config_file_problems, loads, repeated_paths, yaml_repeated


def test_json_objects_with_a_key_twice_are_marked_at_any_depth_and_keep_jsons_value() -> None:
    text = '[{"a": 1, "b": [{"role": "user", "role": "assistant"}], "a": 3}, {"a": 1}]'
    parsed = loads(text)
    assert parsed == json.loads(text)  # the same values json keeps: only marked
    assert repeated_paths(parsed) == ["[0].a", "[0].b[0].role"]
    assert repeated_paths(parsed[1]) == [] and repeated_paths(loads('{"x": {"y": 1}, "z": [1, 2]}')) == []


def test_yaml_keys_twice_are_named_with_their_lines_and_whether_they_hold_a_section() -> None:
    text = "train:\n  max_steps: 5\n  lora: {r: 8, r: 16}\nmodel: {name: m}\ntrain:\n  method: ptuning\n"
    assert sorted(yaml_repeated(text)) == [("train", [1, 5], True), ("train.lora.r", [3, 3], False)]
    assert yaml_repeated("runs:\n  - {a: 1}\n  - {a: 1, a: 2}\n") == [("runs[1].a", [3, 3], False)]
    assert yaml_repeated("train: [unclosed\n") == [] and yaml_repeated("") == []  # the loader names a parse error
    assert yaml_repeated('{"train": {"max_steps": 5}, "train": {}}') == [("train", [1, 1], True)]  # a JSON config


def test_a_config_file_with_a_section_twice_is_one_line_naming_file_key_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "my.yaml"
    path.write_text("train:\n  max_steps: 5\nevaluate: {max_new_tokens: 8}\ntrain:\n  method: ptuning\n"
                    "evaluate:\n  max_new_tokens: 16\n", encoding="utf-8")
    assert config_file_problems(path) == [
        f"{path}: train is written twice (lines 1, 4): YAML keeps only the last and drops the others' settings; "
        "write it once, with all its keys",
        f"{path}: evaluate is written twice (lines 3, 6): YAML keeps only the last and drops the others' settings; "
        "write it once, with all its keys"]
    path.write_text("train:\n  max_steps: 5\n  max_steps: 6\n  seed: 1\n", encoding="utf-8")
    assert config_file_problems(path) == [f"{path}: train.max_steps is written twice (lines 2, 3): YAML keeps only "
                                          "the last and drops the others' settings; write it once"]


def test_the_shipped_config_files_write_each_key_once() -> None:
    from conftest import REPO

    files = [REPO / "config/config.yaml", *sorted((REPO / "config").glob("*/*.yaml")), *sorted(REPO.glob("config/*.yaml"))]
    assert len(files) > 3 and [line for path in files for line in config_file_problems(path)] == []


def test_a_config_file_that_is_not_utf8_is_left_to_the_loader(tmp_path: Path) -> None:
    path = tmp_path / "gbk.yaml"
    path.write_bytes("datasets: {a: {system: 你好}}\ndatasets: {}\n".encode("gbk"))
    assert config_file_problems(path) == []  # Snakemake's own loader stops on it first
