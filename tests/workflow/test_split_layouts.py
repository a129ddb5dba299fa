"""Every layout of dataset files through Snakemake on a temporary copy of the workflow, up to results/splits/, and the
checks of fetched datasets' `files` (url, demo): what each split holds, which job wrote the test split, and the
errors, before any job where the config alone shows the mistake."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from glmtune.io import read_jsonl

from test_workflow import copy_workflow, edit_config, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
SPLITS = ("train", "validation", "test")
TARGETS = [f"results/splits/{name}.jsonl" for name in SPLITS]
RATIOS = {"validation_ratio": 0.2, "test_ratio": 0.25, "seed": 3}


def raw_lines(tag: str, count: int, start: int = 0) -> str:
    """AdvertiseGen lines whose prompt names the file they come from (`tag`), each one different."""
    return "".join(json.dumps({"content": f"{tag}#{i}", "summary": f"第{i}条。"}, ensure_ascii=False) + "\n"
                   for i in range(start, start + count))


def layout(workdir: Path, files: dict[str, dict[str, int]], **split: object) -> Path:
    """A copy of the workflow whose datasets are local files of these sizes (dataset -> split -> records)."""
    copy_workflow(workdir)
    datasets = {}
    for name, sizes in files.items():
        for part, count in sizes.items():
            (workdir / "data").mkdir(exist_ok=True)
            (workdir / f"data/{name}-{part}.json").write_text(raw_lines(f"{name}-{part}", count), encoding="utf-8")
        datasets[name] = {"source": "path", "format": "advertisegen",
                          "files": {part: f"data/{name}-{part}.json" for part in sizes}}
    # eval_steps null: most layouts here give no validation data, which the embedded default's eval_steps would refuse.
    edit_config(workdir, lambda c: (c.update(datasets=datasets), c.setdefault("split", {}).update({**RATIOS, **split}),
                                    c["train"].update(eval_steps=None)))
    return workdir


def contents(workdir: Path) -> dict[str, Counter[str]]:
    """Split -> how many of its conversations come from each raw file ("dataset-part")."""
    return {name: Counter(row["conversations"][0]["content"].split("#")[0]
                          for row in read_jsonl(workdir / f"results/splits/{name}.jsonl")) for name in SPLITS}


def test_all_file_only(tmp_path: Path) -> None:
    workdir = snakemake_splits(layout(tmp_path, {"a": {"all": 40}}))
    assert contents(workdir) == {"train": {"a-all": 22}, "validation": {"a-all": 8}, "test": {"a-all": 10}}
    assert not (workdir / "logs/split_test.log").exists()  # merge_splits cut the test split from the file


def test_train_and_test_files(tmp_path: Path) -> None:
    workdir = snakemake_splits(layout(tmp_path, {"a": {"train": 20, "test": 6}}))
    assert contents(workdir) == {"train": {"a-train": 20}, "validation": {}, "test": {"a-test": 6}}
    assert (workdir / "logs/split_test.log").is_file()
    # The test split is the test file alone: a training record's edit re-runs the merge, not split_test.
    with (workdir / "data/a-train.json").open("a", encoding="utf-8") as raw:
        raw.write(raw_lines("a-train", 1, start=20))
    jobs = planned_jobs(workdir, "results/splits/test.jsonl", "results/splits/train.jsonl")
    assert "merge_splits" in jobs and "split_test" not in jobs


def test_train_validation_and_test_files(tmp_path: Path) -> None:
    workdir = snakemake_splits(layout(tmp_path, {"a": {"train": 20, "validation": 5, "test": 6}}))
    assert contents(workdir) == {"train": {"a-train": 20}, "validation": {"a-validation": 5}, "test": {"a-test": 6}}


def test_parquet_shards_and_a_csv_file(tmp_path: Path) -> None:
    """Parquet training shards given as a list and a CSV test file (what a Hugging Face dataset or a spreadsheet gives)
    go through convert as their JSON would; editing one shard re-runs its conversion."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    workdir = layout(tmp_path, {"a": {"train": 20, "test": 6}})
    train, test = (list(read_jsonl(workdir / f"data/a-{part}.json")) for part in ("train", "test"))
    shards = [f"data/train-{index:05d}-of-00002.parquet" for index in range(2)]
    for index, shard in enumerate(shards):
        pq.write_table(pa.Table.from_pylist(train[index * 10:(index + 1) * 10]), workdir / shard)
    (workdir / "data/a-test.csv").write_text("content,summary\n" + "".join(f"{row['content']},{row['summary']}\n"
                                                                           for row in test), encoding="utf-8")
    edit_config(workdir, lambda c: c["datasets"]["a"].update(files={"train": shards, "test": "data/a-test.csv"}))
    assert contents(snakemake_splits(workdir)) == {"train": {"a-train": 20}, "validation": {}, "test": {"a-test": 6}}
    pq.write_table(pa.Table.from_pylist(train[10:19]), workdir / shards[1])
    assert "convert[dataset=a, part=train]" in planned_jobs(workdir, "results/splits/train.jsonl")


def test_datasets_mixing_all_and_given_files(tmp_path: Path) -> None:
    """Each dataset's `all` file is cut by the ratios whatever the others give; a split the same dataset gives a
    file for takes no share of its `all` file; the test split is the union."""
    workdir = snakemake_splits(layout(tmp_path, {"a": {"all": 40}, "b": {"train": 10, "test": 6},
                                                 "c": {"all": 20, "test": 4}}))
    assert contents(workdir) == {
        "train": {"a-all": 22, "b-train": 10, "c-all": 16},
        "validation": {"a-all": 8, "c-all": 4},
        "test": {"a-all": 10, "b-test": 6, "c-test": 4},
    }
    report = json.loads((workdir / "results/splits/report.json").read_text(encoding="utf-8"))
    assert report["sizes"] == {"train": 48, "validation": 12, "test": 20}
    assert not (workdir / "logs/split_test.log").exists()


def test_given_test_files_with_no_test_share_left_make_the_test_split_alone(tmp_path: Path) -> None:
    workdir = snakemake_splits(layout(tmp_path, {"a": {"all": 40}, "b": {"test": 6}}, test_ratio=0.0))
    assert contents(workdir) == {"train": {"a-all": 32}, "validation": {"a-all": 8}, "test": {"b-test": 6}}
    assert (workdir / "logs/split_test.log").is_file()


@pytest.mark.parametrize("files", [{"a": {"all": 40}}, {"a": {"all": 40, "test": 6}}], ids=["all-only", "all-and-test"])
def test_dedupe_across_datasets(tmp_path: Path, files: dict[str, dict[str, int]]) -> None:
    workdir = layout(tmp_path, {**files, "b": {"all": 10}}, dedupe_across_datasets=True)
    # b repeats four of a's conversations: they are left out of b, so no split holds them twice.
    (workdir / "data/b-all.json").write_text(raw_lines("a-all", 4) + raw_lines("b-all", 6), encoding="utf-8")
    snakemake_splits(workdir)
    rows = [row["conversations"][0]["content"] for name in SPLITS
            for row in read_jsonl(workdir / f"results/splits/{name}.jsonl")]
    assert len(rows) == len(set(rows)) == sum(sum(sizes.values()) for sizes in files.values()) + 6
    report = json.loads((workdir / "results/splits/report.json").read_text(encoding="utf-8"))
    assert report["datasets"]["b/all"]["cross_dataset_duplicates"] == 4
    assert not (workdir / "logs/split_test.log").exists()


def snakemake_splits(workdir: Path) -> Path:
    snakemake(workdir, *TARGETS, "results/splits/report.json")
    return workdir


def test_a_layout_without_training_data_stops_before_any_job(tmp_path: Path) -> None:
    workdir = layout(tmp_path, {"a": {"validation": 4, "test": 4}, "b": {"test": 3}})
    result = snakemake(workdir, "-n", *TARGETS, check=False)
    assert result.returncode != 0
    assert "config: datasets: no dataset gives training data (a: test, validation; b: test)" in result.stdout


def test_a_layout_without_test_data_stops_before_any_job(tmp_path: Path) -> None:
    """Found by the evaluation before: with training already under way, and a new ratio re-splits what it trains on."""
    workdir = layout(tmp_path, {"a": {"all": 40}}, test_ratio=0.0)
    result = snakemake(workdir, "-n", "results/merged_model", check=False)
    assert result.returncode != 0
    assert ("config: datasets: no dataset gives test data (a: all; split.test_ratio 0.0): the evaluation, the report "
            "and results/merged_model need a test split") in result.stdout


def test_eval_steps_with_a_layout_without_validation_data_stops_before_any_job(tmp_path: Path) -> None:
    """The embedded default asks for a validation loss every 100 steps; a train + test layout gives no validation data."""
    workdir = layout(tmp_path, {"a": {"train": 20, "test": 6}})
    edit_config(workdir, lambda c: c["train"].update(eval_steps=100))
    result = snakemake(workdir, "-n", "results/merged_model", check=False)
    assert result.returncode != 0
    assert ("config: train.eval_steps 100 asks for a validation loss, but no dataset gives validation data "
            "(a: test, train; split.validation_ratio 0.2)") in result.stdout + result.stderr


def tar_gz(path: Path, members: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def fetched(tmp_path: Path, dataset: dict) -> Path:
    workdir = copy_workflow(tmp_path / "wf")
    edit_config(workdir, lambda c: (c.update(datasets={"ds": {"format": "advertisegen", **dataset}}),
                                    c["train"].update(eval_steps=None)))
    return workdir


@pytest.mark.parametrize(("source", "file", "says"), [
    ("url", "/etc/hostname", "not a file inside the download"),
    ("url", "AdvertiseGen/../../outside.json", "not a file inside the download"),
    ("demo", "trian.json", "no such demo file 'trian.json': the demo source writes train.json, dev.json"),
])
def test_a_fetched_datasets_bad_file_name_stops_before_any_job(tmp_path: Path, source: str, file: str, says: str) -> None:
    dataset = {"source": source, "files": {"all": "train.json", "test": file}}
    if source == "url":
        dataset["url"] = tar_gz(tmp_path / "ds.tar.gz", {"train.json": raw_lines("x", 5)}).as_uri()
    workdir = fetched(tmp_path, dataset)
    result = snakemake(workdir, "-n", *TARGETS, check=False)
    assert result.returncode != 0
    assert f"config: datasets.ds.files.test: {says}" in result.stdout + result.stderr


def test_a_name_the_download_does_not_hold_stops_listing_what_it_holds(tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "ds.tar.gz", {"AdvertiseGen/train.json": raw_lines("t", 20),
                                              "AdvertiseGen/dev.json": raw_lines("d", 5)})
    workdir = fetched(tmp_path, {"source": "url", "url": archive.as_uri(),
                                 "files": {"train": "AdvertiseGen/train.json", "test": "AdvertiseGen/dev.jsn"}})
    result = snakemake(workdir, "--keep-going", *TARGETS, check=False)
    assert result.returncode != 0
    log = (workdir / "logs/convert/ds/test.log").read_text(encoding="utf-8")
    assert ("datasets.ds.files.test: resources/datasets/ds holds no file 'AdvertiseGen/dev.jsn'; it holds 2: "
            "AdvertiseGen/dev.json, AdvertiseGen/train.json") in log
    assert not (workdir / "results/converted/ds/test.jsonl").exists()
    assert (workdir / "results/converted/ds/train.jsonl").is_file()  # the name it holds was read
