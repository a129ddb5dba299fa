"""The fine-tuning methods, one entry each: what the config rules, the train stage, the workflow and the export ask.

Pure data and pure checks (no torch, peft or transformers): the workflow reads it while building the job graph. The
wrapping code is named as "module:function" and imported only when a model is wrapped (Method.wrapper).

To add a method: one `register(Method(...))` (here for a built-in one, plus its name in the schema's train.method
enum, which tests/train/test_method_registry.py checks) and its tests.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from glmtune.model.loading import QLORA_INSTALL
from glmtune.settings import TrainSettings


class MethodError(ValueError):
    """A method setting that cannot work; the message names the key and what to do."""


# wrap(model, settings, trust_remote_code, family) -> the model to train
Wrap = Callable[[Any, Any, bool, str], Any]
# check(settings, trust_remote_code, gpu_from_scheduler): raise MethodError for what cannot work
Check = Callable[[Any, bool, bool], None]


@dataclasses.dataclass(frozen=True)
class Method:
    """One fine-tuning method.

    writes: "adapter" (a peft folder, results/runs/<run>/adapter) or "model" (a whole model, results/runs/<run>/model).
    peft_type: the adapter_config.json peft_type its adapters have (None when it writes a whole model): how a trained
    folder is recognised (method_of_folder). mergeable: the export can merge it (a LoRA adapter, or re-save a whole
    model); otherwise `cannot_merge` says why. four_bit: its base is loaded in 4-bit NF4. reads: the method
    sub-sections of train it reads ("lora": target_modules checked before the run; "ptuning"); another method's are
    null in its runs' settings (glmtune.experiments.train_read). kv_prefix: its learned prefix reaches the model as
    the KV cache (no static cache, no packing, the loss takes the model's own path). check: its own refusals, before any job.
    wrap: wraps the loaded model for training, a callable or "module:function"; None trains every weight as it is.
    """

    name: str
    title: str
    writes: Literal["adapter", "model"]
    peft_type: str | None
    mergeable: bool
    wrap: Wrap | str | None
    four_bit: bool = False
    reads: tuple[str, ...] = ()
    kv_prefix: bool = False
    check: Check | None = None
    cannot_merge: str = ""

    @property
    def lora_targets(self) -> bool:
        return "lora" in self.reads

    def wrapper(self) -> Wrap | None:
        """The wrap function, imported now when named as "module:function"."""
        if isinstance(self.wrap, str):
            module, function = self.wrap.split(":")
            return getattr(importlib.import_module(module), function)
        return self.wrap


METHODS: dict[str, Method] = {}
# The adapters the export knows how to merge (and a whole model, re-saved): another kind, marked mergeable, would train
# and evaluate, then fail at the very end of the job inside the LoRA arithmetic.
MERGED_PEFT_TYPES: tuple[str | None, ...] = ("LORA", None)


def register(method: Method) -> Method:
    """Add a method; a name already taken is refused (a second entry would silently replace the first)."""
    if method.name in METHODS:
        raise ValueError(f"train.method: a method named {method.name!r} is already registered")
    if (method.writes == "model") != (method.peft_type is None):
        raise ValueError(f"method {method.name!r}: an adapter has a peft_type, a whole model none")
    if not method.mergeable and not method.cannot_merge:
        raise ValueError(f"method {method.name!r}: say why it cannot be merged (cannot_merge)")
    if method.mergeable and method.peft_type not in MERGED_PEFT_TYPES:
        raise ValueError(f"method {method.name!r}: the export merges LoRA adapters (and re-saves whole models) only "
                         f"(glmtune.export.lora_math), not {method.peft_type}: register it mergeable=False with a "
                         "cannot_merge, or teach the export its merge first")
    METHODS[method.name] = method
    return method


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> Method:
    """The entry of train.method `name`, or a MethodError naming the known ones."""
    if name not in METHODS:
        raise MethodError(f"train.method: unknown method {name!r}; use {', '.join(METHODS)}")
    return METHODS[name]


def method_label(train: dict[str, Any]) -> str:
    """A run's method as the comparison table shows it: the method, and the LoRA variants that change what it
    trains (a DoRA run had read as plain lora beside one)."""
    method = train["method"]
    variants = [name for key, name in (("use_rslora", "rsLoRA"), ("use_dora", "DoRA"))
                if "lora" in get_method(method).reads and (train.get("lora") or {}).get(key)]
    return f"{method} ({', '.join(variants)})" if variants else method


def method_of_folder(trained_dir: str | Path) -> Method:
    """The first registered method whose training writes a folder like this one (lora and qlora write the same LoRA
    adapter, so such a folder answers lora): a whole model without adapter_config.json, else by its peft_type."""
    config = Path(trained_dir) / "adapter_config.json"
    peft_type = json.loads(config.read_text(encoding="utf-8")).get("peft_type") if config.is_file() else None
    for method in METHODS.values():
        if method.peft_type == peft_type:
            return method
    raise MethodError(f"{trained_dir}: no registered method writes a {peft_type or 'whole model'} folder")


def check_ptuning(settings: TrainSettings, trust_remote_code: bool, gpu_from_scheduler: bool = False) -> None:
    """P-Tuning v2 (peft prefix tuning): no gradient checkpointing, no remote code."""
    if settings.gradient_checkpointing:
        raise MethodError("train.gradient_checkpointing cannot be combined with train.method: ptuning "
                          "(peft prefix tuning breaks on transformers 5 with checkpointing: tensor size mismatch); "
                          "turn gradient_checkpointing off or use lora")
    if trust_remote_code:
        raise MethodError("train.method: ptuning is not supported with model.trust_remote_code: true (peft prefix tuning "
                          "feeds a transformers KV cache, which the original ChatGLM code keeps in its own layout; "
                          "not tested here); use lora or full, or model.trust_remote_code: false")


def check_qlora(settings: TrainSettings, trust_remote_code: bool, gpu_from_scheduler: bool = False) -> None:
    """QLoRA: a 4-bit NF4 base (bitsandbytes) computing in bf16, LoRA on top. It needs bitsandbytes here, and a
    CUDA GPU with bf16 here unless the train job gets its GPUs from a cluster scheduler (`gpu_from_scheduler`).
    torch is imported only for this method, so building the job graph of other methods stays fast."""
    if trust_remote_code:
        raise MethodError("train.method: qlora is not supported with model.trust_remote_code: true (the original "
                          "ChatGLM code runs under an old transformers without a tested 4-bit path); use lora, or "
                          "model.trust_remote_code: false")
    if settings.deepspeed:
        raise MethodError("train.deepspeed cannot be combined with train.method: qlora (DeepSpeed cannot shard or "
                          "offload a bitsandbytes 4-bit base here); remove train.deepspeed")
    if settings.precision in ("fp16", "fp32"):
        raise MethodError(f"train.precision: {settings.precision} cannot be combined with train.method: qlora (the "
                          f"4-bit base computes in bf16); set train.precision: auto or bf16")
    if not gpu_from_scheduler:
        import torch

        if not torch.cuda.is_available():
            raise MethodError("train.method: qlora needs a CUDA GPU (bitsandbytes 4-bit), and this machine has none; "
                              "use train.method: lora, or run on a GPU machine (on a cluster, give the train rule "
                              "GPUs: --set-resources train:gpu=1, or profiles/slurm)")
        if not torch.cuda.is_bf16_supported():
            raise MethodError("train.method: qlora computes in bf16, which this GPU lacks (bf16 needs compute "
                              "capability 8.0 or newer); use train.method: lora")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MethodError(f"train.method: qlora needs bitsandbytes, which is not installed: {QLORA_INSTALL}")


TRAIN = "glmtune.train.methods"

register(Method("lora", "LoRA", "adapter", "LORA", mergeable=True, wrap=f"{TRAIN}:wrap_lora", reads=("lora",)))
register(Method("qlora", "QLoRA (LoRA on a 4-bit NF4 base)", "adapter", "LORA", mergeable=True, wrap=f"{TRAIN}:wrap_qlora",
                four_bit=True, reads=("lora",), check=check_qlora))
register(Method("ptuning", "P-Tuning v2", "adapter", "PREFIX_TUNING", mergeable=False,
                wrap=f"{TRAIN}:wrap_prefix", reads=("ptuning",), kv_prefix=True, check=check_ptuning,
                cannot_merge="learns prefixes, not weight deltas (its prefixes are extra attention inputs)"))
register(Method("full", "full SFT", "model", None, mergeable=True, wrap=None))
