"""glmtune.model.loading: the one dtype policy, adapter folders and their base, the remote-code refusal, and that
nothing else in the package calls from_pretrained."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import REPO
from helpers.settings import tiny_settings
from glmtune.model import loading
from glmtune.model.remote_code import MARKER, RemoteCodeError
from glmtune.train import trainer

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny GLM-4 model folder and a LoRA adapter on it (random, non-zero B: it changes the logits)."""
    from peft import LoraConfig, get_peft_model

    from glmtune.data.convert import convert_file
    from helpers.settings import convert_settings
    from glmtune.data.synthetic import write_advertisegen
    from glmtune.model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("loading")
    raw = write_advertisegen(root / "raw", 40, 4, 5)
    convert_file(raw["train"], root / "train.jsonl", root / "rejects.jsonl", root / "report.json", "advertisegen", "adgen", convert_settings())
    model_dir = build_tiny_model([root / "train.jsonl"], root / "model", tiny_settings(hidden_size=32, intermediate_size=64), family="glm4")
    base = loading.load_model(model_dir, dtype="float32", trust_remote_code=False)
    torch.manual_seed(1)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(str(root / "adapter"))
    return {"root": root, "model": model_dir, "adapter": root / "adapter"}


# (setting, device, GPU has bf16) -> load dtype: the table of glmtune.model.loading's docstring.
POLICY = [
    ("auto", "cpu", False, F32), ("auto", "cuda", True, BF16), ("auto", "cuda", False, F32), ("auto", "cuda:1", True, BF16),
    ("bf16", "cpu", True, F32), ("bf16", "cuda", True, BF16), ("bf16", "cuda", False, BF16),
    ("fp16", "cpu", True, F32), ("fp16", "cuda", True, F32), ("fp32", "cuda", True, F32),
    ("float32", "cuda", True, F32), ("bfloat16", "cpu", False, BF16), ("float16", "cpu", False, F16),
    ("saved", "cuda", True, "auto"), ("saved", "cpu", False, "auto"),
]


@pytest.mark.parametrize(("setting", "device", "has_bf16", "expected"), POLICY)
def test_the_dtype_policy_table(setting: str, device: str, has_bf16: bool, expected: torch.dtype | str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: has_bf16)
    assert loading.resolve_dtype(setting, device) == expected


def test_an_unknown_dtype_setting_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'half' is none of auto, bf16, fp16, fp32, float32, bfloat16, float16, saved"):
        loading.resolve_dtype("half", "cpu")


# train.precision before the loader existed: (GPU, GPU has bf16, setting) -> (load dtype, Trainer bf16, Trainer fp16).
TRAINING_BEFORE = {
    (False, False, "auto"): (F32, False, False), (False, False, "bf16"): (F32, False, False),
    (False, False, "fp16"): (F32, False, False), (False, False, "fp32"): (F32, False, False),
    (True, True, "auto"): (BF16, True, False), (True, False, "auto"): (F32, False, True),
    (True, True, "bf16"): (BF16, True, False), (True, False, "bf16"): (BF16, True, False),
    (True, True, "fp16"): (F32, False, True), (True, True, "fp32"): (F32, False, False),
}


@pytest.mark.parametrize(("gpu", "has_bf16", "setting"), list(TRAINING_BEFORE))
def test_training_loads_and_casts_as_before(gpu: bool, has_bf16: bool, setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """train_model loads in resolve_dtype(train.precision) and gives the Trainer precision()'s flags."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: has_bf16)
    assert (loading.resolve_dtype(setting), *trainer.precision(setting)) == TRAINING_BEFORE[(gpu, has_bf16, setting)]


def test_a_model_loads_in_the_dtype_asked_for_and_saved_reads_the_folder(folders: dict[str, Path], tmp_path: Path) -> None:
    half = loading.load_model(folders["model"], dtype="bfloat16", trust_remote_code=False)
    assert {p.dtype for p in half.parameters()} == {BF16}
    assert {p.dtype for p in loading.load_model(folders["model"], dtype="auto", trust_remote_code=False, device="cpu").parameters()} == {F32}
    half.save_pretrained(tmp_path / "bf16")
    assert {p.dtype for p in loading.load_model(tmp_path / "bf16", dtype="saved", trust_remote_code=False).parameters()} == {BF16}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([[5, 6, 7, 8]])).logits


def test_an_adapter_folder_loads_on_the_base_it_records(folders: dict[str, Path]) -> None:
    model, tokenizer = loading.load_trained(folders["adapter"], trust_remote_code=False, device="cpu")
    base = loading.load_model(folders["model"], dtype="float32", trust_remote_code=False)
    from peft import PeftModel

    assert isinstance(model, PeftModel) and not model.training
    assert str(model.peft_config["default"].base_model_name_or_path) == str(folders["model"])
    assert not torch.allclose(_logits(model), _logits(base))  # the adapter is applied, not just the base
    # The adapter folder holds no tokenizer: the base's, padding on the left for generation.
    assert tokenizer.padding_side == "left" and tokenizer.get_vocab() == loading.load_tokenizer(folders["model"], trust_remote_code=False).get_vocab()


def test_a_moved_base_needs_the_override(folders: dict[str, Path], tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(folders["adapter"], adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json \(.*gone\) does not exist here; pass .* --base-model"):
        loading.load_trained(adapter, trust_remote_code=False, device="cpu")
    moved = shutil.copytree(folders["model"], tmp_path / "moved")
    model, _ = loading.load_trained(adapter, moved, trust_remote_code=False, device="cpu")
    reference, _ = loading.load_trained(folders["adapter"], trust_remote_code=False, device="cpu")
    assert torch.equal(_logits(model), _logits(reference))


def test_a_merged_folder_loads_as_it_is(folders: dict[str, Path]) -> None:
    model, tokenizer = loading.load_trained(folders["model"], trust_remote_code=False, device="cpu")
    assert type(model).__name__ == "GlmForCausalLM" and tokenizer.padding_side == "left"


def _remote_code_folder(folder: Path, marker: bool) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "chatglm", "auto_map": {"AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"}}))
    (folder / "modeling_chatglm.py").write_text("raise SystemExit('the folder code ran')\n")
    if marker:
        (folder / MARKER).write_text(json.dumps({"trust_remote_code": True}))
    return folder


@pytest.mark.parametrize("marker", [False, True])
def test_a_remote_code_folder_is_refused_without_the_flag(tmp_path: Path, marker: bool) -> None:
    """Its own marker file never grants the flag; every stage's load stops with the fix."""
    folder = _remote_code_folder(tmp_path / "remote", marker)
    message = r"loads only by running the Python code in its folder .* pass --trust-remote-code"
    with pytest.raises(RemoteCodeError, match=message) as raised:
        loading.load_model(folder, dtype="float32", trust_remote_code=False)
    assert (MARKER in str(raised.value)) == marker
    with pytest.raises(RemoteCodeError, match=message):
        loading.load_trained(folder, trust_remote_code=False, device="cpu")


def test_the_tokenizer_loads_with_the_chat_special_tokens(folders: dict[str, Path]) -> None:
    tokenizer = loading.load_tokenizer(folders["model"], trust_remote_code=False)
    ids = tokenizer.encode("[gMASK]<sop><|user|>", add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(ids) == ["[gMASK]", "<sop>", "<|user|>"]


def _from_pretrained_calls(path: Path) -> int:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sum(isinstance(node, ast.Attribute) and node.attr == "from_pretrained" for node in ast.walk(tree))


def test_only_the_loader_calls_from_pretrained() -> None:
    """Model, tokenizer, adapter and config loads all go through glmtune.model.loading (one dtype policy, one
    trust_remote_code keyword); a from_pretrained elsewhere would bring a second policy back."""
    package = REPO / "src" / "glmtune"
    calls = {str(path.relative_to(package)): _from_pretrained_calls(path) for path in package.rglob("*.py")}
    assert {name: count for name, count in calls.items() if count} == {"model/loading.py": 7}


def test_load_adapter_checks_the_folder_the_model_came_from(folders: dict[str, Path], tmp_path: Path) -> None:
    """The export's way in (a model already loaded, then its adapter): the same refusal as load_trained's."""
    from glmtune.model.base_identity import BaseModelMismatch, record_base

    adapter = shutil.copytree(folders["adapter"], tmp_path / "adapter")
    record_base(adapter)
    other = shutil.copytree(folders["model"], tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["rope_theta"] = config.get("rope_theta", 10000.0) * 2  # another model: same weights, other positions
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseModelMismatch, match=rf"trained on the base model {folders['model']} .*{other}, is a different model"):
        loading.load_adapter(loading.load_model(other, dtype="float32", trust_remote_code=False), adapter)
    same = loading.load_adapter(loading.load_model(folders["model"], dtype="float32", trust_remote_code=False), adapter)
    assert type(same).__name__.startswith("Peft")
