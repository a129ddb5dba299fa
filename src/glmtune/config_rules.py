"""Cross-key config rules that decide, before any job runs, whether a run can work: fine-tuning method
combinations, LoRA target names, the KV cache a method allows, the learning-rate warmup, the shortest usable length
limit, the model's positions.

Pure Python (no torch, peft or transformers; only train.method: qlora imports torch, to ask for a GPU), so building
the job graph stays fast. The workflow runs them once,
in config.smk's check_config; the stages trust that decision and do not run them again (code that calls a stage
without Snakemake calls these first).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from glmtune.chat_template import get_template
from glmtune.family import get_family
from glmtune.settings import EvaluateSettings, TokenizeSettings, TrainSettings
from glmtune.train.method_registry import MethodError, get_method

log = logging.getLogger(__name__)


def lora_targets(names: Iterable[str], trust_remote_code: bool, family: str) -> list[str]:
    """The family's module names for `train.lora.target_modules`, accepting the demos' original names.

    With `trust_remote_code` (model.trust_remote_code) the model has the original modules, so original names are
    used unchanged and `all` stays `all` (resolved against the loaded model by `resolve_all`). The names are the
    family's (glmtune.family.ModuleNames; the schema lists none, as families name their layers differently).
    """
    spec = get_family(family)
    modules = spec.modules
    if trust_remote_code:
        return _remote_targets(names, modules.remote)
    targets: list[str] = []
    for name in names:
        if name in modules.native:
            expanded: tuple[str, ...] = (name,)
        elif name == "all":
            expanded = modules.native
        elif name in modules.original:
            expanded = modules.original[name]
            log.info("train.lora.target_modules: %r is the original ChatGLM name; using %s", name, ", ".join(expanded))
        else:
            originals = f", or an original name ({', '.join(modules.original)})" if modules.original else ""
            raise MethodError(f"train.lora.target_modules: {name!r} matches no {spec.title} layer (model.template: "
                              f"{spec.name}); use {', '.join(modules.native)}, 'all'{originals}")
        targets += [t for t in expanded if t not in targets]
    return targets


def _remote_targets(names: Iterable[str], remote: tuple[str, ...]) -> list[str]:
    targets: list[str] = []
    for name in names:
        if name not in (*remote, "all"):
            raise MethodError(f"train.lora.target_modules: {name!r} is not an original ChatGLM module, and with "
                              f"model.trust_remote_code: true the model keeps the original modules: use "
                              f"{', '.join(remote)} or 'all'")
        if name not in targets:
            targets.append(name)
    return ["all"] if "all" in targets else targets


def check_method(settings: TrainSettings, trust_remote_code: bool, family: str, *,
                 gpu_from_scheduler: bool = False) -> None:
    """Refuse combinations known to fail mid-run, before any model is loaded: the method's own check (its entry in
    glmtune.train.method_registry), then what its entry's properties rule out. `gpu_from_scheduler`: the train job
    gets its GPUs from a cluster scheduler, so this machine needs none (see check_qlora)."""
    method = get_method(settings.method)
    if method.check is not None:
        method.check(settings, trust_remote_code, gpu_from_scheduler)
    if settings.packing and method.kv_prefix:
        raise MethodError(f"train.packing cannot be combined with train.method: {method.name}: the prefix is passed as "
                          "a KV cache, and transformers then builds no per-sample mask, so packed samples would attend "
                          "to each other; turn packing off or use lora / full")
    if settings.packing and trust_remote_code:
        raise MethodError("train.packing needs transformers' own GLM model (a per-sample mask from the restarting "
                          "position ids); the original remote code would attend across packed samples: turn packing "
                          "off, or set model.trust_remote_code: false")
    if method.lora_targets and settings.lora is not None:
        lora_targets(settings.lora.target_modules, trust_remote_code, family)
    if not gpu_from_scheduler and (settings.attention == "flex_attention" or settings.loss == "liger"
                                   or settings.liger_kernels):
        from glmtune.train.attention import speed_path  # torch: only for the choices that need a GPU

        try:  # the train job would stop on it after every data job; here it stops before any
            speed_path(settings)
        except ValueError as err:
            raise MethodError(f"{err} (on a cluster, give the train rule GPUs: --set-resources train:gpu=1, or "
                              "profiles/slurm)") from None


def check_cache(train: TrainSettings, evaluate: EvaluateSettings) -> None:
    """A static KV cache cannot hold a P-Tuning v2 prefix, which is itself fed as the KV cache (a kv_prefix method)."""
    if get_method(train.method).kv_prefix and evaluate.cache == "static":
        raise MethodError(f"evaluate.cache: static cannot be used with train.method: {train.method} (its learned "
                          "prefix is itself the KV cache, as P-Tuning v2's); set evaluate.cache: dynamic")


def check_schedule(settings: TrainSettings) -> None:
    """A warmup given twice (steps and ratio), or with the constant schedule, which has none: transformers would
    ignore it."""
    if settings.warmup_steps and settings.warmup_ratio:
        raise ValueError(f"train.warmup_steps {settings.warmup_steps} and train.warmup_ratio {settings.warmup_ratio} "
                         "both set the warmup; set one of them (the other 0)")
    if (settings.warmup_steps or settings.warmup_ratio) and settings.lr_scheduler == "constant":
        setting = "warmup_steps" if settings.warmup_steps else "warmup_ratio"
        raise ValueError(f"train.{setting} {getattr(settings, setting)} has no effect with train.lr_scheduler: "
                         f"constant (its schedule has no warmup); use lr_scheduler: constant_with_warmup, or {setting}: 0")


def warmup_steps_of(settings: TrainSettings, steps: int) -> int:
    """The warmup of a run of `steps` optimizer steps: train.warmup_steps, or train.warmup_ratio of them rounded up."""
    return settings.warmup_steps or math.ceil(settings.warmup_ratio * steps)


def warmup_warning(settings: TrainSettings, steps: int) -> str | None:
    """What to warn of when the warmup is as long as the run's `steps` (optimizer steps): the learning rate never
    reaches train.learning_rate. Legal (a smoke test of a few steps), so a warning, not a refusal."""
    warmup = warmup_steps_of(settings, steps)
    if warmup < steps or settings.lr_scheduler == "constant":
        return None
    given = (f"train.warmup_steps {warmup}" if settings.warmup_steps else
             f"train.warmup_ratio {settings.warmup_ratio} ({warmup} steps, rounded up)")
    # the warmup's rate at optimizer step s (from 0) is learning_rate * s / warmup: the last step's is the highest
    highest = settings.learning_rate * (steps - 1) / warmup
    reached = f"at most {highest:.3g}" if highest else "it stays 0: nothing is trained"
    return (f"{given} is not shorter than the run's {steps} optimizer steps: the "
            f"learning rate never reaches train.learning_rate {settings.learning_rate} ({reached}); set a warmup "
            f"below {steps} steps for a run that should train at that rate")


def min_cutoff_len(template_name: str) -> int:
    """The shortest limit that can keep an answer token: the chat prefix, the answer's role header (its role token
    and newline) and that token. A smaller one leaves no sample anything to learn, whatever the data."""
    return len(get_template(template_name).prefix) + 2 + 1


def model_positions(config: Mapping[str, Any]) -> int | None:
    """The positions a model was trained for, from its config: `max_position_embeddings` (native), or an original
    checkpoint's `seq_length`; None when it says neither."""
    value = config.get("max_position_embeddings") or config.get("seq_length")
    return value if isinstance(value, int) and value > 0 else None


def positions_problem(positions: int | None, tokenize: TokenizeSettings, max_new_tokens: int | None = None) -> str | None:
    """Why a run's lengths do not fit a model of `positions` positions, or None. Nothing fails past them (rotary
    positions go on), so a sample longer than that trains, and an evaluation generates, where the model never was:
    a refusal, not a truncation the user did not ask for. `max_new_tokens` None checks the training limit only."""
    if positions is None:
        return None
    trains = tokenize.cutoff_len or tokenize.max_output_length is not None  # not the settings an evaluation reads
    if trains and tokenize.cutoff > positions:
        return (f"{tokenize.cutoff_setting} lets a sample hold {tokenize.cutoff} tokens, but the model was trained for "
                f"{positions} positions (its config.json's max_position_embeddings): set the limit to {positions} or less")
    longest = tokenize.prompt_limit + 1 + (max_new_tokens or 0)
    if max_new_tokens is not None and longest > positions:
        return (f"an evaluation prompt of {tokenize.prompt_setting} {tokenize.prompt_limit} tokens, the assistant's role "
                f"token and evaluate.max_new_tokens {max_new_tokens} come to {longest} tokens, but the model was trained "
                f"for {positions} positions (its config.json's max_position_embeddings): lower one of them")
    return None


# train.report_to value -> the package it needs
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "swanlab": "swanlab", "mlflow": "mlflow"}


def check_report_to(report_to: Iterable[str]) -> None:
    """Fail before loading anything when a tracker's package is not installed."""
    for name in report_to:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ValueError(f"train.report_to: {name} needs its package: pip install {name} "
                             f"(or pip install -e .[{name}]), or remove {name} from train.report_to")
