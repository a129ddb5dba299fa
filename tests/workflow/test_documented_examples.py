"""Every snakemake and glmtune command the README and the shipped files' comments show parses as meant, by the
program's own argument parser. Snakemake's `--configfile`, `--config`, `--set-resources` and `--sdm` take every word
after them, so a target written after one of them is read as a config file (FileNotFoundError), a setting or a
deployment method, and the job never starts; a glmtune command with a renamed or missing argument stops at once.
And every YAML example of the README is a config the workflow takes, layered as the README says."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from snakemake.cli import get_argument_parser
from snakemake.utils import validate

from glmtune.cli import build_parser
from glmtune.config_errors import config_problems
from glmtune.config_layers import OWN_JOB_SECTIONS, layer_config
from glmtune.experiments import run_settings

from conftest import REPO

DOCUMENTED = ["README.md", *(str(p.relative_to(REPO)) for folder in ("config", "profiles", "workflow")
                             for p in sorted((REPO / folder).rglob("*")) if p.suffix in (".yaml", ".smk", "") and p.is_file())]
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


COMMAND = re.compile(r"^(?:time )?((?:snakemake|glmtune) .*)$")


def command_lines(text: str, markdown: bool) -> list[str]:
    """The commands: in Markdown, the lines of code blocks (joined at a trailing backslash) and the inline code spans
    (which may wrap) that start with `snakemake` or `glmtune`, but not a subcommand's name (`glmtune infer`); elsewhere,
    `#` comment lines indented as an example that are such a command. Cut at a shell separator or at a run of
    spaces before a remark."""
    if markdown:
        parts = re.split(r"^```.*$", text, flags=re.M)
        lines = [line.strip() for block in parts[1::2] for line in re.sub(r"\s*\\\n\s*", " ", block).splitlines()]
        spans = [" ".join(span.split()) for prose in parts[0::2] for span in re.findall(r"`([^`]+)`", prose)]
        lines += [span for span in spans if len(span.split()) > 2 or span.startswith("snakemake")]  # not a name
    else:
        lines = [m.group(1).strip() for m in re.finditer(r"^\s*#\s{2,}(.*)$", text, flags=re.M)]
    found = []
    for line in lines:
        if match := COMMAND.match(line):
            found.append(re.split(r"\s(?:&&|\|\||;|\|)\s|\s{2,}", match.group(1))[0])
    return found


def documented_commands() -> list[tuple[str, str]]:
    commands = []
    for name in DOCUMENTED:
        text = (REPO / name).read_text(encoding="utf-8")
        commands += [(name, line) for line in command_lines(text, name.endswith(".md")) if " ... " not in f" {line} "]
    return commands


COMMANDS = documented_commands()
SNAKEMAKE = [(where, c) for where, c in COMMANDS if c.startswith("snakemake ")]
GLMTUNE = [(where, c) for where, c in COMMANDS if c.startswith("glmtune ")]


def ids(commands: list[tuple[str, str]]) -> list[str]:
    return [f"{where}:{command[:60]}" for where, command in commands]


def test_the_readme_and_the_profiles_show_commands() -> None:
    files = {name for name, _ in SNAKEMAKE}
    assert {"README.md", "profiles/slurm/config.yaml", "profiles/slurm/resources.yaml"} <= files, files
    assert sum(1 for _, line in SNAKEMAKE if "--configfile" in line) >= 10
    assert {c.split()[1] for _, c in GLMTUNE} == {"infer", "bench-train", "bench-eval", "bench-export"}


def parsed(parse, where: str, command: str):
    try:
        return parse([w.strip("[]") for w in shlex.split(command, comments=True)[1:]])  # [my.yaml]: optional
    except SystemExit:  # argparse printed why: an option given a target as its value, an unknown choice
        pytest.fail(f"{where}: `{command}` does not parse (the message above)")


@pytest.mark.parametrize(("where", "command"), SNAKEMAKE, ids=ids(SNAKEMAKE))
def test_a_documented_snakemake_command_gives_its_targets_and_files_where_meant(where: str, command: str) -> None:
    args, unknown = parsed(get_argument_parser().parse_known_args, where, command)
    # Options only a plugin defines (--slurm-...) are unknown here; nothing else may be.
    assert all(w.startswith("--slurm") for w in unknown if w.startswith("-")), (where, command, unknown)
    for path in args.configfile or []:
        assert str(path).endswith(CONFIG_SUFFIXES), f"{where}: `{command}` reads {path} as a config file"
    for item in [*(args.config or []), *(args.set_resources or []), *(args.default_resources or [])]:
        assert "=" in item, f"{where}: `{command}` reads {item} as a setting"
    for target in args.targets or []:
        assert not target.endswith(CONFIG_SUFFIXES) and "=" not in target, f"{where}: `{command}`: target {target}"


@pytest.mark.parametrize(("where", "command"), GLMTUNE, ids=ids(GLMTUNE))
def test_a_documented_glmtune_command_parses(where: str, command: str) -> None:
    assert callable(parsed(build_parser().parse_args, where, command).func)


README_YAML = re.findall(r"^```yaml\n(.*?)^```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S | re.M)


def test_every_yaml_example_of_the_readme_is_a_config_the_workflow_takes() -> None:
    """The first is the offline job; an example naming datasets or model but not both (a LLaMA-Factory entry, a
    remote-code model) is a file given after it; one naming neither (runs, grid) a preset over the demo."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
    demo = yaml.safe_load((REPO / "config/config.yaml").read_text(encoding="utf-8"))
    examples = [yaml.safe_load(text) for text in README_YAML]
    assert len(examples) >= 5 and {"datasets", "model"} <= set(examples[0])
    for text, example in zip(README_YAML, examples, strict=True):
        named = set(OWN_JOB_SECTIONS) & set(example)
        files = [examples[0], example] if named and named != set(OWN_JOB_SECTIONS) else [example]
        config = layer_config(demo, files, {}, schema)
        assert config_problems(config, schema) == [], text
        validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))  # as the workflow: fills in the defaults
        assert run_settings(config, schema), text
