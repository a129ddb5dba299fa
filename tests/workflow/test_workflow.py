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

from glmtune.data.synthetic import write_advertisegen

from conftest import REPO
from helpers.model_folders import sharded

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=workdir,
                            capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(workdir: Path, target: str = "results/merged_model", *args: str) -> list[str]:
    """Jobs a dry run would execute, as 'rule' or 'rule[wildcards]'."""
    out = snakemake(workdir, "-n", target, *args)
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


def test_a_report_of_files_out_of_date_for_the_config_is_refused(default_run: Path) -> None:
    """`--report` builds nothing: after a config edit it embedded the earlier results (a dropped run's row, the data
    page of the earlier splits) without a word. It is refused, naming the jobs that would update them."""
    (default_run / "longer.yaml").write_text("evaluate:\n  max_new_tokens: 17\n", encoding="utf-8")
    result = snakemake(default_run, "--report", "stale.html", "--configfile", "longer.yaml", check=False)
    assert result.returncode != 0 and not (default_run / "stale.html").exists()
    assert re.search(r"snakemake --report embeds the files as they are; jobs would make or update them for this "
                     r"config: [^.]*\bevaluate \(1\)[^.]*compare_models \(1\)", result.stdout + result.stderr)
    assert "--configfile longer.yaml (or add --report-after-run), then make the report again" in result.stdout + result.stderr


def test_default_job_trains_visibly_and_exports_a_plain_model(default_run: Path) -> None:
    metrics = json.loads((default_run / "results/eval/metrics.json").read_text())
    assert metrics["main"]["rouge-l"] > metrics["base"]["rouge-l"] + 30
    assert metrics["main"]["num_samples"] == 200
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = default_run / "results/merged_model"
    assert type(AutoModelForCausalLM.from_pretrained(merged)).__name__ == "GlmForCausalLM"
    assert AutoTokenizer.from_pretrained(merged).convert_tokens_to_ids("[gMASK]") is not None
    assert "ROUGE-L" in (merged / "eval_metrics.md").read_text()
    assert "<h2>Datasets</h2>" in (merged / "data_report.html").read_text()
    info = json.loads((merged / "export_info.json").read_text())  # which run it is, as the user can check
    assert info["exported_from"] == "results/runs/main/adapter" and info["method"] == "lora"
    assert info["train_summary"] == json.loads((default_run / "results/runs/main/adapter/train_summary.json").read_text())
    assert (default_run / "results/runs/main/loss.png").is_file()
    assert list((default_run / "results/runs/main/checkpoints").glob("*/checkpoint-*"))
    stats = json.loads((default_run / "results/tokenized/default/stats.json").read_text())
    assert stats["splits"]["train"]["samples"] > 2000 and "p99" in stats["splits"]["train"]["length"]
    assert (default_run / "logs/runs/main/train.log").read_text()


def test_second_run_has_nothing_to_do(default_run: Path) -> None:
    assert planned_jobs(default_run) == []


def test_editing_one_raw_file_reruns_only_its_dataset_and_downstream(default_run: Path) -> None:
    raw = default_run / "data/train.json"
    original = raw.read_text(encoding="utf-8")
    raw.write_text(original + json.dumps({"content": "类型#裙", "summary": "新的一条。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        assert planned_jobs(default_run) == sorted([
            "convert[dataset=local_adgen, part=all]", "merge_splits", "build_tiny_model", "tokenize[tokenized=default]",
            "train[run=main]", "evaluate_base", "evaluate[run=main]", "compare_models", "export_chosen", "report_data",
        ])
    finally:
        raw.write_text(original, encoding="utf-8")
    assert planned_jobs(default_run) == []  # same content again: Snakemake compares checksums, not only times


def test_changing_an_evaluation_parameter_reruns_only_evaluation(default_run: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(default_run, workdir, symlinks=True)
    edit_config(workdir, lambda c: c["evaluate"].update(max_new_tokens=64))
    jobs = planned_jobs(workdir)
    assert jobs == sorted(["evaluate_base", "evaluate[run=main]", "compare_models", "export_chosen"])


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
        (lambda c: c["datasets"]["synthetic_adgen"].update(encoding="utf-9"), "datasets.synthetic_adgen.encoding"),
        (lambda c: c["train"].update(deepspeed="config/deepspeed/ds_zero_9.json"), "train.deepspeed: no such file"),
        (lambda c: c["train"].update(lr_scheduler="constant"), "train.warmup_steps 10 has no effect with train.lr_scheduler: constant"),
        (lambda c: c["tokenize"].update(cutoff_len=4), "tokenize.cutoff_len is 4 tokens"),
        (lambda c: c["tokenize"].update(max_input_length=1, max_output_length=1),
         "tokenize.max_input_length + max_output_length + 1 is 3 tokens"),
    ],
    ids=["unknown-key", "wrong-type", "missing-dataset-file", "missing-model-folder", "unknown-format",
         "llamafactory-without-registry", "missing-format", "unknown-lora-module", "ptuning-with-checkpointing",
         "ptuning-has-no-merged-model", "ptuning-with-static-cache", "unknown-encoding", "missing-deepspeed-file",
         "warmup-the-schedule-ignores",
         "cutoff-len-fits-nothing", "input-output-fit-nothing"],
)
def test_bad_config_stops_before_any_job_naming_the_key(tmp_path: Path, change, message: str) -> None:
    workdir = copy_workflow(tmp_path)
    edit_config(workdir, change)
    result = snakemake(workdir, "-n", "results/merged_model", check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert len(result.stderr.splitlines()) < 12  # the problem, not the whole schema and config around it
    assert not (workdir / "results").exists()


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


DAG_IMPORTS = """
import atexit, sys
from snakemake.cli import main
def record():
    heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
    open("imported.txt", "w").write(" ".join(heavy) or "none")
atexit.register(record)
sys.argv = ["snakemake", "--cores", "2", "-n", "results/merged_model"]
main()
"""


def test_building_the_job_graph_imports_no_torch(tmp_path: Path) -> None:
    """The config is checked and typed (glmtune.settings, glmtune.config_rules) while the graph is built: no torch."""
    workdir = copy_workflow(tmp_path)
    done = subprocess.run([sys.executable, "-c", DAG_IMPORTS], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Job stats" in done.stdout + done.stderr  # the graph was built
    assert (workdir / "imported.txt").read_text() == "none"


@pytest.mark.parametrize("section", ["datasets", "model"])
@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_a_name_that_is_no_plain_folder_name_stops_before_any_job(tmp_path: Path, section: str, name: str) -> None:
    """`..` would make resources/datasets/.. (all of resources/) an output that a failed job deletes."""
    workdir = copy_workflow(tmp_path)
    (workdir / "resources").mkdir()
    (workdir / "resources" / "keep").write_text("cached download")
    if section == "datasets":
        edit_config(workdir, lambda c: c.update(datasets={name: c["datasets"]["synthetic_adgen"]}))
    else:
        edit_config(workdir, lambda c: c["model"].update(name=name))
    result = snakemake(workdir, "results/merged_model", check=False)
    text = result.stdout + result.stderr
    where = "datasets" if section == "datasets" else "model.name"
    assert result.returncode != 0 and f"{where}: '{name}' is not a plain folder name" in text
    assert (workdir / "resources" / "keep").read_text() == "cached download"
    assert not (workdir / "results").exists()


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
    for path in ("results/eval/metrics.html", "results/runs/main/loss.png", "results/eval/loss_curves.png", "results/report/data.html"):
        match = re.search(re.escape(f'"{path}": ') + r'\{.*?"mime_type": "([^"]+)".*?"data_uri": "data:[^"]*?base64,([^"]+)"', report)
        assert match, f"{path} is not in the report"
        embedded[path] = (match.group(1), base64.b64decode(match.group(2)))
    assert embedded["results/runs/main/loss.png"][0] == "image/png" and embedded["results/runs/main/loss.png"][1][:4] == b"\x89PNG"
    assert embedded["results/eval/loss_curves.png"][1][:4] == b"\x89PNG"
    mime, html = embedded["results/eval/metrics.html"]
    finetuned = json.loads((default_run / "results/eval/metrics.json").read_text())["main"]["rouge-l"]
    assert mime == "text/html" and "<th>ROUGE-L (F×100, jieba)</th>" in html.decode() and f"{finetuned:.4g}" in html.decode()
    mime, data = embedded["results/report/data.html"]
    rejected = json.loads((default_run / "results/converted/synthetic_adgen/all.report.json").read_text())["rejected"]
    assert mime == "text/html" and f"<td>{rejected}</td><td>duplicates {rejected}</td>" in data.decode()
    assert "exact duplicate of an earlier conversation" in data.decode() and "<h2>Tokens</h2>" in data.decode()


def test_a_hub_model_is_downloaded_on_the_login_node_and_prepared_in_a_job(tmp_path: Path) -> None:
    """fetch_model (a localrule) only downloads; prepare_model (a cluster job) converts or links. A local folder
    needs no download."""
    workdir = copy_workflow(tmp_path / "hub")
    edit_config(workdir, lambda c: c.update(model={"name": "glm4", "source": "huggingface", "repo_id": "THUDM/glm-4-9b-chat-hf"}))
    assert {"fetch_model[model=glm4]", "prepare_model[model=glm4]"} <= set(planned_jobs(workdir, "results/tokenized/default/stats.json"))
    rules = "".join(path.read_text() for path in sorted((workdir / "workflow/rules").glob("*.smk")))
    local_rules = {name for block in re.findall(r"^localrules:\n((?:\s+\w+,\n)+)", rules, re.M) for name in re.findall(r"\w+", block)}
    assert {"fetch_dataset", "fetch_model"} <= local_rules and "prepare_model" not in local_rules

    local = sharded(tmp_path / "local-model", shards=1)
    workdir = copy_workflow(tmp_path / "path")
    edit_config(workdir, lambda c: c.update(model={"name": "mine", "source": "path", "path": str(local)}))
    jobs = planned_jobs(workdir, "results/tokenized/default/stats.json")
    assert "prepare_model[model=mine]" in jobs and not any(job.startswith("fetch_model") for job in jobs)


def test_full_sft_writes_a_model_folder_not_an_adapter(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "-n", "results/merged_model", "--configfile", "config/presets/full.yaml")
    assert "output: results/runs/main/model," in result.stdout and "results/runs/main/adapter" not in result.stdout


def test_a_tracker_that_is_not_installed_stops_before_any_job(tmp_path: Path) -> None:
    import importlib.util

    missing = next((name for name in ("swanlab", "wandb", "mlflow") if importlib.util.find_spec(name) is None), None)
    if missing is None:
        pytest.skip("every tracker is installed here")
    workdir = copy_workflow(tmp_path)
    edit_config(workdir, lambda c: c["train"].update(report_to=[missing]))
    result = snakemake(workdir, "-n", "results/merged_model", check=False)
    assert result.returncode != 0
    assert f"train.report_to: {missing} needs its package: pip install {missing}" in result.stdout + result.stderr


DEPRECATION = "is_gradient_checkpointing"  # transformers' FutureWarning, raised when peft wraps a model


def test_no_stage_log_and_no_infer_stderr_shows_the_peft_deprecation_warning(default_run: Path) -> None:
    logs = {log: log.read_text(encoding="utf-8") for log in (default_run / "logs").rglob("*.log")}
    assert {"train.log", "evaluate.log"} <= {log.name for log in logs}
    assert not [log for log, text in logs.items() if DEPRECATION in text]
    infer = subprocess.run([sys.executable, "-m", "glmtune.cli", "infer", "results/runs/main/adapter", "--prompt", "类型#裙",
                            "--max-new-tokens", "4"], cwd=default_run, capture_output=True, text=True, timeout=300)
    assert infer.returncode == 0, infer.stderr
    assert DEPRECATION not in infer.stderr


def test_a_runs_logs_including_the_final_export_are_where_the_readme_says(tmp_path: Path) -> None:
    """The README's Outputs table names each log of a run under logs/runs/<run>/; the rules' log: must be those."""
    workdir = copy_workflow(tmp_path)
    dry = snakemake(workdir, "-n", "results/merged_model", "results/runs/main/merged_model")
    logs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry.stdout + dry.stderr):
        if match := re.match(r"(?:local)?rule (\w+):.*?\n\s+log: (\S+)", block.strip(), re.S):
            logs[match.group(1)] = match.group(2)
    row = next(line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `logs/<rule>/"))
    for rule in ("train", "evaluate", "export_model", "export_chosen"):
        assert logs[rule] == f"logs/runs/main/{rule}.log", (rule, logs[rule])
        assert f"`{rule}.log`" in row, rule


def planned_resources(workdir: Path, *args: str) -> dict[str, dict[str, str]]:
    """'rule' -> its resources as a dry run prints them (the last job of each rule)."""
    out = snakemake(workdir, "-n", *args)
    found = {}
    for rule, resources in re.findall(r"^(?:local)?rule (\w+):.*?\n\s+resources: ([^\n]+)", out.stdout + out.stderr, re.M | re.S):
        found[rule] = dict(item.split("=", 1) for item in resources.split(", "))
    return found


def test_a_command_line_gpu_count_keeps_the_slurm_partition_memory_and_cpus(tmp_path: Path) -> None:
    """profiles/slurm's per-rule values are config (resources.yaml), so `--set-resources train:gpu=8` changes only
    train's GPUs (a profile's set-resources block would be replaced whole by it). The profile is run without its
    executor keys: the plugin is not installed here; the resources are what it would submit."""
    workdir = copy_workflow(tmp_path)
    profile = load_yaml(workdir / "profiles/slurm/config.yaml")
    assert "set-resources" not in profile
    (workdir / "profiles/dry").mkdir()
    (workdir / "profiles/dry/config.yaml").write_text(yaml.safe_dump({"default-resources": profile["default-resources"]}))
    (workdir / "mine.yaml").write_text(yaml.safe_dump({"resources": {"train": {"runtime": 600}}}))
    site = load_yaml(workdir / "profiles/slurm/resources.yaml")["resources"]
    jobs = planned_resources(workdir, "--workflow-profile", "profiles/dry", "--configfile", "profiles/slurm/resources.yaml",
                             "mine.yaml", "--set-resources", "train:gpu=8", "evaluate:gpu=2", "--", "results/merged_model")
    train = jobs["train"]
    assert train["gpu"] == "8" and train["runtime"] == "600"  # the command line, then the user's config file
    for key in ("slurm_partition", "mem_mb", "cpus_per_task", "nodes"):
        assert train[key] == str(site["train"][key]), key
    assert train["slurm_account"] == profile["default-resources"]["slurm_account"]
    assert jobs["evaluate"]["gpu"] == "2" and jobs["evaluate"]["slurm_partition"] == site["evaluate"]["slurm_partition"]
    assert jobs["evaluate_base"]["gpu"] == str(site["evaluate"]["gpu"])  # `evaluate:` on the command line names one rule
    assert jobs["export_chosen"]["mem_mb"] == str(site["export_model"]["mem_mb"])
    assert jobs["compare_models"]["slurm_partition"] == profile["default-resources"]["slurm_partition"]


def test_a_resources_entry_for_no_such_rule_stops_before_any_job(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    (workdir / "typo.yaml").write_text(yaml.safe_dump({"resources": {"trian": {"gpu": 8}}}))
    result = snakemake(workdir, "-n", "results/merged_model", "--configfile", "typo.yaml", check=False)
    assert result.returncode != 0 and "resources" in result.stdout + result.stderr and "trian" in result.stdout + result.stderr
