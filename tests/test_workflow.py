"""Snakemake on a temporary copy of the workflow: the default job end to end, incremental re-runs, bad config."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glmtune.synthetic import write_advertisegen

from conftest import REPO

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=workdir,
                            capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(workdir: Path, target: str = "results/merged_model") -> list[str]:
    """Jobs a dry run would execute, as 'rule' or 'rule[wildcards]'."""
    out = snakemake(workdir, "-n", target)
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return []
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        match = re.match(r"(?:local)?rule (\w+):", block.strip())
        if match:
            wildcards = re.search(r"\n\s+wildcards: (.+)", block)
            jobs.append(match.group(1) + (f"[{wildcards.group(1)}]" if wildcards else ""))
    return sorted(jobs)


def copy_workflow(dest: Path) -> Path:
    for folder in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / folder, dest / folder)
    return dest


def edit_config(workdir: Path, change) -> None:
    path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(config)
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped default config, plus one local-file dataset so a raw-file edit can be tested."""
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    write_advertisegen(workdir / "data", 200, 20, 7)
    edit_config(workdir, lambda c: c["datasets"].update(
        local_adgen={"source": "path", "format": "advertisegen", "files": {"all": "data/train.json"}}))
    snakemake(workdir, "results/merged_model")
    return workdir


def test_default_job_trains_visibly_and_exports_a_plain_model(default_run: Path) -> None:
    metrics = json.loads((default_run / "results/eval/metrics.json").read_text())
    assert metrics["finetuned"]["rouge-l"] > metrics["base"]["rouge-l"] + 30
    assert metrics["finetuned"]["num_samples"] == 200
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = default_run / "results/merged_model"
    assert type(AutoModelForCausalLM.from_pretrained(merged)).__name__ == "GlmForCausalLM"
    assert AutoTokenizer.from_pretrained(merged).convert_tokens_to_ids("[gMASK]") is not None
    assert "ROUGE-L" in (merged / "eval_metrics.md").read_text()
    assert (default_run / "results/train/loss.png").is_file()
    assert list((default_run / "results/checkpoints").glob("*/checkpoint-*"))
    stats = json.loads((default_run / "results/tokenized/stats.json").read_text())
    assert stats["splits"]["train"]["samples"] > 2000 and "p99" in stats["splits"]["train"]["length"]
    assert (default_run / "logs/train.log").read_text()


def test_second_run_has_nothing_to_do(default_run: Path) -> None:
    assert planned_jobs(default_run) == []


def test_editing_one_raw_file_reruns_only_its_dataset_and_downstream(default_run: Path) -> None:
    raw = default_run / "data/train.json"
    original = raw.read_text(encoding="utf-8")
    raw.write_text(original + json.dumps({"content": "类型#裙", "summary": "新的一条。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        assert planned_jobs(default_run) == sorted([
            "convert[dataset=local_adgen, part=all]", "merge_splits", "build_tiny_model", "tokenize", "train",
            "evaluate[variant=base]", "evaluate[variant=finetuned]", "compare_models", "merge_adapters",
        ])
    finally:
        raw.write_text(original, encoding="utf-8")
    assert planned_jobs(default_run) == []  # same content again: Snakemake compares checksums, not only times


def test_changing_an_evaluation_parameter_reruns_only_evaluation(default_run: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(default_run, workdir, symlinks=True)
    edit_config(workdir, lambda c: c["evaluate"].update(max_new_tokens=64))
    jobs = planned_jobs(workdir)
    assert "train" not in jobs and "tokenize" not in jobs
    assert jobs == sorted(["evaluate[variant=base]", "evaluate[variant=finetuned]", "compare_models", "merge_adapters"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["train"].update(learning_rat=1e-4), "learning_rat"),
        (lambda c: c["train"].update(max_steps="many"), "max_steps"),
        (lambda c: c["datasets"].update(mine={"source": "path", "format": "advertisegen", "files": {"train": "no/such.json"}}),
         "datasets.mine.files.train"),
        (lambda c: c["model"].update(source="path", path="no/such/model"), "model.path"),
        (lambda c: c["datasets"]["synthetic_adgen"].update(format="csv"), "format"),
        (lambda c: c["datasets"].update(lf={"source": "llamafactory", "name": "x"}), "datasets.lf.dataset_info"),
        (lambda c: c["datasets"].update(nf={"source": "path", "files": {"all": "config/config.yaml"}}), "datasets.nf.format"),
        (lambda c: c["train"]["lora"].update(target_modules=["qkv"]), "target_modules"),
        (lambda c: c["train"].update(method="ptuning", gradient_checkpointing=True), "gradient_checkpointing cannot be combined"),
        (lambda c: c["train"].update(method="ptuning"), "nothing to merge into the base model"),
        (lambda c: (c["train"].update(method="ptuning"), c["evaluate"].update(cache="static")), "evaluate.cache: static"),
    ],
    ids=["unknown-key", "wrong-type", "missing-dataset-file", "missing-model-folder", "unknown-format",
         "llamafactory-without-registry", "missing-format", "unknown-lora-module", "ptuning-with-checkpointing",
         "ptuning-has-no-merged-model", "ptuning-with-static-cache"],
)
def test_bad_config_stops_before_any_job_naming_the_key(tmp_path: Path, change, message: str) -> None:
    workdir = copy_workflow(tmp_path)
    edit_config(workdir, change)
    result = snakemake(workdir, "-n", "results/merged_model", check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (workdir / "results").exists()


SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "config").rglob("*.yaml"))


@pytest.mark.parametrize("configfile", SHIPPED)
def test_every_shipped_config_validates_and_plans(tmp_path: Path, configfile: str) -> None:
    """Presets layer over the default; full configs stand alone. Both must validate and plan a DAG."""
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "-n", "results/train/adapter", "--configfile", configfile)
    assert "rule train:" in result.stdout


def test_real_datasets_merge_through_the_workflow(tmp_path: Path) -> None:
    """Several real formats in one run: EmoLLM multi-turn with the tutorial's cleaning, a LLaMA-Factory registry
    entry, and the GBK/CRLF AdvertiseGen copy; every record is either converted or a reject with a reason."""
    from conftest import shared_data

    emollm, info = shared_data("EmoLLM/data.json"), shared_data("llamafactory/dataset_info.json")
    gbk = shared_data("AdvertiseGen/train.gbk_crlf.json")
    workdir = copy_workflow(tmp_path)
    edit_config(workdir, lambda c: c.update(datasets={
        "emollm": {"source": "path", "format": "emollm", "files": {"all": str(emollm)},
                   "clean": {"remove_strings": ["🐳"], "drop_intro_line": "好，我是"}},
        "glaive": {"source": "llamafactory", "dataset_info": str(info), "name": "glaive_toolcall_zh_demo", "on_invalid": "skip"},
        "adgen_gbk": {"source": "path", "format": "advertisegen", "encoding": "gbk", "files": {"all": str(gbk)}, "max_samples": 500},
    }))
    snakemake(workdir, "results/splits/report.json")
    total = 0
    for name in ("emollm", "glaive", "adgen_gbk"):
        report = json.loads((workdir / f"results/converted/{name}/all.report.json").read_text())
        rejects = [json.loads(line) for line in (workdir / f"results/converted/{name}/all.rejects.jsonl").read_text().splitlines()]
        assert report["records_in"] == report["records_out"] + report["rejected"] == report["records_out"] + len(rejects)
        assert all(r["reason"] for r in rejects)
        total += report["records_out"] if name != "adgen_gbk" else 500
    assert sum(json.loads((workdir / "results/splits/report.json").read_text())["sizes"].values()) == total


def test_report_shows_the_metrics_table_and_the_loss_curve(default_run: Path) -> None:
    """`snakemake --report` embeds the metrics as HTML (shown inline; Markdown would only be a download) and the PNG."""
    import base64

    snakemake(default_run, "--report", "report.html")
    report = (default_run / "report.html").read_text(encoding="utf-8")
    embedded = {}
    for path in ("results/eval/metrics.html", "results/train/loss.png"):
        match = re.search(re.escape(f'"{path}": ') + r'\{.*?"mime_type": "([^"]+)".*?"data_uri": "data:[^"]*?base64,([^"]+)"', report)
        assert match, f"{path} is not in the report"
        embedded[path] = (match.group(1), base64.b64decode(match.group(2)))
    assert embedded["results/train/loss.png"][0] == "image/png" and embedded["results/train/loss.png"][1][:4] == b"\x89PNG"
    mime, html = embedded["results/eval/metrics.html"]
    finetuned = json.loads((default_run / "results/eval/metrics.json").read_text())["finetuned"]["rouge-l"]
    assert mime == "text/html" and "<td>ROUGE-L (F×100, jieba)</td>" in html.decode() and f"{finetuned:.4g}" in html.decode()


def test_a_hub_model_is_downloaded_on_the_login_node_and_prepared_in_a_job(tmp_path: Path) -> None:
    """fetch_model (a localrule) only downloads; prepare_model (a cluster job) converts or links. A local folder
    needs no download."""
    workdir = copy_workflow(tmp_path / "hub")
    edit_config(workdir, lambda c: c.update(model={"name": "glm4", "source": "huggingface", "repo_id": "THUDM/glm-4-9b-chat-hf"}))
    assert {"fetch_model[model=glm4]", "prepare_model[model=glm4]"} <= set(planned_jobs(workdir, "results/tokenized/stats.json"))
    fetch = (workdir / "workflow/rules/fetch.smk").read_text()
    assert re.search(r"localrules:\s+fetch_dataset,\s+fetch_model,\n", fetch)

    local = tmp_path / "local-model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    workdir = copy_workflow(tmp_path / "path")
    edit_config(workdir, lambda c: c.update(model={"name": "mine", "source": "path", "path": str(local)}))
    jobs = planned_jobs(workdir, "results/tokenized/stats.json")
    assert "prepare_model[model=mine]" in jobs and not any(job.startswith("fetch_model") for job in jobs)
