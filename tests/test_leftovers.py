"""Outputs an earlier config left in a job folder are named with what is current (glmtune.leftovers)."""

from __future__ import annotations

import json
from pathlib import Path

from glmtune.leftovers import RunLayout, leftover_warnings

LORA = RunLayout("a", "adapter", True)


def folders(root: Path, *paths: str) -> Path:
    for path in paths:
        (root / path).mkdir(parents=True)
    return root


def test_a_current_job_has_no_leftovers(tmp_path: Path) -> None:
    root = folders(tmp_path, "results/runs/a/adapter", "results/runs/a/merged_model", "results/runs/c/eval",
                   "results/merged_model")
    (root / "results/merged_model/export_info.json").write_text(json.dumps({"exported_from": "results/runs/a/adapter"}))
    runs = {"a": LORA, "c": RunLayout("a", "adapter", True)}  # c evaluates a's training: no folder of its own
    assert leftover_warnings(root, runs, "a") == []
    assert leftover_warnings(tmp_path / "fresh", runs, "a") == []  # nothing made yet


def test_each_kind_of_leftover_is_named_with_what_is_current(tmp_path: Path) -> None:
    root = folders(tmp_path, "results/runs/a/model", "results/runs/a/adapter", "results/runs/b/adapter",
                   "results/runs/old/eval", "results/runs/zz/adapter", "results/runs/p/merged_model",
                   "results/runs/p/adapter", "results/merged_model")
    runs = {"a": LORA, "b": RunLayout("a", "adapter", True), "p": RunLayout("p", "adapter", False)}
    found = leftover_warnings(root, runs, "a")
    assert found[0].startswith("results/runs/{old,zz}: no such run in this config")
    assert "results/runs/a/model is left from an earlier config: run a now trains an adapter" in found[1]
    assert "results/runs/b/adapter is left from an earlier config: run b now uses run a's training" in found[2]
    assert found[3].startswith("results/runs/p/merged_model is left from an earlier config: run p now has nothing")
    assert len(found) == 4  # results/merged_model: no export_info.json (made before it was written): not judged
    (root / "results/merged_model/export_info.json").write_text(json.dumps({"exported_from": "results/runs/b/adapter"}))
    assert leftover_warnings(root, runs, "a")[-1].startswith(
        "results/merged_model is the export of results/runs/b/adapter (export_info.json), not of run a's")
    assert leftover_warnings(root, runs, "p")[-1].startswith(
        "results/merged_model is an earlier export, not this config's: run p (export.run) now has nothing to merge")
