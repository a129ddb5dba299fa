# Config layering and validation, each run's settings, the checks before any job and the warnings said while planning.
from pathlib import Path

from glmtune.config_layers import sort_order_free, whole_numbers
from glmtune.experiments import shared_trainings, tokenized_sets
from glmtune.settings import stage_section
from glmtune.train.method_registry import get_method

from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

# The embedded default job (the Snakefile's configfile), the checkout's wherever snakemake runs.
DEFAULT_CONFIG = str(Path(workflow.basedir).parent / "config" / "config.yaml")


def layer_user_config(schema):
    """The config the job runs on (glmtune.config_layers): a --configfile naming datasets or model is a job of the
    user's own, over the schema's defaults only; otherwise the embedded default with the files over it. Snakemake's
    own merge of the files into config/config.yaml is replaced in place; --config values apply last."""
    from glmtune.config_layers import LayerError, layer_config, replaced_limits, written_by_user
    from glmtune.repeated_keys import config_file_problems

    files = [DEFAULT_CONFIG] if Path(DEFAULT_CONFIG).is_file() else []
    if problems := [line for path in [*files, *workflow.overwrite_configfiles] for line in config_file_problems(path)]:
        raise WorkflowError("config: " + "\n  ".join(problems))
    default = load_configfile(DEFAULT_CONFIG) if files else {}
    user_files = [load_configfile(path) or {} for path in workflow.overwrite_configfiles]
    try:
        layered = layer_config(default or {}, user_files, dict(workflow.config_settings.config), schema)
    except LayerError as err:
        raise WorkflowError(str(err))
    config.clear()
    config.update(layered)
    if workflow.is_main_process:
        written = written_by_user(user_files, dict(workflow.config_settings.config), schema)
        for line in replaced_limits(layered, written):
            logger.warning(line)


def load_schema():
    import yaml

    return yaml.safe_load(Path(workflow.basedir, "schemas/config.schema.yaml").read_text(encoding="utf-8"))


def check_schema(schema):
    """Every schema problem at once, one short line each (Snakemake's validate prints the whole schema and config
    around the first); validate then fills in the schema's defaults, and a whole-number float becomes the int the
    schema wants (2048.0)."""
    from glmtune.config_errors import config_problems, format_problems

    problems = config_problems(config, schema)
    if problems:
        raise WorkflowError(format_problems(problems))
    validate(config, schema="../schemas/config.schema.yaml")
    config.update(whole_numbers(dict(config), schema))
    return schema


def check_runs(schema):
    """Each run's train / tokenize / evaluate (the config's with the run's overrides), checked like the config."""
    from glmtune.experiments import RunError, export_run, run_settings

    try:
        runs = run_settings(config, schema)
        return runs, export_run(config, runs)
    except RunError as err:
        raise WorkflowError(str(err))


SCHEMA = load_schema()
layer_user_config(SCHEMA)
check_schema(SCHEMA)
sort_order_free(config)  # a key's place in the user's file must not re-run jobs (params compare by repr)
RUNS, EXPORT_RUN = check_runs(SCHEMA)

DATASETS = config["datasets"]
MODEL = config["model"]
ENV = "../envs/glmtune.yaml"
# The rules that load the model (tokenize, train, evaluate, export_model) need the old transformers the original
# ChatGLM3 / GLM-4 remote code was written for, when it runs (model.trust_remote_code).
MODEL_ENV = "../envs/glmtune_remote_code.yaml" if MODEL["trust_remote_code"] else ENV
# Where each run's training reads its tokenized data: `default` unless the run sets tokenize keys of its own; runs
# with equal ones share one set.
TOKENIZED = tokenized_sets(config, RUNS)
TOKENIZE_SETTINGS = {TOKENIZED[run]: settings["tokenize"] for run, settings in RUNS.items()}
EXPORT_SETTINGS = stage_section(config, "export")  # without export.run, which only chooses a run
# What each run's method writes and whether it merges: its entry in glmtune.train.method_registry.
METHOD = {run: get_method(settings["train"]["method"]) for run, settings in RUNS.items()}
FULL_RUNS = [run for run in RUNS if METHOD[run].writes == "model"]
# Runs that differ only in evaluate settings share one training: the first of them trains, the others evaluate its model.
TRAINER = shared_trainings(RUNS)
TRAINING_RUNS = [run for run in RUNS if TRAINER[run] == run]
EXPORTED_RUNS = [run for run in TRAINING_RUNS if METHOD[run].mergeable]  # all_runs_exported: one export a model


def check_config():
    """Fail before any job runs, naming the key, when the config points at things that are not there
    (glmtune.config_checks; resolves llamafactory datasets in place)."""
    from glmtune.config_checks import ConfigCheckError, check_config as check

    try:
        check(config, RUNS, gpu_from_scheduler=train_gpus_from_scheduler(),
              config_dirs=[Path(path).parent for path in workflow.overwrite_configfiles])
    except ConfigCheckError as err:
        raise WorkflowError(str(err))


def train_gpus_from_scheduler():
    """True where the train jobs are given GPUs (--set-resources train:gpu=N, or the config's resources.train.gpu as
    profiles/slurm/resources.yaml gives it; train_full's too), or this process is itself a cluster job: the machine
    that builds the job graph (a login node) then needs no GPU of its own (train.method: qlora, flex attention and
    Liger ask for one otherwise)."""
    if workflow.remote_exec:
        return True
    for rule in ("train", "train_full"):
        given = dict((workflow.resource_settings.overwrite_resources.get(rule) or {}).items()).get("gpu")
        for gpus in (getattr(given, "value", given), (config["resources"].get(rule) or {}).get("gpu")):
            if str(gpus or 0) != "0":
                return True
    return False


check_config()


def warn_of_set_resources_missing_a_rule():
    """--set-resources names rules: `train:gpu=2` does not reach train_full, which trains the full-SFT runs, as the
    config's resources.train does (rule_resources). Said while planning, not found out from a job's speed."""
    given = workflow.resource_settings.overwrite_resources
    full_runs = [run for run in TRAINING_RUNS if run in FULL_RUNS]
    siblings = (("train", "train_full", full_runs and f"the full-SFT training of {', '.join(full_runs)}"),
                ("evaluate", "evaluate_base", "the base model's evaluation"))
    for rule, sibling, work in siblings:
        if workflow.is_main_process and work and rule in given and sibling not in given:
            entries = " ".join(f"{sibling}:{key}={getattr(value, 'value', value)}" for key, value in dict(given[rule]).items())
            logger.warning(f"--set-resources names rule {rule}, which does not run {work}: that is rule {sibling}, "
                           f"which keeps its own resources; give it them too: --set-resources {entries}")


warn_of_set_resources_missing_a_rule()


def warn_of_long_warmups():
    """A warmup as long as a run's train.max_steps, said once while planning (the train stage says it again in its
    log, and alone where num_epochs gives the steps)."""
    from glmtune.config_rules import warmup_warning
    from glmtune.settings import TrainSettings

    if not workflow.is_main_process:
        return
    for run, settings in RUNS.items():
        steps = settings["train"]["max_steps"]
        if steps and (warning := warmup_warning(TrainSettings.from_config(settings["train"]), steps)):
            logger.warning(f"run {run}: {warning}")


warn_of_long_warmups()


def say_shared_trainings():
    """Runs that evaluate another run's model, said once while planning."""
    if workflow.is_main_process:
        for run, trainer in TRAINER.items():
            if trainer != run:
                logger.info(f"run {run}: the same train and tokenize settings as run {trainer}, so it evaluates run "
                            f"{trainer}'s model (trained once) with its own evaluate settings")


say_shared_trainings()
