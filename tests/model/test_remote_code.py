"""model.trust_remote_code: an original-layout checkpoint runs its own modeling code, unconverted.

tests/helpers/remote_code_model.py writes a scaled-down GLM-4 checkpoint in the ORIGINAL layout with a stand-in
modeling_chatglm.py (the real one cannot be downloaded here). The main tests run in this environment
(transformers 5). The `old_transformers` ones run the same stages under the pinned old transformers of
workflow/envs/glmtune_remote_code.yaml when GLMTUNE_REMOTE_CODE_PYTHON names that environment's python
(README, "Running the original remote code"), and skip otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import REPO, shared_data

from helpers import reference_glm
from helpers import remote_code_model as stand_in

from glmtune.fetch import FetchError  # noqa: E402
from helpers.model_folders import fetch_model_folder, sharded  # noqa: E402
from helpers.settings import evaluate_settings, export_settings, model_settings, tokenize_settings, train_settings  # noqa: E402
from glmtune.config_rules import MethodError, check_method, lora_targets  # noqa: E402
from glmtune.train.methods import resolve_all  # noqa: E402
from glmtune.model.remote_code import MARKER, RemoteCodeError  # noqa: E402

OLD_PYTHON = os.environ.get("GLMTUNE_REMOTE_CODE_PYTHON", "")


def _old_transformers() -> str:
    """The old-transformers interpreter, or skip saying what is missing."""
    if not OLD_PYTHON or not Path(OLD_PYTHON).is_file():
        pytest.skip("set GLMTUNE_REMOTE_CODE_PYTHON to the python of an environment built from "
                    "workflow/envs/glmtune_remote_code.yaml (README: Running the original remote code)")
    probe = subprocess.run([OLD_PYTHON, "-c", "import glmtune, transformers; print(transformers.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.startswith("4."):
        pytest.skip(f"{OLD_PYTHON} has no glmtune with transformers 4.x: {probe.stdout.strip()} {probe.stderr[-300:]}")
    return OLD_PYTHON


old_transformers = pytest.mark.old_transformers  # each such test calls _old_transformers(), which skips without it


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("remote") / "glm-4-9b-chat"
    return folder, stand_in.write_remote_checkpoint(folder)


@pytest.fixture(scope="module")
def prepared(original: tuple[Path, dict[str, torch.Tensor]]) -> Path:
    """fetch with trust_remote_code: the original folder kept as it is."""
    src = original[0]
    spec = {"source": "path", "path": str(src), "trust_remote_code": True}
    return fetch_model_folder("glm4-remote", spec, src.parent / "models" / "glm4-remote", src.parent / "cache")


@pytest.fixture(scope="module")
def splits(original: tuple[Path, dict[str, torch.Tensor]]) -> Path:
    return stand_in.write_splits(original[0].parent / "splits")


def _check_stages(result: dict[str, Any]) -> None:
    losses = result["losses"]
    assert result["samples"] == 24 and result["steps"] == 24
    assert losses[-1] < losses[0] - 1.0, losses
    assert result["lora_targets"] == ["query_key_value"]  # the original module, not q/k/v_proj
    assert result["num_samples"] == 2 and len(result["predictions"]) == 2
    assert result["merge_worst"] <= 1e-4 and len(result["merged_generation"]) == 1
    assert {"modeling_chatglm.py", "configuration_chatglm.py", "reference_glm.py", MARKER} <= set(result["merged_files"])
    assert result["merged_auto_map"]["AutoModelForCausalLM"] == "modeling_chatglm.ChatGLMForConditionalGeneration"
    assert result["reloaded_class"] == "ChatGLMForConditionalGeneration"


def test_fetch_keeps_the_original_and_adds_our_tokenizer(original: tuple[Path, dict[str, torch.Tensor]], prepared: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, state = original
    assert not prepared.is_symlink() and (prepared / MARKER).is_file()
    for name in ("model.safetensors", "modeling_chatglm.py", "configuration_chatglm.py", "generation_config.json"):
        assert (prepared / name).is_symlink() and (prepared / name).resolve() == (src / name).resolve()
    assert json.loads((prepared / "config.json").read_text())["auto_map"] == stand_in.CONFIG["auto_map"]
    assert not (prepared / "tokenization_chatglm.py").exists() and not (prepared / "tokenizer.model").exists()
    tokenizer_config = json.loads((prepared / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast" and "auto_map" not in tokenizer_config
    tokenizer = AutoTokenizer.from_pretrained(prepared, trust_remote_code=True)  # ours, not tokenization_chatglm.py
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "[gMASK]", "<sop>", "<|user|>"]) == [
        stand_in.ENDOFTEXT, stand_in.ENDOFTEXT + 2, stand_in.ENDOFTEXT + 4, stand_in.USER]
    assert tokenizer.encode("the dress", add_special_tokens=False)[0] == stand_in.RANKS.index(b"the")

    model = AutoModelForCausalLM.from_pretrained(prepared, trust_remote_code=True).eval()
    assert type(model).__name__ == "ChatGLMForConditionalGeneration"
    ids = torch.randint(0, stand_in.CONFIG["padded_vocab_size"], (24,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids[None]).logits[0]
    torch.testing.assert_close(logits, reference_glm.forward(state, stand_in.CONFIG, ids), atol=1e-5, rtol=1e-5)

    # Without the flag the same folder is converted as before, and gives the same logits without remote code.
    native = fetch_model_folder("glm4", {"source": "path", "path": str(src)}, src.parent / "models" / "native",
                                src.parent / "cache")
    names = {p.name for p in native.iterdir()}
    assert "auto_map" not in json.loads((native / "config.json").read_text())
    assert MARKER not in names and not any(name.endswith(".py") for name in names)
    with torch.no_grad():
        native_logits = AutoModelForCausalLM.from_pretrained(native, dtype=torch.float32)(ids[None]).logits[0]
    torch.testing.assert_close(native_logits, logits, atol=1e-4, rtol=1e-4)


def test_fetch_refuses_a_folder_without_remote_code(tmp_path: Path) -> None:
    folder = sharded(tmp_path / "native", shards=1)
    (folder / "config.json").write_text(json.dumps({"model_type": "glm", "architectures": ["GlmForCausalLM"]}))
    with pytest.raises(FetchError, match=r"trust_remote_code is true, but .*config\.json maps no AutoModelForCausalLM"):
        fetch_model_folder("m", {"source": "path", "path": str(folder), "trust_remote_code": True},
                           tmp_path / "out", tmp_path / "cache")
    assert not (tmp_path / "out").exists()


def test_lora_targets_keep_the_original_names(prepared: Path) -> None:
    from transformers import AutoModelForCausalLM

    assert lora_targets(["query_key_value", "dense"], trust_remote_code=True, family="glm4") == ["query_key_value", "dense"]
    assert lora_targets(["all", "dense"], trust_remote_code=True, family="glm4") == ["all"]
    with pytest.raises(MethodError, match=r"'q_proj' is not an original ChatGLM module, and with model.trust_remote_code"):
        lora_targets(["q_proj"], trust_remote_code=True, family="glm4")
    with pytest.raises(MethodError, match="ptuning is not supported with model.trust_remote_code"):
        check_method(train_settings(method="ptuning"), trust_remote_code=True, family="glm4")
    model = AutoModelForCausalLM.from_pretrained(prepared, trust_remote_code=True)
    assert resolve_all(model, ["all"]) == ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
    assert lora_targets(["query_key_value"], trust_remote_code=False, family="glm4") == ["q_proj", "k_proj", "v_proj"]  # the default path maps as before


def test_stages_run_the_remote_code(prepared: Path, splits: Path, tmp_path: Path) -> None:
    """tokenize -> LoRA on query_key_value -> evaluation -> export merge, in this environment (transformers 5)."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from glmtune.io import read_jsonl
    from glmtune.chat_template import encode_conversation, get_template

    result = stand_in.run_stages(prepared, splits, tmp_path)
    _check_stages(result)
    tokenizer = AutoTokenizer.from_pretrained(prepared, trust_remote_code=True)
    first = next(read_jsonl(splits / "train.jsonl"))["conversations"]
    expected = encode_conversation(tokenizer, get_template("glm4"), first)[0]
    assert load_from_disk(str(tmp_path / "tok" / "train"))[0]["input_ids"] == expected


def test_full_sft_keeps_the_remote_code(prepared: Path, splits: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from glmtune.export.merge import export_model
    from glmtune.tokenize.splits import tokenize_splits
    from glmtune.train.trainer import train_model

    tok = {"train": tmp_path / "train", "validation": tmp_path / "validation"}
    tokenize_splits({s: splits / f"{s}.jsonl" for s in tok}, tok, tmp_path / "stats.json", prepared,
                    tokenize_settings(max_input_length=64, max_output_length=64), model_settings(template="glm4", trust_remote_code=True))
    settings = {**stand_in.TRAIN_SETTINGS, "method": "full", "max_steps": 2, "save_steps": 2, "learning_rate": 1e-3}
    train_model(tok["train"], tok["validation"], prepared.resolve(), tmp_path / "full", tmp_path / "log.jsonl",
               tmp_path / "loss.png", tmp_path / "ckpt", train_settings(**settings), trust_remote_code=True, family="glm4")
    assert (tmp_path / "full" / MARKER).is_file() and (tmp_path / "full" / "modeling_chatglm.py").is_file()
    export_model(tmp_path / "full", prepared, tmp_path / "merged", splits / "test.jsonl", export_settings(tolerance=1e-3),
                 model_settings(template="glm4", trust_remote_code=True))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", trust_remote_code=True)
    assert type(model).__name__ == "ChatGLMForConditionalGeneration"


def _sentinel_model(tmp_path: Path) -> tuple[Path, Path]:
    """A prepared remote-code folder (marker, auto_map) whose *.py files write `sentinel` when imported.
    The folder's name is unique: transformers caches a folder's modules under its name."""
    src, sentinel = tmp_path / "original", tmp_path / "sentinel"
    stand_in.write_remote_checkpoint(src)
    for name in ("modeling_chatglm.py", "configuration_chatglm.py"):
        with open(src / name, "a", encoding="utf-8") as code:
            code.write(f"\nimport pathlib\npathlib.Path({str(sentinel)!r}).write_text('ran')\n")
    folder = fetch_model_folder("glm4-remote", {"source": "path", "path": str(src), "trust_remote_code": True},
                                tmp_path / f"sentinel-{tmp_path.name}", tmp_path / "cache")
    assert (folder / MARKER).is_file() and not sentinel.exists()
    return folder, sentinel


def test_infer_runs_a_folders_code_only_with_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from glmtune.cli import main

    folder, sentinel = _sentinel_model(tmp_path)
    command = ["infer", str(folder), "--prompt", "the", "--max-new-tokens", "2"]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert str(folder) in error and "--trust-remote-code" in error and MARKER in error
    assert not sentinel.exists()
    assert main([*command, "--trust-remote-code"]) == 0
    assert sentinel.exists()
    # the folder's code files gone (an official folder's config and tokenizer copied alone): named, not a traceback
    (folder / "modeling_chatglm.py").unlink()
    assert main([*command, "--trust-remote-code"]) == 2
    assert "the code its auto_map names is not in the folder (modeling_chatglm.py)" in capsys.readouterr().err


def test_evaluation_runs_a_folders_code_only_with_the_key(tmp_path: Path, splits: Path) -> None:
    from glmtune.evaluate.predict import evaluate_model

    folder, sentinel = _sentinel_model(tmp_path)
    arguments = {"model_dir": folder, "test_path": splits / "test.jsonl", "predictions_path": tmp_path / "p.jsonl",
                 "scores_path": tmp_path / "s.json", "settings": evaluate_settings(max_samples=2, batch_size=2, max_new_tokens=2),
                 "tokenize": tokenize_settings(max_input_length=64)}
    with pytest.raises(RemoteCodeError, match=r"model\.trust_remote_code: true in the workflow config"):
        evaluate_model(**arguments, model=model_settings(template="glm4"))
    assert not sentinel.exists() and not (tmp_path / "s.json").exists()
    assert evaluate_model(**arguments, model=model_settings(template="glm4", trust_remote_code=True))["num_samples"] == 2
    assert sentinel.exists()


def test_a_native_folder_with_an_auto_map_loads_without_its_code(original: tuple[Path, Any], tmp_path: Path) -> None:
    """A native model_type wins over a stray auto_map: loaded natively, the folder's code never runs."""
    import shutil

    from glmtune.model.loading import load_trained

    native = fetch_model_folder("glm4", {"source": "path", "path": str(original[0])}, tmp_path / "linked", tmp_path / "c")
    folder, sentinel = tmp_path / f"native-{tmp_path.name}", tmp_path / "sentinel"
    shutil.copytree(native, folder)
    (folder / "modeling_evil.py").write_text(f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('ran')\n")
    (folder / MARKER).write_text("{}")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    model, _ = load_trained(folder, device="cpu", trust_remote_code=False)
    assert type(model).__name__ == "GlmForCausalLM" and not sentinel.exists()


RULE_ENVS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings, WorkflowSettings
configfiles = [Path(p) for p in sys.argv[1:]]
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(configfiles=configfiles),
                            storage_settings=StorageSettings(), workdir=Path("."), snakefile=Path("workflow/Snakefile"))
    workflow._workflow_settings = WorkflowSettings()
    rules = workflow._workflow.rules
    print(json.dumps({"envs": {rule.name: rule.conda_env for rule in rules},
                      "remote_code_params": sorted(rule.name for rule in rules if "trust_remote_code" in rule.params.keys())}))
"""


def _rule_envs(*configfiles: Path) -> dict[str, Any]:
    """Each rule's conda: file ("envs") and the rules given trust_remote_code as a param, read through Snakemake's
    API (its parsed rules) from the repository's workflow."""
    done = subprocess.run([sys.executable, "-c", RULE_ENVS, *map(str, configfiles)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.workflow
def test_model_rules_use_the_pinned_environment_only_with_the_flag(original: tuple[Path, Any], tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "remote.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "glm4-remote", "source": "path", "path": str(original[0]),
                                                "trust_remote_code": True},
                                      "train": {"lora": {"target_modules": ["query_key_value"]}}}))
    remote = _rule_envs(REPO / "config" / "config.yaml", config)
    envs = remote["envs"]
    model_rules = {"tokenize", "train", "train_full", "evaluate", "evaluate_base", "export_model", "export_chosen"}
    assert {rule for rule, env in envs.items() if env == "../envs/glmtune_remote_code.yaml"} == model_rules
    aggregates = {"all", "all_runs_exported"}  # rules that only name targets run nothing, so have no environment
    assert {env for rule, env in envs.items() if rule not in model_rules | aggregates} == {"../envs/glmtune.yaml"}
    assert set(remote["remote_code_params"]) == model_rules  # every loading rule gets the user's say-so
    default = _rule_envs(REPO / "config" / "config.yaml")
    assert {env for rule, env in default["envs"].items() if rule not in aggregates} == {"../envs/glmtune.yaml"}
    assert default["remote_code_params"] == []


@old_transformers
def test_stages_under_the_pinned_old_transformers(prepared: Path, splits: Path, tmp_path: Path) -> None:
    """The folder fetched here (transformers 5) goes through the other stages in the old-transformers environment."""
    python = _old_transformers()
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([python, str(Path(stand_in.__file__)), str(prepared), str(splits),
                           str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["transformers"].startswith("4.")
    _check_stages(result)


ENCODE = """
import json, sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps([tokenizer.encode(text, add_special_tokens=False) for text in json.loads(sys.argv[2])]))
"""


@old_transformers
@pytest.mark.parametrize(("family", "folder"), [("glm4", "glm-4-9b-chat"), ("chatglm3", "chatglm3-6b")])
def test_real_tokenizers_give_the_same_ids_under_old_transformers(family: str, folder: str, tmp_path: Path) -> None:
    """The tokenizer fetch writes (with transformers 5) loads in transformers 4.40 and encodes identically."""
    from glmtune.model.tokenizers import tokenizer_from_model_file
    from glmtune.model.tokenizer_files import save_tokenizer

    python = _old_transformers()
    source = shared_data(f"tokenizers/{folder}/tokenizer.model").parent
    tokenizer = tokenizer_from_model_file(source, family)
    save_tokenizer(tokenizer, tmp_path)
    texts = ["类型#裙*颜色#红色*风格#复古", "Hello world!  12345 philosophy", "<|user|>\n你好[gMASK]<sop>sop", " \n\t 换行\r\n"]
    done = subprocess.run([python, "-c", ENCODE, str(tmp_path), json.dumps(texts)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def _checkpointed(python: str, prepared: Path, splits: Path, work: Path) -> dict[str, Any]:
    env = {**os.environ, "HF_MODULES_CACHE": str(work / "modules"), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([python, str(Path(stand_in.__file__)), str(prepared), str(splits), str(work), "--checkpointing"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("old", [False, pytest.param(True, marks=old_transformers)], ids=["transformers-5", "old-transformers"])
def test_lora_with_gradient_checkpointing_trains_every_layers_adapter(prepared: Path, splits: Path, tmp_path: Path,
                                                                      old: bool) -> None:
    """The original code checkpoints its layers reentrantly (ChatGLM3's call names no use_reentrant): with the frozen
    embedding's output needing no gradient, no LoRA weight inside a layer gets one (old transformers turns the input
    gradients on only for its own PEFT integration), and the first step failed: "element 0 of tensors does not
    require grad". Every layer's adapter must train."""
    result = _checkpointed(_old_transformers() if old else sys.executable, prepared, splits, tmp_path)
    assert result["transformers"].startswith("4." if old else "5.")
    assert result["lora_b"] > 0 and result["untrained"] == []
