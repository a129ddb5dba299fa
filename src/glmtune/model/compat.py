"""The transformers differences met when loading a model or wrapping it with peft, in one place.

The default path runs on transformers 5. With `model.trust_remote_code: true` the same stages may run in
workflow/envs/glmtune_remote_code.yaml (transformers 4.40.2), because the original ChatGLM3 / GLM-4 modeling
code breaks on newer releases; these helpers give each release the argument names it knows. load_kwargs is for
glmtune.model.loading alone (the one module that calls from_pretrained). The TrainingArguments names are in
glmtune.train.compat.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import transformers
from packaging.version import Version

if TYPE_CHECKING:
    import torch

# `from_pretrained(torch_dtype=)` became `dtype=` in 4.56; older releases pass an unknown `dtype` on to the
# config and silently load float32.
_DTYPE_ARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def load_kwargs(dtype: torch.dtype | str | None, trust_remote_code: bool) -> dict[str, Any]:
    """Keyword arguments for `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained`: the load dtype (a torch dtype,
    or "auto" for the folder's own), if any, and `trust_remote_code` always explicit: left out (None), transformers
    prompts on a terminal for a folder with code of its own, so the folder, not the caller, could end up deciding."""
    kwargs: dict[str, Any] = {} if dtype is None else {_DTYPE_ARG: dtype}
    kwargs["trust_remote_code"] = trust_remote_code
    return kwargs


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around peft's PeftModel(...) (get_peft_model, PeftModel.from_pretrained) and prepare_model_for_kbit_training:
    peft reads the model's `is_gradient_checkpointing` and calls `gradient_checkpointing_enable`, which transformers
    5.2x deprecated with FutureWarnings that would top every training, evaluation, export log and `glmtune infer`'s
    stderr. They are peft's calls, not ours; other warnings pass."""
    with warnings.catch_warnings():
        for name in ("is_gradient_checkpointing", "gradient_checkpointing_enable"):
            warnings.filterwarnings("ignore", message=f"`{name}` is deprecated", category=FutureWarning)
        yield
