# Config validation and the input functions every rule uses; all branching on config lives here.
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

DATASETS = config["datasets"]
MODEL = config["model"]
ENV = "../envs/glmtune.yaml"
# The rules that load the model (tokenize, train, evaluate, merge_adapters) need the old transformers the original
# ChatGLM3 / GLM-4 remote code was written for, when it runs (model.trust_remote_code).
MODEL_ENV = "../envs/glmtune_remote_code.yaml" if MODEL["trust_remote_code"] else ENV
LOCAL_SOURCES = ("path", "llamafactory")  # read in place: no fetch job


def resolve_llamafactory(name, dataset):
    """Fill format, columns, tags and files of a dataset_info.json entry, as LLaMA-Factory reads it."""
    from glmtune.formats import dataset_info_file, from_dataset_info

    for key in ("dataset_info", "name"):
        if not dataset.get(key):
            raise WorkflowError(f"config: datasets.{name}.{key} is required with source: llamafactory")
    if not Path(dataset["dataset_info"]).is_file():
        raise WorkflowError(f"config: datasets.{name}.dataset_info: no such file: {dataset['dataset_info']}")
    try:
        fmt, options = from_dataset_info(dataset["dataset_info"], dataset["name"])
    except (ValueError, KeyError) as err:
        raise WorkflowError(f"config: datasets.{name}: {err}")
    dataset["format"] = fmt
    dataset.update({k: v for k, v in options.items() if k not in dataset})
    dataset.setdefault("files", {"all": str(dataset_info_file(dataset["dataset_info"], dataset["name"]))})


def check_config():
    """Fail before any job runs, naming the key, when the config points at things that are not there."""
    for name, dataset in DATASETS.items():
        if dataset["source"] == "llamafactory":
            resolve_llamafactory(name, dataset)
        for key in ("format", "files"):
            if key not in dataset:
                raise WorkflowError(f"config: datasets.{name}.{key} is required with source: {dataset['source']}")
        for split, file in dataset["files"].items():
            if dataset["source"] in ("path", "llamafactory") and not Path(file).is_file():
                raise WorkflowError(f"config: datasets.{name}.files.{split}: no such file: {file}")
        if dataset["source"] == "url" and not dataset.get("url"):
            raise WorkflowError(f"config: datasets.{name}.url is required with source: url")
    needs = {"path": "path", "huggingface": "repo_id", "modelscope": "repo_id"}.get(MODEL["source"])
    if needs and not MODEL.get(needs):
        raise WorkflowError(f"config: model.{needs} is required with model.source: {MODEL['source']}")
    if MODEL["source"] == "path" and not Path(MODEL["path"], "config.json").is_file():
        raise WorkflowError(f"config: model.path: {MODEL['path']} is not a model folder (no config.json)")
    if MODEL["trust_remote_code"] and MODEL["source"] == "tiny":
        raise WorkflowError("config: model.trust_remote_code runs an original checkpoint's own modeling code; "
                            "model.source: tiny has none: set model.trust_remote_code: false")
    check_train()


def check_train():
    """Method settings known to fail mid-run (or, with remote code, LoRA targets not named as its modules are)."""
    from glmtune.methods import MethodError, check_method

    try:
        check_method(config["train"], remote_code=MODEL["trust_remote_code"])
    except MethodError as err:
        raise WorkflowError(f"config: {err}")
    if config["train"]["method"] == "ptuning" and config["evaluate"]["cache"] == "static":
        raise WorkflowError("config: evaluate.cache: static cannot be used with train.method: ptuning (the P-Tuning v2 "
                            "prefix is itself the KV cache); set evaluate.cache: dynamic")


check_config()


wildcard_constraints:
    dataset="|".join(DATASETS),
    part="all|train|validation|test",
    variant="base|finetuned",


def base_model_dir():
    """The tiny model is built from the training text in results/; real models are fetched to resources/."""
    if MODEL["source"] == "tiny":
        return "results/tiny_model"
    return f"resources/models/{MODEL['name']}"


def download_spec():
    """What fetch_model downloads: a change here downloads again; the preparing settings are prepare_model's."""
    return {k: MODEL.get(k) for k in ("source", "repo_id", "revision")}


def model_files(wildcards):
    """prepare_model's input: the download record of a hub model, or the config.json of a local folder."""
    if MODEL["source"] == "path":
        return str(Path(MODEL["path"], "config.json"))
    return f"resources/downloads/{wildcards.model}.json"


def fetch_model_spec():
    """What fetch_model needs; trust_remote_code only when set, so folders fetched before the key existed stay current."""
    spec = {k: MODEL.get(k) for k in ("source", "repo_id", "revision", "path")}
    return {**spec, "trust_remote_code": True} if MODEL["trust_remote_code"] else spec


def remote_code_params():
    """{"trust_remote_code": True} for the model-loading rules' params with model.trust_remote_code, else nothing:
    a new False param would make Snakemake re-run tokenize, train and export for results made before the key."""
    return {"trust_remote_code": True} if MODEL["trust_remote_code"] else {}


def raw_input(wildcards):
    """A local file as it is; otherwise the fetched folder (the member is named by raw_member)."""
    dataset = DATASETS[wildcards.dataset]
    if dataset["source"] in LOCAL_SOURCES:
        return dataset["files"][wildcards.part]
    return f"resources/datasets/{wildcards.dataset}"


def raw_member(wildcards):
    dataset = DATASETS[wildcards.dataset]
    return "" if dataset["source"] in LOCAL_SOURCES else dataset["files"][wildcards.part]


def convert_options(wildcards):
    keys = ("encoding", "on_invalid", "system", "dedupe", "clean", "columns", "tags")
    dataset = DATASETS[wildcards.dataset]
    return {key: dataset[key] for key in keys if key in dataset}


def converted_parts():
    """(dataset, split, path, max_samples, sample_ratio) of every converted file, for merging."""
    return [
        (name, part, f"results/converted/{name}/{part}.jsonl", dataset["max_samples"], dataset["sample_ratio"])
        for name, dataset in DATASETS.items()
        for part in dataset["files"]
    ]


def trained_for_export(wildcards):
    """The training output to merge; P-Tuning v2 has nothing to merge, so its merged_model stops before any job runs."""
    if config["train"]["method"] == "ptuning":
        raise WorkflowError(
            "results/merged_model: train.method: ptuning (P-Tuning v2) learns prefixes, not weight deltas, so there is "
            "nothing to merge into the base model. Build the adapter and its evaluation instead: snakemake --cores 8 "
            "results/train/adapter results/eval/metrics.md; then use it as it is: glmtune infer results/train/adapter "
            "--prompt ..."
        )
    return "results/train/adapter"


def eval_model_dir(wildcards):
    return "results/train/adapter" if wildcards.variant == "finetuned" else base_model_dir()
