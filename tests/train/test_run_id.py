"""glmtune.train.run_id: a checkpoint folder's name follows what is trained, on what data, by how many processes."""

from __future__ import annotations

from pathlib import Path

from conftest import TRAIN_SETTINGS
from helpers.settings import train_settings

from glmtune.train import run_id
from glmtune.train.run_id import run_id_of


def test_run_id_follows_settings_and_file_contents_and_reads_big_files_only_at_the_ends(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_id, "WHOLE_FILE_LIMIT", 4 << 20)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    big = folder / "model.safetensors"
    big.write_bytes(bytes(6 << 20))
    base = run_id.fingerprint({"lr": 1}, folder)
    assert run_id.fingerprint({"lr": 2}, folder) != base
    (folder / "config.json").write_text('{"a": 2}')
    assert run_id.fingerprint({"lr": 1}, folder) != base
    (folder / "config.json").write_text('{"a": 1}')
    assert run_id.fingerprint({"lr": 1}, folder) == base
    data = bytearray(big.read_bytes())
    data[-1] = 1  # the tail of a big file counts
    big.write_bytes(bytes(data))
    assert run_id.fingerprint({"lr": 1}, folder) != base
    data[-1], data[3 << 20] = 0, 1  # its middle does not: that is what keeps an 18 GB model from being read
    big.write_bytes(bytes(data))
    assert run_id.fingerprint({"lr": 1}, folder) == base


def test_run_id_follows_the_validation_data_and_the_process_count(small_run: dict[str, Path]) -> None:
    """A validation edit or another GPU count is not the finished run: resuming it would train nothing new."""
    tokenized = small_run["tokenized"]
    same = (tokenized / "train", tokenized / "validation", small_run["model"])
    settings = train_settings(**TRAIN_SETTINGS)
    base = run_id_of(settings, 1, *same)
    assert run_id_of(settings, 1, *same) == base
    assert run_id_of(settings, 2, *same) != base
    assert run_id_of(settings, 1, tokenized / "train", tokenized / "train", small_run["model"]) != base
