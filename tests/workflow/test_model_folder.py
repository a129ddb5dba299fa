"""A model given as a local folder (`model.source: path`), through Snakemake on a copy of the workflow: what is made
from it re-runs when the files that decide what it computes change, and only then."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from test_workflow import copy_workflow, edit_config, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
TARGET = "results/tokenized/default/stats.json"
FROM_THE_MODEL = ["prepare_model[model=mine]", "tokenize[tokenized=default]"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The default job on a copy of its tiny model given as a folder of the user's, tokenized with it."""
    workdir = copy_workflow(tmp_path / "job")
    snakemake(workdir, "results/tiny_model")
    folder = tmp_path / "my models" / "glm 4"
    shutil.copytree(workdir / "results/tiny_model", folder, ignore=shutil.ignore_patterns(".snakemake_timestamp"))
    edit_config(workdir, lambda c: c.update(model={"name": "mine", "source": "path", "path": str(folder)}))
    snakemake(workdir, TARGET)
    assert planned_jobs(workdir, TARGET) == []
    return workdir


def model_folder(workdir: Path) -> Path:
    return (workdir / "resources/models/mine/config.json").resolve().parent


def test_files_added_beside_the_model_rerun_nothing_and_its_folder_is_left_as_it_was(workdir: Path) -> None:
    folder = model_folder(workdir)
    before = sorted(path.name for path in folder.iterdir())
    (folder / "README.md").write_text("# my model\n", encoding="utf-8")
    (folder / ".ipynb_checkpoints").mkdir()
    assert planned_jobs(workdir, TARGET) == []  # the folder's own time changed: a linked folder re-ran tokenization
    assert sorted(path.name for path in folder.iterdir()) == sorted([*before, "README.md", ".ipynb_checkpoints"])
    linked = workdir / "resources/models/mine"
    assert not linked.is_symlink() and (linked / "config.json").resolve() == (folder / "config.json").resolve()


@pytest.mark.parametrize("change", ["weights", "tokenizer"])
def test_a_changed_model_file_reruns_what_was_made_from_the_model(workdir: Path, change: str) -> None:
    folder = model_folder(workdir)
    if change == "weights":  # another checkpoint copied over: same names, same size, other values
        weights = load_file(folder / "model.safetensors")
        name = sorted(weights)[0]
        weights[name] = weights[name] + 1
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    else:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}), encoding="utf-8")
    assert planned_jobs(workdir, TARGET) == FROM_THE_MODEL
    assert FROM_THE_MODEL[0] in planned_jobs(workdir, "results/merged_model")


@pytest.mark.parametrize("how", ["copied with its old dates", "a link repointed"])
def test_a_model_replaced_by_files_dated_earlier_reruns_what_was_made_from_it(workdir: Path, tmp_path: Path,
                                                                              how: str) -> None:
    """Snakemake dates files: another checkpoint put in with `cp -p`, `rsync -a` or `mv` (dated before the outputs),
    or a model link repointed to it, re-ran nothing, and the results stayed the old model's."""
    import os

    folder = model_folder(workdir)
    other = tmp_path / "other checkpoint"
    shutil.copytree(folder, other, symlinks=False)
    weights = load_file(other / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    for path in other.iterdir():
        os.utime(path, (0, 0))  # dated 1970: long before every output
    if how == "copied with its old dates":
        for path in other.iterdir():
            shutil.copy2(path, folder / path.name)  # copy2 keeps the dates, as cp -p does
    else:  # the job reads the model through a link (ln -sfn v2 current), the config unchanged
        link = tmp_path / "current"
        link.symlink_to(folder)
        edit_config(workdir, lambda c: c["model"].update(path=str(link)))
        snakemake(workdir, TARGET)
        link.unlink()
        link.symlink_to(other)
    result = snakemake(workdir, "-n", TARGET)
    assert "model.safetensors differ from what resources/models/mine was made from" in result.stdout + result.stderr
    assert planned_jobs(workdir, TARGET) == FROM_THE_MODEL
    snakemake(workdir, TARGET)
    assert planned_jobs(workdir, TARGET) == []  # prepared again from the new files: current


def test_touch_marks_a_replaced_model_folder_current(workdir: Path) -> None:
    """`snakemake --touch` (the README's way to keep what is there) records the folder as it is: every later run had
    warned and re-run prepare_model again, since the record still held the old files."""
    import os

    folder = model_folder(workdir)
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    save_file({**weights, name: weights[name] + 1}, folder / "model.safetensors", metadata={"format": "pt"})
    os.utime(folder / "model.safetensors", (0, 0))
    touched = snakemake(workdir, "--touch", TARGET)
    assert "recorded as what resources/models/mine is made from (--touch)" in touched.stdout + touched.stderr
    assert planned_jobs(workdir, TARGET) == []


def test_a_changed_generation_config_reruns_the_export_alone_and_the_merged_model_carries_it(workdir: Path) -> None:
    """Only the merged model carries it (evaluation decodes with its own settings): it re-ran training before."""
    quick = ("--config", "train={max_steps: 2, save_steps: 2, eval_steps: 2}", "evaluate={max_samples: 4, max_new_tokens: 4}")
    snakemake(workdir, "results/merged_model", *quick)
    folder = model_folder(workdir)
    config = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    (folder / "generation_config.json").write_text(json.dumps({**config, "max_length": 77}), encoding="utf-8")
    assert planned_jobs(workdir, "results/merged_model", *quick) == ["export_chosen"]
    snakemake(workdir, "results/merged_model", *quick)
    assert json.loads((workdir / "results/merged_model/generation_config.json").read_text())["max_length"] == 77


def test_an_adapter_names_the_users_folder_as_its_base(workdir: Path) -> None:
    """Not the checkout's resources/models/mine: the adapter loads wherever the folder is, after resources/ is gone."""
    folder = model_folder(workdir)
    snakemake(workdir, "results/runs/main/adapter", "--config", "train={max_steps: 2, save_steps: 2, eval_steps: 2}")
    adapter = workdir / "results/runs/main/adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(folder)
    assert json.loads((adapter / "base_model.json").read_text())["path"] == str(folder)
    shutil.rmtree(workdir / "resources")
    infer = subprocess.run([sys.executable, "-m", "glmtune.cli", "infer", str(adapter), "--prompt", "类型#裙",
                            "--max-new-tokens", "2"], cwd=workdir.parent, capture_output=True, text=True, timeout=300)
    assert infer.returncode == 0, infer.stderr


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_folder_with_its_own_template_trains_evaluates_and_exports_with_the_familys(workdir: Path, method: str) -> None:
    """A model fine-tuned elsewhere with a default system prompt baked into its template: the prepared folder gets
    the family's (README), and so must what training saves. A LoRA adapter was refused by the evaluation as trained
    on another base (the user's folder, whose template differs), and full SFT shipped the user's template in
    results/merged_model without a word."""
    from glmtune.chat_template import get_template

    folder = model_folder(workdir)
    template = folder / "chat_template.jinja"
    template.write_text(template.read_text(encoding="utf-8").replace(
        "[gMASK]<sop>", "[gMASK]<sop><|system|>\nYou are a helpful shop assistant.", 1), encoding="utf-8")
    family = get_template("glm4").jinja()
    quick = ("--config", f"train={{method: {method}, max_steps: 2, save_steps: 2, eval_steps: 2}}",
             "evaluate={max_samples: 4, max_new_tokens: 4}")
    snakemake(workdir, "results/merged_model", *quick)
    assert (workdir / "resources/models/mine/chat_template.jinja").read_text(encoding="utf-8") == family
    trained = workdir / "results/runs/main" / ("adapter" if method == "lora" else "model")
    assert (trained / "chat_template.jinja").read_text(encoding="utf-8") == family
    assert (workdir / "results/merged_model/chat_template.jinja").read_text(encoding="utf-8") == family
    assert "shop assistant" in template.read_text(encoding="utf-8")  # the user's folder left as it is
