# The input functions and names every rule uses (the config is validated and checked in config.smk, included before).
import re
from pathlib import Path

from glmtune.config_layers import LOCAL_SOURCES  # read in place: no fetch job
from glmtune.experiments import evaluation_reads  # evaluate.smk's params
from glmtune.train.method_registry import method_label  # evaluate.smk's params: the table's method column

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger


# Escaped: a name is a folder name, not a pattern ("a.b" must not match "axb").
wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    model=re.escape(MODEL["name"]),
    part="all|train|validation|test",
    run="|".join(map(re.escape, RUNS)),
    tokenized="|".join(map(re.escape, TOKENIZE_SETTINGS)),


def base_model_dir():
    """The tiny model is built from the training text in results/; real models are fetched to resources/."""
    if MODEL["source"] == "tiny":
        return "results/tiny_model"
    return f"resources/models/{MODEL['name']}"


def download_spec():
    """What fetch_model downloads: a change here downloads again; the preparing settings are prepare_model's."""
    return {k: MODEL.get(k) for k in ("source", "repo_id", "revision")}


def model_files(wildcards):
    """prepare_model's input: the download record of a hub model, or a local folder's files that decide what it
    computes (glmtune.model.base_identity; with trust_remote_code its code too), so replacing the folder's weights or
    tokenizer re-runs what was made from them."""
    from glmtune.model.base_identity import folder_inputs

    if MODEL["source"] != "path":
        return f"resources/downloads/{wildcards.model}.json"
    return folder_inputs(MODEL["path"], MODEL["trust_remote_code"])


def export_inputs():
    """What the export reads from a local native model folder beyond prepare_model's output: its generation config."""
    from glmtune.model.base_identity import export_generation_config

    return export_generation_config(MODEL["path"], MODEL["trust_remote_code"]) if MODEL["source"] == "path" else []


def fetch_model_spec():
    """What prepare_model needs (the template: a native folder whose own chat template differs gets the family's);
    trust_remote_code only when set, so folders fetched before the key existed stay current."""
    spec = {k: MODEL.get(k) for k in ("source", "repo_id", "revision", "path", "template")}
    return {**spec, "trust_remote_code": True} if MODEL["trust_remote_code"] else spec


def remote_code_params():
    """{"trust_remote_code": True} for the model-loading rules' params with model.trust_remote_code, else nothing:
    a new False param would make Snakemake re-run tokenize, train and export for results made before the key."""
    return {"trust_remote_code": True} if MODEL["trust_remote_code"] else {}


def raw_input(wildcards):
    """Local files as they are (one, or a list read as one); otherwise the fetched folder (the members are named by
    raw_member)."""
    from glmtune.data_settings import given_files

    dataset = DATASETS[wildcards.dataset]
    if dataset["source"] in LOCAL_SOURCES:
        return given_files(dataset["files"][wildcards.part])
    return f"resources/datasets/{wildcards.dataset}"


def raw_member(wildcards):
    """The file(s) inside a fetched dataset's folder, as the config names them; "" for local files."""
    dataset = DATASETS[wildcards.dataset]
    return "" if dataset["source"] in LOCAL_SOURCES else dataset["files"][wildcards.part]


def convert_options(wildcards):
    """A dataset's keys the convert stage reads (glmtune.data_settings.ConvertSettings), converters' options included."""
    from glmtune.data.formats import option_keys

    keys = ("encoding", "on_invalid", "system", "dedupe", "clean", *option_keys(), "max_reject_ratio")
    dataset = DATASETS[wildcards.dataset]
    return {key: dataset[key] for key in keys if key in dataset}


def converted_parts():
    """Every converted file, for merging: the keys of glmtune.data.split.Part; datasets in the config's order (a
    later one's duplicates give way to an earlier one's), each dataset's files in PART_ORDER, not as written."""
    from glmtune.data.split import PART_ORDER

    return [
        {"dataset": name, "split": part, "path": f"results/converted/{name}/{part}.jsonl",
         "max_samples": dataset["max_samples"], "sample_ratio": dataset["sample_ratio"]}
        for name, dataset in DATASETS.items()
        for part in sorted(dataset["files"], key=PART_ORDER.index)
    ]


def test_from_given_files():
    """Whether the test split is the given test files alone (glmtune.data.split.given_test_only): then the
    split_test rule exists and writes it, and a training record's edit leaves it, and the base model's evaluation,
    untouched; otherwise merge_splits writes it with the rest. Decided here, so one rule makes it in every layout."""
    from glmtune.data.split import given_test_only

    split = config["split"]
    layouts = {name: list(dataset["files"]) for name, dataset in DATASETS.items()}
    return given_test_only(layouts, split["test_ratio"], split["dedupe_across_datasets"])


def test_parts():
    """The converted files split_test writes the test split from (none when merge_splits writes it)."""
    return [part for part in converted_parts() if part["split"] == "test"] if test_from_given_files() else []


def merge_outputs():
    """merge_splits' outputs: the test split too unless split_test writes it."""
    outputs = {"train": "results/splits/train.jsonl", "validation": "results/splits/validation.jsonl"}
    if not test_from_given_files():
        outputs["test"] = "results/splits/test.jsonl"
    return {**outputs, "report": "results/splits/report.json"}


def one_of(runs):
    """A wildcard pattern matching exactly these run names (none: a pattern that never matches)."""
    return "|".join(map(re.escape, runs)) or "(?!)"


def trained_dir(run):
    """What a run's training writes: an adapter (LoRA, P-Tuning v2), or with full SFT a whole model."""
    return f"results/runs/{TRAINER[run]}/" + ("model" if run in FULL_RUNS else "adapter")


def redo_replaced_model_folder():
    """A model.path folder whose files differ from what resources/models/<name> was made from, though dated earlier
    than it (glmtune.model.source_record): the prepared folder is dated back, so it and all made from it run again."""
    import sys

    from glmtune.model.source_record import changed_files, date_back, record_source, touching

    if not workflow.is_main_process or MODEL["source"] != "path":
        return
    prepared = f"resources/models/{MODEL['name']}"
    if not (changed := changed_files(prepared, MODEL["path"], MODEL["trust_remote_code"])):
        return
    if touching(sys.argv):  # the user marks what is there current: so is the folder it was made from
        record_source(prepared, MODEL["path"], MODEL["trust_remote_code"])
        logger.warning(f"model.path {MODEL['path']}: {', '.join(changed)} recorded as what {prepared} is made from (--touch)")
    else:
        date_back(prepared)
        logger.warning(
            f"model.path {MODEL['path']}: {', '.join(changed)} differ from what {prepared} was made from, whatever "
            "their dates (a copy kept its old dates, a link points elsewhere): prepare_model and all made from the "
            "model run again")


def warn_missing_trained():
    """A run whose trained folder is gone while its evaluation is still there (a training cancelled after -R train, or
    the folder deleted): Snakemake keeps the evaluation and export current, as they are of the same settings and data,
    and rebuilds the folder only when asked. Say so, once, in the process that plans the jobs."""
    if not workflow.is_main_process:
        return
    for run in TRAINING_RUNS:  # a run evaluating another's training is told of that one's folder
        if Path(f"results/runs/{run}/eval/scores.json").is_file() and not Path(trained_dir(run)).is_dir():
            logger.warning(
                f"run {run}: {trained_dir(run)} is missing while its evaluation (results/runs/{run}/eval) is there; "
                "where that evaluation is of this run's current settings and data, it and the export stay as they "
                f"are (the plan below says which jobs re-run). To train it again: {this_job_command(trained_dir(run))} "
                "(then what uses it is outdated and re-runs)"
            )


def warn_missing_evaluations():
    """A run's evaluation deleted by hand while the comparison still shows it: Snakemake keeps results/eval as it is
    (its other inputs are current, and a missing file between is made only when something needs it), so the row stays.
    Said once, with the command that evaluates it again."""
    import json

    if not workflow.is_main_process or not Path("results/eval/metrics.json").is_file():
        return
    try:
        shown = json.loads(Path("results/eval/metrics.json").read_text(encoding="utf-8"))
    except ValueError:
        return
    for run in RUNS:
        scores = f"results/runs/{run}/eval/scores.json"
        if run in shown and not Path(scores).is_file():
            logger.warning(
                f"run {run}: {scores} is missing while the comparison (results/eval/metrics.md, and a merged model's "
                "eval_metrics.md) still shows its scores; they stay as they are until it is evaluated again: "
                f"{this_job_command(f'results/runs/{run}/eval/predictions.jsonl')} (training it first where its "
                "trained folder is gone; then the comparison re-runs)"
            )


def warn_leftovers():
    """Outputs an earlier config left that look like this one's (glmtune.leftovers): named once, while planning."""
    from glmtune.leftovers import RunLayout, leftover_warnings

    if not workflow.is_main_process:
        return
    layouts = {run: RunLayout(TRAINER[run], "model" if run in FULL_RUNS else "adapter", METHOD[run].mergeable)
               for run in RUNS}
    for message in leftover_warnings(".", layouts, EXPORT_RUN):
        logger.warning(message)


def this_job_command(*targets):
    """A snakemake command for `targets` with this job's --configfile files and --config values, for messages."""
    import sys

    from glmtune.config_layers import job_command, profile_words

    settings = workflow.config_settings
    return job_command(targets, settings.configfiles, settings.config_args or (), snakefile=workflow.main_snakefile,
                       profiles=profile_words(sys.argv))


def tokenized_input(part):
    return lambda wildcards: f"results/tokenized/{TOKENIZED[wildcards.run]}/{part}"


def run_setting(section, key=None):
    """A params function: the run's settings of one section (or one key of it)."""
    def params(wildcards):
        settings = RUNS[wildcards.run][section]
        return settings if key is None else settings[key]

    return params


def cannot_export(run):
    method = METHOD[run]
    return WorkflowError(
        f"export of run {run}: train.method: {method.name} ({method.title}) {method.cannot_merge}, so there is "
        "nothing to merge into the base model. Build the adapter and the comparison instead: "
        f"{this_job_command(trained_dir(run), 'results/eval/metrics.md')}; then use it as it is: glmtune infer "
        f"{trained_dir(run)} --prompt ... (or choose another run with export.run)"
    )


def trained_for_export(run):
    """The training output to merge; P-Tuning v2 has nothing to merge (check_export_targets says so earlier)."""
    if not METHOD[run].mergeable:
        raise cannot_export(run)
    return trained_dir(run)


def requested_targets():
    """The targets on the snakemake command line ({"all"} when none). Empty where that cannot be told: a cluster
    job's own snakemake (--target-jobs), one started through the API, commands that build no DAG (--list, ...)."""
    import os
    import sys

    from snakemake.cli import get_argument_parser

    if "snakemake" not in Path(sys.argv[0]).parts[-2:] and Path(sys.argv[0]).name != "snakemake":
        return set()
    try:
        args = get_argument_parser().parse_args(sys.argv[1:])
    except (SystemExit, Exception):
        return set()
    if args.target_jobs:
        return set()
    if args.targets:
        return {os.path.normpath(target) for target in args.targets}
    quiet = ("list_rules", "list_target_rules", "lint", "unlock", "cleanup_metadata", "print_compilation", "cleanup_shadow")
    return set() if any(getattr(args, flag, None) for flag in quiet) else {"all"}


def check_export_targets():
    """Asking for the merged model of a P-Tuning v2 run stops here, in one line: from trained_for_export, an
    input function, Snakemake would print the reason inside an InputFunctionException and its traceback."""
    targets = requested_targets()
    for run, settings in RUNS.items():
        wanted = {f"results/runs/{run}/merged_model"}
        if run == EXPORT_RUN:
            wanted |= {"results/merged_model", "export_chosen"}  # `all` takes its adapter instead
        if not METHOD[run].mergeable and targets & wanted:
            raise cannot_export(run)


def reported_files():
    """What `snakemake --report` embeds (the outputs marked report())."""
    plots = [f"results/runs/{run}/loss.png" for run in TRAINING_RUNS]
    return ["results/eval/metrics.html", "results/eval/loss_curves.png", "results/report/data.html", *plots]


def check_report_current():
    """Refuse a report of files out of date for this config (glmtune.report_check)."""
    import sys

    from glmtune.config_layers import profile_words
    from glmtune.report_check import report_requested, stale_report_problem

    if not workflow.is_main_process or not report_requested(sys.argv):
        return
    settings = workflow.config_settings
    problem = stale_report_problem(reported_files(), workflow.main_snakefile, settings.configfiles,
                                   settings.config_args or (), this_job_command(*reported_files()),
                                   profile_words(sys.argv))
    if problem:
        raise WorkflowError(problem)


check_export_targets()
redo_replaced_model_folder()
warn_missing_trained()
warn_missing_evaluations()
warn_leftovers()
check_report_current()


def comparison_inputs():
    """compare_models' inputs: every run's scores, log, training summary and the training job's benchmark."""
    return {
        "scores": [f"results/runs/{run}/eval/scores.json" for run in RUNS],
        "logs": [f"results/runs/{TRAINER[run]}/log.jsonl" for run in RUNS],
        "trained": [trained_dir(run) for run in RUNS],
        "benchmarks": [f"benchmarks/runs/{TRAINER[run]}/train.tsv" for run in RUNS],
    }


def rule_resources(*rules, **own):
    """A rule's resources: its `own`, then config `resources` of each rule named, in order (a rule made with `use rule`
    names its parent first). Snakemake puts --set-resources over these key by key and fills the rest from
    --default-resources; --set-resources in a profile is one block that a --set-resources on the command line
    replaces whole, hence the per-rule values live here, see the README section "Running on a SLURM cluster"."""
    merged = dict(own)
    for name in rules:
        merged.update(config["resources"].get(name) or {})
    return merged


def trained_on(wildcards):
    """The tokenized data a run's training read: with the training settings (trained_with), what the jobs using its
    output take too (workflow/rules/evaluate.smk), so a killed training never leaves them looking up to date. None
    for the base model's evaluation (no run)."""
    if "run" not in wildcards.keys():
        return []
    return [tokenized_input(part)(wildcards) for part in ("train", "validation")]


def trained_with(wildcards):
    return RUNS[wildcards.run]["train"] if "run" in wildcards.keys() else None
