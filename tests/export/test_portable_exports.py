"""Exported folders load outside this stack: the merged model and its tokenizer under transformers 4.57 (what
LLaMA-Factory and many vLLM deployments pin; GLM's native class exists from 4.46), the tokenizer also under 4.40.

Each check runs the other transformers in its own interpreter (GLMTUNE_TF4_PYTHON, GLMTUNE_REMOTE_CODE_PYTHON;
.ci/run builds both) and compares token ids and logits with what transformers 5 gives here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from glmtune.export.merge import export_model
from helpers.settings import export_settings, model_settings

pytestmark = pytest.mark.old_transformers

MESSAGES = [{"role": "system", "content": "你是一个助手。"}, {"role": "user", "content": "类型#裙*颜色#红色 hello 123"}]
LOAD = r"""
import json, sys, torch, transformers
from transformers import AutoTokenizer
folder, with_model = sys.argv[1], sys.argv[2] == "1"
tokenizer = AutoTokenizer.from_pretrained(folder)
ids = tokenizer.apply_chat_template(json.loads(sys.argv[3]), add_generation_prompt=True)
out = {"class": type(tokenizer).__name__, "ids": list(ids), "eos": tokenizer.eos_token, "pad": tokenizer.pad_token}
if with_model:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    out["model"] = type(model).__name__
    out["logits"] = model(torch.tensor([ids])).logits[0, -1].tolist()
print(json.dumps(out))
"""


def _python(variable: str) -> str:
    python = os.environ.get(variable, "")
    if not Path(python).is_file():
        pytest.skip(f"set {variable} to the python of the other transformers (.ci/run builds it)")
    return python


def _load_elsewhere(python: str, folder: Path, with_model: bool) -> dict:
    done = subprocess.run([python, "-c", LOAD, str(folder), "1" if with_model else "0", json.dumps(MESSAGES)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def merged(small_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("portable") / "merged_model"
    export_model(small_run["adapter"], small_run["model"], out, small_run["test"], export_settings(tolerance=1e-3), model_settings(template="glm4"))
    return out


def _here(folder: Path) -> tuple[list[int], list[float]]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return list(ids), model(torch.tensor([ids])).logits[0, -1].tolist()


def test_merged_model_loads_under_transformers_4_57(merged: Path) -> None:
    ids, logits = _here(merged)
    other = _load_elsewhere(_python("GLMTUNE_TF4_PYTHON"), merged, with_model=True)
    assert other["class"] == "PreTrainedTokenizerFast" and other["model"] == "GlmForCausalLM"
    assert other["ids"] == ids and other["eos"] == "<|endoftext|>"
    assert max(abs(a - b) for a, b in zip(other["logits"], logits)) < 1e-4


@pytest.mark.parametrize("folder", ["merged", "adapter"])
def test_exported_tokenizers_load_under_transformers_4_40(folder: str, merged: Path, small_run: dict[str, Path]) -> None:
    path = merged if folder == "merged" else small_run["adapter"]
    ids, _ = _here(merged)
    other = _load_elsewhere(_python("GLMTUNE_REMOTE_CODE_PYTHON"), path, with_model=False)
    assert other["ids"] == ids and other["pad"] == other["eos"] == "<|endoftext|>"
