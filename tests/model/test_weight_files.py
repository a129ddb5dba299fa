"""A model folder's weight files, checked before any job (tests/test_config_checks.py): missing shards, cut
safetensors files, .bin weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glmtune.model.weight_files import WeightFilesError, weight_files
from helpers.model_folders import sharded


def test_a_whole_sharded_folder_gives_its_shards_in_index_order(tmp_path: Path) -> None:
    folder = sharded(tmp_path / "m")
    assert [path.name for path in weight_files(folder)] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    folder = sharded(tmp_path / "m")
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(WeightFilesError, match=r"model.safetensors.index.json: 1 of its 3 shards are missing "
                                               r"\(model-00002-of-00003.safetensors\)"):
        weight_files(folder)


def test_a_shard_cut_short_is_named_with_both_sizes(tmp_path: Path) -> None:
    folder = sharded(tmp_path / "m")
    shard = folder / "model-00003-of-00003.safetensors"
    whole = shard.stat().st_size
    with shard.open("r+b") as handle:
        handle.truncate(whole - 10)  # an interrupted download: the header is whole, the last tensor is not
    with pytest.raises(WeightFilesError, match=f"model-00003-of-00003.safetensors: cut short, {whole - 10:,} bytes "
                                               f"where its header describes {whole:,}"):
        weight_files(folder)
    shard.write_bytes(b"")  # nothing written yet
    with pytest.raises(WeightFilesError, match="not a safetensors file \\(0 bytes"):
        weight_files(folder)


def test_pytorch_bin_weights_are_taken_when_there_is_no_safetensors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    assert weight_files(tmp_path) == [tmp_path / "pytorch_model.bin"]


def test_prepare_model_stops_on_a_folder_cut_short_before_linking_it(tmp_path: Path) -> None:
    """A hub download is checked by prepare_model, the first job that reads it (a local folder: before any job)."""
    from glmtune.model.prepare import prepare_model_folder

    folder = sharded(tmp_path / "m")
    (folder / "config.json").write_text('{"model_type": "glm"}')  # a native folder: linked as it is
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(WeightFilesError, match="1 of its 3 shards are missing"):
        prepare_model_folder("m", {"source": "huggingface"}, folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_single_file_beside_an_index_is_refused_as_two_sets_of_weights(tmp_path: Path) -> None:
    """save_pretrained sharded into a folder that held a model.safetensors leaves it there: transformers loads it
    and ignores the index, which the export read (a merged model on other weights than were trained, exit 0)."""
    from safetensors.torch import save_file

    folder = sharded(tmp_path / "m")
    save_file({"layer0.weight": torch.zeros(64)}, str(folder / "model.safetensors"))
    with pytest.raises(WeightFilesError, match=r"holds both model.safetensors and model.safetensors.index.json with its "
                                               r"shards, two sets of weights: transformers loads model.safetensors"):
        weight_files(folder)


def test_shards_without_their_index_are_refused_naming_it(tmp_path: Path) -> None:
    folder = sharded(tmp_path / "m")
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(WeightFilesError, match=r"model-00001-of-00003.safetensors is one shard of several, and "
                                               r"model.safetensors.index.json, which names every tensor's shard, is missing"):
        weight_files(folder)


def test_the_export_reads_the_file_transformers_loads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from glmtune.export.shards import Weights

    folder = sharded(tmp_path / "m")
    save_file({"single.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    assert list(Weights(folder).entries) == ["single.weight"]
