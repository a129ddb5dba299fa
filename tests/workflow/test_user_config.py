"""What settings the jobs get from a user's own --configfile, presets and --config values, read through Snakemake:
a rule added to a temporary copy of the workflow writes the layered config and every run's settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from glmtune.data.synthetic import write_advertisegen
from glmtune.experiments import tokenize_read, train_read

from conftest import REPO
from helpers.model_folders import sharded
from helpers.settings import section as section_defaults
from test_workflow import copy_workflow, snakemake

pytestmark = pytest.mark.workflow
READ = {"train": train_read, "tokenize": tokenize_read}  # the settings a run reads; the others are null

DUMP_RULE = '''

rule dump_config:
    output:
        "settings.json",
    run:
        import json

        Path(output[0]).write_text(json.dumps({"config": config, "runs": RUNS}))
'''
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text(encoding="utf-8"))
LORA_PRESET = yaml.safe_load((REPO / "config/presets/lora.yaml").read_text(encoding="utf-8"))


def default(*path: str):
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    return node["default"]


def settings(workdir: Path, *args: str) -> dict:
    """The layered config and RUNS, as the workflow built them for `args`."""
    (workdir / "settings.json").unlink(missing_ok=True)
    snakemake(workdir, "settings.json", *args)
    return json.loads((workdir / "settings.json").read_text(encoding="utf-8"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the workflow with the README's offline layout (local train/dev files, a local model folder)."""
    workdir = copy_workflow(tmp_path)
    with open(workdir / "workflow" / "Snakefile", "a", encoding="utf-8") as snakefile:
        snakefile.write(DUMP_RULE)
    write_advertisegen(workdir / "data", 20, 4, 1)
    sharded(workdir / "models/glm-4-9b-chat-hf", shards=1)
    (workdir / "offline.yaml").write_text(yaml.safe_dump({
        "datasets": {"advertisegen": {"source": "path", "format": "advertisegen",
                                      "files": {"train": "data/train.json", "test": "data/dev.json"}}},
        "model": {"name": "glm-4-9b-chat-hf", "source": "path", "path": "models/glm-4-9b-chat-hf", "template": "glm4"},
    }))
    return workdir


def test_a_users_own_config_takes_the_schema_defaults_not_the_demo_jobs(workdir: Path) -> None:
    """The README's offline snippet names only datasets and model: every other key is the schema's default."""
    job = settings(workdir, "--configfile", "offline.yaml")
    train, tokenize, evaluate = (job["runs"]["main"][section] for section in ("train", "tokenize", "evaluate"))
    for key in ("learning_rate", "max_steps", "batch_size", "warmup_steps", "save_steps", "eval_steps"):
        assert train[key] == default("train", key) != DEMO["train"][key], key
    assert train["lora"]["r"] == default("train", "lora", "r") != DEMO["train"]["lora"]["r"]
    assert train["lora"]["dropout"] == default("train", "lora", "dropout")
    for key in ("max_input_length", "max_output_length"):
        assert tokenize[key] == default("tokenize", key) != DEMO["tokenize"][key], key
    assert evaluate["max_samples"] == default("evaluate", "max_samples") != DEMO["evaluate"]["max_samples"]
    assert list(job["config"]["datasets"]) == ["advertisegen"] and job["config"]["model"]["source"] == "path"


@pytest.mark.parametrize("own", [False, True], ids=["over the demo", "over a user's config"])
def test_a_preset_layers_over_the_demo_and_over_a_users_config(workdir: Path, own: bool) -> None:
    files = ("offline.yaml",) if own else ()
    train = settings(workdir, "--configfile", *files, "config/presets/lora.yaml")["runs"]["main"]["train"]
    assert train["method"] == LORA_PRESET["train"]["method"] == "lora"
    # The preset names the method only: the LoRA settings are the demo's over it, the schema's over a user's config.
    assert train["lora"]["r"] == (default("train", "lora", "r") if own else DEMO["train"]["lora"]["r"])
    under = (lambda key: default("train", key)) if own else (lambda key: DEMO["train"][key])
    assert [train[key] for key in ("max_steps", "learning_rate")] == [under("max_steps"), under("learning_rate")]


def test_the_shipped_real_data_config_gets_what_it_writes_and_the_schema_for_the_rest(workdir: Path) -> None:
    written = yaml.safe_load((REPO / "config/advertisegen_glm4.yaml").read_text(encoding="utf-8"))
    job = settings(workdir, "--configfile", "config/advertisegen_glm4.yaml")
    run = job["runs"]["main"]
    for section in ("train", "tokenize", "evaluate"):
        for key, value in written.get(section, {}).items():
            if isinstance(value, dict):
                assert {k: run[section][key][k] for k in value} == value, f"{section}.{key}"
            else:
                assert run[section][key] == value, f"{section}.{key}"
        schema_defaults = section_defaults(section, {})
        read = READ.get(section, dict)(section_defaults(section, written.get(section, {})))  # null: not read by the run
        for key in set(schema_defaults) - set(written.get(section, {})):
            assert run[section][key] == (schema_defaults[key] if read[key] is not None else None), f"{section}.{key}"
    assert list(job["config"]["datasets"]) == list(written["datasets"])


def test_numbers_and_booleans_in_nested_config_values_are_typed(workdir: Path) -> None:
    """Snakemake hands a nested --config value over with every leaf a string."""
    job = settings(workdir, "--config", 'train={"max_steps": 5, "packing": true, "learning_rate": 1e-4}',
                   "evaluate={max_new_tokens: 64, batch_size: auto}", "model={tiny: {seed: 3}}",
                   "runs={a: {}, b: {train: {lora: {r: 4, dropout: 0.5}}}}", "grid={train.warmup_steps: [0, 2]}")
    runs = job["runs"]
    assert {run["train"]["max_steps"] for run in runs.values()} == {5} and all(run["train"]["packing"] is True for run in runs.values())
    assert {run["train"]["learning_rate"] for run in runs.values()} == {1e-4}
    assert {(run["evaluate"]["max_new_tokens"], run["evaluate"]["batch_size"]) for run in runs.values()} == {(64, "auto")}
    assert job["config"]["model"]["tiny"]["seed"] == 3
    demo_r, demo_warmup = DEMO["train"]["lora"]["r"], DEMO["train"]["warmup_steps"]
    assert {name: (run["train"]["lora"]["r"], run["train"]["lora"]["dropout"], run["train"]["warmup_steps"])
            for name, run in runs.items()} == {"a": (demo_r, 0.0, demo_warmup), "b": (4, 0.5, demo_warmup),
                                               "warmup_steps0": (demo_r, 0.0, 0), "warmup_steps2": (demo_r, 0.0, 2)}


def test_whole_number_floats_in_a_config_file_reach_the_jobs_as_integers(workdir: Path) -> None:
    """`cutoff_len: 2048.0` passed the schema (an integer, to JSON Schema) and failed the tokenize job on a float."""
    (workdir / "floats.yaml").write_text("tokenize: {cutoff_len: 2048.0}\ntrain: {batch_size: 8.0, num_epochs: 2.0}\n"
                                         "runs: {a: {evaluate: {max_new_tokens: 1.0e+2}}}\n", encoding="utf-8")
    job = settings(workdir, "--configfile", "offline.yaml", "floats.yaml")
    run = job["runs"]["a"]
    assert (run["tokenize"]["cutoff_len"], run["train"]["batch_size"], run["evaluate"]["max_new_tokens"]) == (2048, 8, 100)
    assert [type(value) for value in (run["tokenize"]["cutoff_len"], run["train"]["batch_size"],
                                      run["evaluate"]["max_new_tokens"], run["train"]["num_epochs"])] == [int, int, int, float]


def test_a_grid_over_a_users_config_that_repeats_its_own_run_stops_and_runs_empty_keeps_the_grid_alone(
        workdir: Path) -> None:
    """The schema's lora.r is 8, so the grid's r8 would train the default run main a second time."""
    (workdir / "grid.yaml").write_text("grid: {train.lora.r: [4, 8]}\n")
    result = snakemake(workdir, "-n", "settings.json", "--configfile", "offline.yaml", "grid.yaml", check=False)
    assert result.returncode != 0 and "runs main and r8 have the same train, tokenize and evaluate settings" in result.stdout + result.stderr
    (workdir / "grid.yaml").write_text("runs: {}\ngrid: {train.lora.r: [4, 8]}\n")
    runs = settings(workdir, "--configfile", "offline.yaml", "grid.yaml")["runs"]
    assert {name: run["train"]["lora"]["r"] for name, run in runs.items()} == {"r4": 4, "r8": 8}


@pytest.mark.parametrize(("value", "message"), [
    ("train={max_steps: five}", "train.max_steps: 'five' should be an integer"),
    ("evaluate={cache: statc}", "evaluate.cache: 'statc' is not allowed; use one of auto, dynamic, static (did you mean static?)"),
    ("train={lora: {target_modules: 'q_proj,,v_proj'}}", "train.lora.target_modules: 'q_proj,,v_proj' is not `all` or"),
    ("train={lora: {target_modules: 'q_proj,qkv'}}", "train.lora.target_modules: 'qkv' matches no GLM-4 layer"),
])
def test_a_bad_config_value_is_one_line_naming_the_key(workdir: Path, value: str, message: str) -> None:
    result = snakemake(workdir, "-n", "settings.json", "--config", value, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and message in text and "Traceback" not in text


def test_a_limit_that_cuts_most_answers_stops_the_tokenize_job_naming_the_settings(workdir: Path) -> None:
    """The embedded default's samples are 38 tokens at the median: a cutoff_len of 30 cuts most answers."""
    target = "results/tokenized/default/stats.json"
    result = snakemake(workdir, target, "--config", "tokenize={cutoff_len: 30}", check=False)
    log = (workdir / "logs/tokenize/default.log").read_text(encoding="utf-8")
    assert result.returncode != 0 and not (workdir / target).exists()
    assert re.search(r"train: \d+ of \d+ samples lost answer tokens to truncation at 30 tokens \(tokenize.cutoff_len\)", log)
    assert re.search(r"more than tokenize.max_truncated_ratio 0.5; 95 % stay whole with tokenize.max_input_length: "
                     r"\d+ and max_output_length: \d+ \(or cutoff_len: \d+\)", log)
    snakemake(workdir, target, "--config", "tokenize={cutoff_len: 30, max_truncated_ratio: 1}")
    train = json.loads((workdir / target).read_text(encoding="utf-8"))["splits"]["train"]
    assert train["answer_truncated"] + train["dropped_no_trained_tokens"] > train["samples_in"] / 2


def test_a_config_kept_elsewhere_is_refused_saying_where_and_runs_with_paths_from_home(
        workdir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's offline layout written from the config's own folder (../project/my.yaml naming data/train.json):
    relative paths are read from the workflow folder, and the stop says so and where the files were found. Written
    from the home folder (~/data/train.json), the same files are planned."""
    project = tmp_path_factory.mktemp("project")
    (project / "data").mkdir()
    for name in ("train.json", "dev.json"):
        (project / "data" / name).write_bytes((workdir / "data" / name).read_bytes())
    mine = yaml.safe_load((workdir / "offline.yaml").read_text(encoding="utf-8"))
    (project / "my.yaml").write_text(yaml.safe_dump(mine), encoding="utf-8")
    (workdir / "data").rename(workdir / "elsewhere")
    result = snakemake(workdir, "-n", "results/merged_model", "--configfile", str(project / "my.yaml"), check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in text
    assert (f"datasets.advertisegen.files.test: no such file: data/dev.json (a relative path is read from the "
            f"working directory, {workdir.resolve()}; data/dev.json is there from {project}, the folder of a "
            "--configfile") in " ".join(text.split())

    monkeypatch.setenv("HOME", str(project))  # Snakemake runs with this environment
    mine["datasets"]["advertisegen"]["files"] = {"train": "~/data/train.json", "test": "~/data/dev.json"}
    (project / "my.yaml").write_text(yaml.safe_dump(mine), encoding="utf-8")
    result = snakemake(workdir, "-n", "results/merged_model", "--configfile", str(project / "my.yaml"))
    assert f"{project}/data/train.json" in result.stdout + result.stderr  # the convert job's input


def test_a_warmup_as_long_as_the_run_is_warned_of_while_planning(workdir: Path) -> None:
    """The embedded default warms up for 10 steps: a 5-step run of it never reaches its learning rate."""
    short = snakemake(workdir, "-n", "settings.json", "--config", "train={max_steps: 5}")
    assert ("run main: train.warmup_steps 10 is not shorter than the run's 5 optimizer steps"
            in short.stdout + short.stderr)
    whole = snakemake(workdir, "-n", "settings.json")
    assert "warmup_steps" not in whole.stdout + whole.stderr


def test_a_config_file_writing_a_section_twice_stops_before_any_job_naming_file_and_lines(workdir: Path) -> None:
    """A second `train:` pasted below the first: YAML keeps only the second, and the first's settings were lost."""
    text = (workdir / "offline.yaml").read_text(encoding="utf-8")
    (workdir / "twice.yaml").write_text(text + "train:\n  max_steps: 5\nevaluate: {max_new_tokens: 8}\n"
                                        "train:\n  method: ptuning\n", encoding="utf-8")
    result = snakemake(workdir, "-n", "settings.json", "--configfile", "twice.yaml", check=False)
    lines = len(text.splitlines())
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    assert f"twice.yaml: train is written twice (lines {lines + 1}, {lines + 4}): YAML keeps only the last" in result.stdout + result.stderr
