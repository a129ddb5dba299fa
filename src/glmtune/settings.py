"""Typed settings the workflow hands to the stages, one frozen dataclass per config section.

No field has a default: workflow/schemas/config.schema.yaml is the only place defaults live, and Snakemake's
validate fills them in before a section reaches a stage. `from_config` takes one validated section and refuses
an unknown or a missing key by name, so a section that did not come through the schema fails at once instead of
silently running on a default written somewhere else. `to_config` gives the plain section back (lists, not
tuples): what travels as JSON to a torchrun worker and what the checkpoint fingerprint hashes.

Pure Python (no torch): the workflow builds these while building the job graph.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

S = TypeVar("S", bound="Section")


class SettingsError(ValueError):
    """A section whose keys are not the schema's: the message names the section and the keys."""


class Section:
    """from_config / to_config for the dataclasses below."""

    SECTION = ""  # the config path of the section, for messages

    @classmethod
    def from_config(cls: type[S], section: Mapping[str, Any], where: str | None = None) -> S:
        """The typed section; every key of the schema's section must be there, and no other."""
        where = where or cls.SECTION
        if not isinstance(section, Mapping):
            raise SettingsError(f"{where}: expected a mapping of settings, got {type(section).__name__}")
        names = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = [key for key in section if key not in names]
        missing = [name for name in names if name not in section]
        if unknown or missing:
            parts = [f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)} ({cls.__module__}."
                     f"{cls.__qualname__} has no field for them: a key added to the schema needs one)" if unknown else "",
                     f"missing key(s) {', '.join(f'{where}.{k}' for k in missing)} (the section must come validated "
                     "against workflow/schemas/config.schema.yaml, which fills in every default)" if missing else ""]
            raise SettingsError(f"{where}: {'; '.join(p for p in parts if p)}")
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for name in names:
            value, kind = section[name], section_type(hints[name])
            if kind is not None and value is not None:
                value = kind.from_config(value, f"{where}.{name}")
            elif isinstance(value, list):
                value = tuple(value)  # frozen all the way down
            values[name] = value
        return cls(**values)

    def to_config(self) -> dict[str, Any]:
        """The plain section again (tuples as lists), as from_config takes it."""
        def plain(value: Any) -> Any:
            if isinstance(value, Section):
                return value.to_config()
            return list(value) if isinstance(value, tuple) else value
        return {field.name: plain(getattr(self, field.name)) for field in dataclasses.fields(self)}  # type: ignore[arg-type]


def section_type(hint: Any) -> type[Section] | None:
    """The Section class a field holds (`LoraSettings`, or `LoraSettings | None` for a section a run may not read)."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    return next((kind for kind in options if isinstance(kind, type) and issubclass(kind, Section)), None)


@dataclasses.dataclass(frozen=True)
class LoraSettings(Section):
    SECTION = "train.lora"

    r: int
    alpha: float
    dropout: float
    use_rslora: bool
    use_dora: bool
    target_modules: tuple[str, ...]

    @classmethod
    def from_config(cls: type[S], section: Mapping[str, Any], where: str | None = None) -> S:
        """`target_modules` may be one string, as LLaMA-Factory's lora_target: `all`, or names joined by commas
        (the schema's pattern admits no empty name). Read here, so every stage and the run id see the list."""
        targets = section.get("target_modules") if isinstance(section, Mapping) else None
        if isinstance(targets, str):
            section = {**section, "target_modules": names_joined_by_commas(targets)}
        return super().from_config(section, where)


def names_joined_by_commas(text: str) -> list[str]:
    """One string of names as LLaMA-Factory writes a list (`q_proj,v_proj`), each once, in order."""
    return list(dict.fromkeys(name.strip() for name in text.split(",")))


@dataclasses.dataclass(frozen=True)
class PtuningSettings(Section):
    SECTION = "train.ptuning"

    num_virtual_tokens: int
    prefix_projection: bool
    encoder_hidden_size: int | None


@dataclasses.dataclass(frozen=True)
class TrainSettings(Section):
    SECTION = "train"

    method: str
    precision: str
    deepspeed: str | None
    sampling: str
    packing: bool
    pack_length: int | None  # None: not packing (glmtune.experiments.train_read)
    gradient_checkpointing: bool
    attention: str
    loss: str
    liger_kernels: bool
    pad_to_multiple_of: int
    ptuning: PtuningSettings | None  # None: a method that does not read it (glmtune.experiments.train_read)
    lora: LoraSettings | None
    max_steps: int | None  # None: num_epochs sets the steps from the data (glmtune.train.steps)
    num_epochs: float | None  # None: max_steps is set
    batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    lr_scheduler: str
    warmup_steps: int
    warmup_ratio: float
    weight_decay: float
    logging_steps: int
    save_steps: int
    eval_steps: int | None
    report_to: tuple[str, ...]
    seed: int

    @classmethod
    def from_config(cls: type[S], section: Mapping[str, Any], where: str | None = None) -> S:
        """`report_to` may be one string, as the Trainer's and LLaMA-Factory's: `none`, or tracker names joined by
        commas (the schema's pattern admits nothing else)."""
        trackers = section.get("report_to") if isinstance(section, Mapping) else None
        if isinstance(trackers, str):
            names = names_joined_by_commas(trackers)
            section = {**section, "report_to": [] if names == ["none"] else names}
        return super().from_config(section, where)


@dataclasses.dataclass(frozen=True)
class EvaluateSettings(Section):
    SECTION = "evaluate"

    max_samples: int | None
    batch_size: int | str  # rows, or "auto"
    max_new_tokens: int
    cache: str  # dynamic, static, or auto (static on a GPU unless the method is ptuning)


@dataclasses.dataclass(frozen=True)
class TokenizeSettings(Section):
    SECTION = "tokenize"

    max_input_length: int | None  # None when cutoff_len is set (glmtune.experiments.tokenize_read)
    max_output_length: int | None
    cutoff_len: int | None
    max_truncated_ratio: float

    @property
    def cutoff(self) -> int:
        """Tokens a sample keeps: cutoff_len, or the demos' input + output + 1."""
        if self.cutoff_len:
            return self.cutoff_len
        max_input, max_output = self.demo_limits()
        return max_input + max_output + 1

    def demo_limits(self) -> tuple[int, int]:
        """max_input_length and max_output_length, which a section without cutoff_len always has."""
        if self.max_input_length is None or self.max_output_length is None:
            raise SettingsError("tokenize: max_input_length and max_output_length are needed when cutoff_len is null")
        return self.max_input_length, self.max_output_length

    @property
    def cutoff_setting(self) -> str:
        """The setting(s) the limit comes from, as the config spells them."""
        return "tokenize.cutoff_len" if self.cutoff_len else "tokenize.max_input_length + max_output_length + 1"

    @property
    def prompt_limit(self) -> int:
        """Tokens an evaluation prompt's messages keep before the assistant's role header: the demos'
        max_input_length, or the one cutoff_len where that is given (LLaMA-Factory has no separate prompt limit)."""
        if self.cutoff_len:
            return self.cutoff_len
        if self.max_input_length is None:
            raise SettingsError("tokenize: max_input_length is needed when cutoff_len is null")
        return self.max_input_length

    @property
    def prompt_setting(self) -> str:
        return "tokenize.cutoff_len" if self.cutoff_len else "tokenize.max_input_length"


@dataclasses.dataclass(frozen=True)
class ExportSettings(Section):
    SECTION = "export"

    tolerance: float
    dtype: str
    export_size: float


@dataclasses.dataclass(frozen=True)
class TinySettings(Section):
    """model.tiny: the sizes of the random model (of model.template's family) built for model.source: tiny."""

    SECTION = "model.tiny"

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    initializer_range: float
    seed: int


@dataclasses.dataclass(frozen=True)
class ModelSettings(Section):
    """What the model-loading stages need of the model section: the chat template and whether the folder's own
    modeling code runs (model.trust_remote_code)."""

    SECTION = "model"

    template: str
    trust_remote_code: bool

    @classmethod
    def from_params(cls, template: str, params: Mapping[str, Any]) -> ModelSettings:
        """From a rule's params (see remote_code_param)."""
        return cls.from_config({"template": template, "trust_remote_code": remote_code_param(params)})


def remote_code_param(params: Mapping[str, Any]) -> bool:
    """model.trust_remote_code from a rule's params: common.smk's remote_code_params adds it only when true (a new
    false param would re-run results made before the key existed), so its absence is the schema's false."""
    return bool(params.get("trust_remote_code"))


# Keys of a section that steer the workflow rather than the section's stage: export.run chooses the run whose
# export is results/merged_model; the export job itself never reads it (so choosing another run re-runs nothing).
WORKFLOW_KEYS: dict[str, tuple[str, ...]] = {"export": ("run",)}


def stage_section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The validated config's section `name` as its stage takes it: without the workflow's own keys."""
    return {key: value for key, value in config[name].items() if key not in WORKFLOW_KEYS.get(name, ())}
