"""The one place glmtune loads a model folder: models, tokenizers, PEFT adapters, generation configs.

Every load states `trust_remote_code` itself: the user's model.trust_remote_code (workflow) or
`glmtune infer --trust-remote-code`. A folder never grants it (glmtune.model.remote_code records the opt-in
beside a prepared folder, but a model load without the flag refuses such a folder with check_remote_code).

One dtype policy, `resolve_dtype(setting, device)`, which each stage calls with its own setting:

    setting      CUDA device                        any other device   used by
    "auto"       bfloat16 if the GPU has it, else   float32            evaluation and inference (always);
                 float32                                               training, train.precision: auto
    "bf16"       bfloat16                           float32            training, train.precision: bf16
    "fp16"       float32 (fp16 mixed precision      float32            training, train.precision: fp16
                 keeps fp32 master weights)
    "fp32"       float32                            float32            training, train.precision: fp32
    "float32", "bfloat16", "float16"                that dtype         export: the merge loads its base in
                 (exactly, on any device)                              float32, a fully trained model in export.dtype
    "saved"      the dtype the folder's config records                 export: the reload that checks the saved folder

A CUDA device is "cuda" or "cuda:N" (each rank of a torchrun evaluation loads for its own GPU, in the same dtype
as one process). Training's auto on a GPU without bf16 trains in fp16 mixed precision, whose weights load as fp32.

Nothing here imports torch, transformers or peft at import time: glmtune.data loads its tokenizer through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

# The settings of the table above that name one torch dtype whatever the device.
_EXACT = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "float16": "float16", "fp16": "float32"}
# The install line a QLoRA run without bitsandbytes is given (here and in train.method_registry.check_qlora).
QLORA_INSTALL = 'pip install -e ".[qlora]" (bitsandbytes==0.50.2, as constraints.txt pins)'
DTYPE_SETTINGS = ("auto", "bf16", "fp16", "fp32", "float32", "bfloat16", "float16", "saved")


def default_device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(setting: str, device: str | None = None) -> torch.dtype | str:
    """The dtype a model loads in for `setting` on `device` (default: default_device()); see the module docstring.

    Returns a torch dtype, or the string "auto" for "saved" (transformers then reads the folder's own dtype).
    """
    import torch

    if setting == "saved":
        return "auto"
    if setting in _EXACT:
        return getattr(torch, _EXACT[setting])
    if setting not in ("auto", "bf16"):
        raise ValueError(f"dtype setting {setting!r} is none of {', '.join(DTYPE_SETTINGS)}")
    on_cuda = torch.device(device or default_device()).type == "cuda"
    if on_cuda and (setting == "bf16" or torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float32


def _kwargs(dtype: torch.dtype | str | None, trust_remote_code: bool) -> dict[str, Any]:
    from glmtune.model.compat import load_kwargs

    return load_kwargs(dtype, trust_remote_code)


def load_tokenizer(folder: str | Path, *, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """The tokenizer saved in `folder`. glmtune's tokenizers are never remote code, but with `trust_remote_code`
    transformers 5 reads a remote-code model's configuration beside them."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), **_kwargs(None, trust_remote_code))


def load_model(folder: str | Path, *, dtype: str, trust_remote_code: bool, device: str | None = None,
               four_bit: bool = False) -> PreTrainedModel:
    """The causal LM in `folder`, on the CPU, in resolve_dtype(dtype, device). `device` is where it will run (the
    caller or the Trainer moves it there): it only picks the dtype. A folder that loads only by running its own
    code stops here with the fix (check_remote_code) unless `trust_remote_code`.

    `four_bit` (train.method: qlora): the base's linear layers in 4-bit NF4 with double quantisation, computing in
    bf16 (bitsandbytes, as the QLoRA paper), the other weights in bf16, whatever `dtype` says; quantised while loaded
    onto `device` (default: this process's GPU, LOCAL_RANK under torchrun), where the model then stays.
    """
    from transformers import AutoModelForCausalLM

    from glmtune.model.remote_code import check_remote_code

    check_remote_code(folder, trust_remote_code)
    if four_bit:
        import torch

        return AutoModelForCausalLM.from_pretrained(str(folder), **four_bit_kwargs(device),
                                                    **_kwargs(torch.bfloat16, trust_remote_code))
    return AutoModelForCausalLM.from_pretrained(str(folder), **_kwargs(resolve_dtype(dtype, device), trust_remote_code))


def four_bit_copy(model: PreTrainedModel, device: str | None = None) -> PreTrainedModel:
    """The model's weights loaded again as load_model(four_bit=True) loads a folder's (transformers' own 4-bit
    loading, the same settings), handed over as a state dict instead of read from files: bench-train's random base
    for QLoRA. The copy names the model's folder as its own (what an adapter records as its base)."""
    import torch

    copy = type(model).from_pretrained(None, config=model.config, state_dict=model.state_dict(), dtype=torch.bfloat16,
                                       **four_bit_kwargs(device))
    copy.name_or_path = copy.config.name_or_path = model.name_or_path
    return copy


def four_bit_kwargs(device: str | None = None) -> dict[str, Any]:
    """from_pretrained arguments of a 4-bit NF4 base (see load_model). The workflow checked for bitsandbytes and a GPU
    before the run (glmtune.train.method_registry.check_qlora); a job in another environment still gets the install line."""
    import importlib.util
    import os

    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModuleNotFoundError(f"train.method: qlora needs bitsandbytes, which is not installed: {QLORA_INSTALL}")
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    # device_map: bitsandbytes quantises each weight as it lands on the device; the Trainer never moves it again.
    return {"quantization_config": config, "device_map": {"": device}}


def load_adapter(model: PreTrainedModel, adapter_dir: str | Path, base_dir: str | Path | None = None) -> Any:
    """`model` with the PEFT adapter (LoRA or P-Tuning v2) of `adapter_dir` on top (a PeftModel), once the base
    folder (`base_dir`, default the folder `model` was loaded from) is the one the adapter was trained on
    (glmtune.model.base_identity.check_base: a BaseModelMismatch names both)."""
    from glmtune.model.base_identity import check_base

    check_base(adapter_dir, base_dir or model.name_or_path)
    return _put_adapter(model, adapter_dir)


def _put_adapter(model: PreTrainedModel, adapter_dir: str | Path) -> Any:
    from peft import PeftModel

    from glmtune.model.compat import peft_wrapping

    with peft_wrapping():
        return PeftModel.from_pretrained(model, str(adapter_dir))


def load_config(folder: str | Path, *, trust_remote_code: bool = False) -> Any:
    """The config.json of `folder` (transformers' AutoConfig)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)


def load_generation_config(folder: str | Path) -> GenerationConfig:
    """The generation_config.json of `folder`."""
    from transformers import GenerationConfig

    return GenerationConfig.from_pretrained(str(folder))


def is_adapter(folder: str | Path) -> bool:
    """True for a PEFT adapter folder (adapter_config.json), false for a whole model."""
    return (Path(folder) / "adapter_config.json").is_file()


def resolve_base(adapter_dir: str | Path, base_override: str | Path | None) -> str:
    """The base model of an adapter folder: the override if given, else adapter_config.json's path."""
    if base_override:
        return str(base_override)
    adapter_dir = Path(adapter_dir)
    base = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    if not Path(base).exists():
        raise FileNotFoundError(
            f"{adapter_dir}: the base model recorded in adapter_config.json ({base}) does not exist here; "
            f"pass the base model's folder with --base-model"
        )
    return base


def load_trained(folder: str | Path, base: str | Path | None = None, *, trust_remote_code: bool,
                 device: str | None = None, dtype: str = "auto") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A trained folder ready to generate: a merged/full model, or an adapter on top of its base model (`base`
    overrides the one adapter_config.json records; either must be the base it was trained on), on `device` (default_device()) in eval mode, with its
    tokenizer (the adapter folder's own, else the base's) padding on the left.
    """
    folder = Path(folder)
    device = device or default_device()
    if is_adapter(folder):
        from glmtune.model.base_identity import check_base

        base_dir = resolve_base(folder, base)
        check_base(folder, base_dir)  # before loading the base (minutes for a 9B model), not after
        model = _put_adapter(load_model(base_dir, dtype=dtype, trust_remote_code=trust_remote_code, device=device), folder)
        tokenizer_dir = folder if (folder / "tokenizer_config.json").is_file() else Path(base_dir)
    else:
        model = load_model(folder, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
        tokenizer_dir = folder
    tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    return model.to(device).eval(), tokenizer
