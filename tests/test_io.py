"""read_records / write_jsonl / atomic_path on small files in tmp_path."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glmtune.data.records import BadLine, DataFileError, read_records
from glmtune.io import DiskFullError, atomic_path, read_jsonl, reporting_disk_full, write_json, write_jsonl

ROWS = [{"content": "类型#裙", "summary": "红色连衣裙"}, {"content": "a", "summary": "b"}]


def test_json_array_in_a_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS, ensure_ascii=False, indent=2), encoding="utf-8")
    assert read_records(path) == [("record 0", ROWS[0]), ("record 1", ROWS[1])]


def test_json_lines_in_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    # blank lines are skipped but still counted for the line numbers
    path.write_text(json.dumps(ROWS[0], ensure_ascii=False) + "\n\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    assert read_records(path) == [("line 1", ROWS[0]), ("line 3", ROWS[1])]


@pytest.mark.parametrize("encoding", ["utf-8", "UTF_8", "utf8"])
def test_utf8_bom_and_crlf(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "bom.jsonl"
    text = "\r\n".join(json.dumps(row, ensure_ascii=False) for row in ROWS) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert read_records(path, encoding) == [("line 1", ROWS[0]), ("line 2", ROWS[1])]


def test_utf8_bom_before_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS, ensure_ascii=False).replace(", ", ",\r\n").encode("utf-8"))
    assert [record for _, record in read_records(path)] == ROWS


def _gbk_file(tmp_path: Path) -> Path:
    path = tmp_path / "gbk.jsonl"
    lines = [json.dumps({"content": "ascii only", "summary": "x"}), json.dumps(ROWS[0], ensure_ascii=False)]
    path.write_bytes(("\n".join(lines) + "\n").encode("gbk"))
    return path


def test_gbk_file_read_with_its_encoding(tmp_path: Path) -> None:
    records = read_records(_gbk_file(tmp_path), encoding="gbk")
    assert records[1] == ("line 2", ROWS[0])


def test_gbk_file_read_as_utf8_names_file_line_and_encoding(tmp_path: Path) -> None:
    path = _gbk_file(tmp_path)
    with pytest.raises(DataFileError) as info:
        read_records(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 2" in message  # line 1 is pure ASCII, the first GBK bytes are on line 2
    assert message.endswith("the whole file decodes as gbk: set the dataset's `encoding: gbk` if that is its encoding")


def test_a_utf8_file_read_as_gbk_names_utf8(tmp_path: Path) -> None:
    path = tmp_path / "utf8.jsonl"
    path.write_text(json.dumps(ROWS[0], ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"cannot decode as gbk .* decodes as utf-8: set the dataset's `encoding: "
                                            r"utf-8`"):
        read_records(path, encoding="gbk")
    path.write_bytes(b'{"content": "\xff\xfe\xff"}\n')  # no likely encoding reads it
    with pytest.raises(DataFileError, match=r"cannot decode as utf-8 .*; set the dataset's `encoding:` to the file's "
                                            r"encoding$"):
        read_records(path)


def test_broken_json_line_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n', encoding="utf-8")
    with pytest.raises(DataFileError) as info:
        read_records(path)
    assert str(path) in str(info.value)
    assert "line 3" in str(info.value)


def test_broken_json_line_comes_back_as_a_bad_line_when_skipped(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"a": 1}\r\n{"a": \r\n\r\n{"a": 4}\r\n', encoding="utf-8")
    records = read_records(path, skip_bad_lines=True)
    assert records == [("line 1", {"a": 1}), ("line 2", BadLine('{"a": ', "invalid JSON: Expecting value (column 7)")),
                       ("line 4", {"a": 4})]


def test_broken_json_array_stays_a_file_error_when_skipped(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"a": 1},\n{"a": 2,,}]\n', encoding="utf-8")
    with pytest.raises(DataFileError, match="line 2: invalid JSON array"):
        read_records(path, skip_bad_lines=True)


def test_broken_json_array_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[\n{"a": 1},\n{"a": 2,,}\n]\n', encoding="utf-8")
    with pytest.raises(DataFileError) as info:
        read_records(path)
    assert str(path) in str(info.value)
    assert "line 3" in str(info.value)


def test_write_jsonl_round_trip_is_utf8(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(path, iter(ROWS)) == 2
    assert "类型" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    assert list(read_jsonl(path)) == ROWS
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]


def test_write_json(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_json(path, {"名字": 1})
    assert json.loads(path.read_text(encoding="utf-8")) == {"名字": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_path_leaves_nothing_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("partial", encoding="utf-8")
            assert tmp.parent.parent == tmp_path and tmp.exists()
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_jsonl_leaves_nothing_when_rows_fail(tmp_path: Path) -> None:
    def rows():
        yield {"ok": 1}
        raise RuntimeError("generator failed")

    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new", encoding="utf-8")
            raise RuntimeError
    assert target.read_text(encoding="utf-8") == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_replaces_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_unicode_line_separators_inside_strings_do_not_split_lines(tmp_path: Path, separator: str) -> None:
    """str.splitlines would cut these records in two: JSON lines end at \\n (or \\r\\n) only."""
    rows = [{"content": f"a{separator}b", "summary": "c"}, {"content": "d", "summary": f"e{separator}"}]
    path = tmp_path / "data.jsonl"
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert read_records(path) == [("line 1", rows[0]), ("line 2", rows[1])]


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("data", [{"content": "a", "summary": "b"}, {"data": [{"content": "a", "summary": "b"}] * 2}])
def test_a_top_level_object_is_refused(tmp_path: Path, skip: bool, data: dict[str, Any]) -> None:
    """Neither the property-name error of a line-by-line read nor, skipping, the inner records silently unwrapped."""
    path = tmp_path / "data.json"
    path.write_text("\n" + json.dumps(data, indent=2), encoding="utf-8")
    with pytest.raises(DataFileError, match=f"^{path}: line 2: top level is a JSON object; expected JSON lines "
                                            f"\\(one record per line\\) or a JSON array of records"):
        read_records(path, skip_bad_lines=skip)


def test_a_top_level_object_that_does_not_parse_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('{\n  "data": [\n    {"content": "a", "summary": "b"},,\n  ]\n}\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"line 3: top level is a JSON object that does not parse"):
        read_records(path, skip_bad_lines=True)


def test_one_record_on_one_line_is_still_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text('{"a": 1}\n', encoding="utf-8")
    assert read_records(path) == [("line 1", {"a": 1})]
    path.write_text('{"a": "cut off\n{"a": 2}\n', encoding="utf-8")  # a broken first line is a bad line, not an object
    assert read_records(path, skip_bad_lines=True)[1] == ("line 2", {"a": 2})


def test_a_wrapped_object_broken_after_its_first_line_is_refused(tmp_path: Path) -> None:
    """Skipping bad lines would otherwise keep the inner records of a broken {"data": [...]} file."""
    path = tmp_path / "data.json"
    path.write_text('{"data": [\n{"content": "a", "summary": "b"},\n{"content": "c", "summary": "d"}\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"line 4: top level is a JSON object that does not parse"):
        read_records(path, skip_bad_lines=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system (tmpfs) to fill up for real; skipped where mounting is not allowed (not root)."""
    import subprocess

    mount = tmp_path / "small_disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk tests need a disk to fill")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)  # torch may still hold its failed file open


def _jsonl(path: Path) -> None:
    write_jsonl(path, ({"text": "x" * 1000, "row": i} for i in range(3000)))


def _dataset(path: Path) -> None:
    import datasets

    with atomic_path(path) as tmp:  # as tokenize_splits writes its Arrow splits
        datasets.Dataset.from_dict({"ids": [list(range(1000))] * 500}).save_to_disk(str(tmp))


def _safetensors(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:  # as an export or an adapter is saved
        tmp.mkdir()
        save_file({"weight": torch.zeros(1 << 20)}, str(tmp / "model.safetensors"))


def _torch_save(path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:  # as the Trainer saves optimizer states
        torch.save({"state": torch.zeros(1 << 20)}, str(tmp))


@pytest.mark.parametrize("write", [_jsonl, _dataset, _safetensors, _torch_save], ids=["jsonl", "arrow", "safetensors", "torch"])
def test_a_full_disk_is_one_line_naming_the_folder_and_free_space(small_disk: Path, write) -> None:
    target = small_disk / "results" / "artifact"
    with pytest.raises(DiskFullError) as raised:
        write(target)
    message = str(raised.value)
    assert message.startswith(f"disk full: no space left on the device while writing {target} (")
    assert re.search(r"\(\d+(\.\d)? (B|KiB|MiB) free there now\)", message) and "\n" not in message
    assert raised.value.__suppress_context__  # no library traceback chained under it
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing partial left


def test_a_training_job_names_its_folders_when_the_disk_fills(small_disk: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """run_stage (the train / evaluate job in one process) reports a full disk under the checkpoints in one line."""
    import torch

    from glmtune import launch

    def train(adapter_dir: str, checkpoint_root: str) -> None:  # a checkpoint save that fills the disk
        Path(checkpoint_root).mkdir(parents=True)
        torch.save({"optimizer": torch.zeros(1 << 20)}, str(Path(checkpoint_root) / "optimizer.pt"))

    monkeypatch.setattr(launch, "task_function", lambda task: train)
    arguments = {"adapter_dir": str(small_disk / "adapter"), "checkpoint_root": str(small_disk / "checkpoints")}
    with pytest.raises(DiskFullError, match=rf"while writing {small_disk}/adapter and {small_disk}/checkpoints \("):
        launch.run_stage("train", arguments, launch.Layout.from_resources(0, 1), tmp_path / "train.log")
    assert "DiskFullError: disk full" in (tmp_path / "train.log").read_text(encoding="utf-8")


def test_other_write_errors_pass_through_unchanged(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="PytorchStreamWriter failed writing file"):  # plenty of space: not the disk
        with atomic_path(tmp_path / "x"):
            raise RuntimeError("[enforce fail] PytorchStreamWriter failed writing file data/0: file write failed")
    with pytest.raises(PermissionError):
        with reporting_disk_full(tmp_path):
            raise PermissionError(13, "Permission denied")


def test_what_atomic_path_writes_is_as_readable_as_a_plain_file(tmp_path: Path) -> None:
    """safetensors writes 0600: the tiny model, converted checkpoints and merged models came out readable by their
    owner only, where every other output a colleague on a shared folder reads is 0666 less the umask."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    with atomic_path(tmp_path / "model") as tmp:
        (tmp / "sub").mkdir(parents=True)
        for name in ("model.safetensors", "sub/shard.safetensors"):
            (tmp / name).write_bytes(b"x")
            (tmp / name).chmod(0o600)
    with atomic_path(tmp_path / "single.safetensors") as tmp:
        tmp.write_bytes(b"x")
        tmp.chmod(0o600)
    for path in (tmp_path / "model/model.safetensors", tmp_path / "model/sub/shard.safetensors", tmp_path / "single.safetensors"):
        assert path.stat().st_mode & 0o777 == (0o600 | mode), path
