"""bench-export runs both export paths end to end on a small random model and prints their peak memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from glmtune.cli import main


def test_bench_export_measures_both_paths(small_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench-export", str(small_run["model"] / "config.json"), str(tmp_path / "work"), "--layers", "3",
                 "--shard-gb", "0.0001"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith(("| sharded", "| whole"))]
    assert len(rows) == 2, table
    assert all(float(row.split("|")[2].split()[0]) > 0 for row in rows)
    assert len(list((tmp_path / "work" / "base").glob("model-*.safetensors"))) > 2
    assert (tmp_path / "work" / "merged_sharded" / "config.json").is_file() and (tmp_path / "work" / "merged_whole").is_dir()


def test_bench_export_into_a_folder_that_exists_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It failed with a FileExistsError traceback, after parsing the architecture."""
    assert main(["bench-export", "config.json", str(tmp_path)]) == 2
    assert f"{tmp_path}: exists; give a new folder" in capsys.readouterr().err
