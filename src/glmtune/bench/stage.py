"""What the benchmarks run: a config's train / evaluate sections as the workflow would hand them to the stages
(built as glmtune.config_layers builds it, then the schema's defaults), and bench-train's recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from glmtune.config_layers import fill_defaults as _defaults  # tools/device_check.sh imports it from here

REPO = Path(__file__).resolve().parents[3]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO / "config" / "config.yaml"


def config_section(name: str, configfile: str | Path | None) -> dict[str, Any]:
    """Section `name` of the config the workflow builds from `configfile` (glmtune.config_layers: over the embedded
    default only when the file names no datasets or model), checked against the schema as the workflow checks it
    (a BadRequest naming every problem), filled with the schema's defaults."""
    from glmtune.config_errors import config_problems, format_problems
    from glmtune.config_layers import layer_config
    from glmtune.inference import BadRequest
    from glmtune.repeated_keys import config_file_problems

    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    default = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    if configfile and (problems := config_file_problems(configfile)):
        raise BadRequest("\n".join(problems))
    files = [yaml.safe_load(Path(configfile).read_text(encoding="utf-8")) or {}] if configfile else []
    config = layer_config(default, files, {}, schema)
    if problems := config_problems(config, schema):  # as the workflow checks it: a typo is not silently unused
        raise BadRequest(f"{configfile}: {format_problems(problems)}")
    return _defaults(schema["properties"][name], config.get(name) or {})


# The official demos' recipe: padded micro-batches of 4, gradient checkpointing, the model's own attention and loss.
DEMO = {"packing": False, "batch_size": 4, "gradient_checkpointing": True, "attention": "auto", "loss": "plain",
        "liger_kernels": False, "pad_to_multiple_of": 1}
# The memory case: one long sample a step (cutoff_len 2048) with checkpointing and the fused / chunked loss.
LONG = {"packing": False, "batch_size": 1, "gradient_checkpointing": True, "loss": "auto"}
RECIPES = ("config", "demo", "config+liger", "config-plain-loss", "long", "long-qlora")


def train_recipes(configfile: str | Path | None, names: list[str], steps: int, logging_steps: int,
                  long_length: int = 2048) -> dict[str, tuple[dict[str, Any], int | None]]:
    """bench-train's recipes by name: `config` (the config's train section as it is), `demo`, `config+liger`
    (Liger's RMSNorm / SwiGLU kernels on), `config-plain-loss` (the model's own loss), `long` (one sample of
    `long_length` tokens a step), `long-qlora` (the same on a 4-bit NF4 base, train.method qlora); each for `steps` steps, no checkpoint saved, no validation, no trackers."""
    train = config_section("train", configfile)
    run = {"max_steps": steps, "logging_steps": logging_steps, "save_steps": 10**9, "eval_steps": None, "report_to": []}
    changes: dict[str, tuple[dict[str, Any], int | None]] = {
        "config": ({}, None), "demo": (DEMO, None), "config+liger": ({"liger_kernels": True}, None),
        "config-plain-loss": ({"loss": "plain"}, None), "long": (LONG, long_length),
        "long-qlora": ({**LONG, "method": "qlora"}, long_length)}
    unknown = [name for name in names if name not in changes]
    if unknown:
        raise ValueError(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    return {name: ({**train, **changes[name][0], **run}, changes[name][1]) for name in names}
