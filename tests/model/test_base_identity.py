"""An adapter knows its base: training records the base's fingerprint, and inference (the CLI), evaluation and
export refuse a base that differs (here: another tiny model rebuilt at the same path), naming both."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from glmtune.model import base_identity
from glmtune.model.base_identity import RECORD, BaseModelMismatch, fingerprint, fingerprint_files
from helpers.settings import evaluate_settings, export_settings, model_settings, tiny_settings, tokenize_settings, train_settings

SIZE = {"hidden_size": 32, "intermediate_size": 64}


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LoRA trained a few steps on a tiny model; a copy of that model elsewhere; then the model folder rebuilt
    in place with another seed (what another config's build_tiny_model does to results/tiny_model)."""
    from glmtune.data.convert import convert_file
    from glmtune.data.split import merge_and_split
    from helpers.settings import converted_part, convert_settings, split_settings
    from glmtune.data.synthetic import write_advertisegen
    from glmtune.tokenize.splits import tokenize_splits
    from glmtune.model.tiny import build_tiny_model
    from glmtune.train.trainer import train_model

    root = tmp_path_factory.mktemp("base_identity")
    raw = write_advertisegen(root / "raw", 60, 8, 3)
    convert_file(raw["train"], root / "train.jsonl", root / "rejects.jsonl", root / "report.json", "advertisegen", "adgen", convert_settings())
    merge_and_split([converted_part("adgen", "all", str(root / "train.jsonl"))], root / "splits", split_settings(validation_ratio=0.1, test_ratio=0.1, seed=0), write_test=True)
    train_files = [root / "splits" / "train.jsonl"]
    model = build_tiny_model(train_files, root / "tiny_model", tiny_settings(**SIZE, seed=0), family="glm4").resolve()
    tokenized = {"train": root / "tok" / "train", "validation": root / "tok" / "validation"}
    tokenize_splits({s: root / "splits" / f"{s}.jsonl" for s in tokenized}, tokenized, root / "tok" / "stats.json", model,
                    tokenize_settings(max_input_length=32, max_output_length=32), model_settings(template="glm4"))
    settings = train_settings(max_steps=3, batch_size=4, save_steps=100, logging_steps=1, learning_rate=1e-2)
    train_model(tokenized["train"], tokenized["validation"], model, root / "adapter", root / "log.jsonl", root / "loss.png",
                root / "checkpoints", settings, trust_remote_code=False, family="glm4")
    original = Path(shutil.copytree(model, root / "original_copy"))
    build_tiny_model(train_files, model, tiny_settings(**SIZE, seed=1), family="glm4")
    return {"root": root, "model": model, "original": original, "adapter": root / "adapter",
            "test": root / "splits" / "test.jsonl"}


def test_training_records_the_base_it_trained_on(rebuilt: dict[str, Path]) -> None:
    record = json.loads((rebuilt["adapter"] / RECORD).read_text(encoding="utf-8"))
    assert record["path"] == str(rebuilt["model"])
    # The copy taken before the rebuild is that model: same fingerprint; the rebuilt folder is not.
    assert record["fingerprint"] == fingerprint(fingerprint_files(rebuilt["original"]))
    assert record["fingerprint"] != fingerprint(fingerprint_files(rebuilt["model"]))
    assert any(name.endswith(".safetensors") for name in record["files"]) and "config.json" in record["files"]
    assert "tokenizer.json" in record["files"]


def test_infer_refuses_the_rebuilt_base_naming_both(rebuilt: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from glmtune.cli import main

    record = json.loads((rebuilt["adapter"] / RECORD).read_text(encoding="utf-8"))
    assert main(["infer", str(rebuilt["adapter"]), "--prompt", "类型#裙", "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glmtune: error: ") and len(err.strip().splitlines()) == 1
    found = fingerprint(fingerprint_files(rebuilt["model"]))
    assert str(rebuilt["model"]) in err and "now holds a different model" in err
    assert record["fingerprint"][:16] in err and found[:16] in err and "safetensors" in err


def test_infer_refuses_another_base_model_naming_both(rebuilt: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from glmtune.cli import main

    other = Path(shutil.copytree(rebuilt["model"], tmp_path / "other"))
    assert main(["infer", str(rebuilt["adapter"]), "--base-model", str(other), "--prompt", "x", "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert f"trained on the base model {rebuilt['model']}" in err and f"the base model given, {other}, is a different" in err


def test_a_matching_base_model_elsewhere_works(rebuilt: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from glmtune.cli import main

    assert main(["infer", str(rebuilt["adapter"]), "--base-model", str(rebuilt["original"]), "--prompt", "类型#裙",
                 "--max-new-tokens", "4"]) == 0
    assert "glmtune: error" not in capsys.readouterr().err


def test_evaluation_refuses_the_rebuilt_base(rebuilt: dict[str, Path], tmp_path: Path) -> None:
    from glmtune.evaluate.predict import evaluate_model

    with pytest.raises(BaseModelMismatch, match="now holds a different model"):
        evaluate_model(rebuilt["adapter"], rebuilt["test"], tmp_path / "predictions.jsonl", tmp_path / "scores.json",
                       evaluate_settings(max_samples=2, batch_size=2, max_new_tokens=4, cache="dynamic"),
                       model_settings(template="glm4"), tokenize_settings(max_input_length=32), base_model=rebuilt["model"])
    assert [path.name for path in tmp_path.iterdir()] in ([], ["holder.lock"])  # no output; the lock the job held


def test_export_refuses_the_rebuilt_base(rebuilt: dict[str, Path], tmp_path: Path) -> None:
    from glmtune.export.merge import export_model

    with pytest.raises(BaseModelMismatch, match=str(rebuilt["model"])):
        export_model(rebuilt["adapter"], rebuilt["model"], tmp_path / "merged", rebuilt["test"], export_settings(),
                     model_settings(template="glm4"))
    assert not list(tmp_path.iterdir())


def test_an_adapter_without_the_record_loads_with_a_warning(rebuilt: dict[str, Path], tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    adapter = Path(shutil.copytree(rebuilt["adapter"], tmp_path / "old_adapter"))
    (adapter / RECORD).unlink()
    with caplog.at_level(logging.WARNING, logger="glmtune.model.base_identity"):
        base_identity.check_base(adapter, rebuilt["model"])
        base_identity.check_base(adapter, rebuilt["model"])  # infer checks, then loading checks again: said once
    assert f"has no {RECORD}" in caplog.text and str(rebuilt["model"]) in caplog.text
    assert caplog.text.count(f"has no {RECORD}") == 1


def test_a_whole_model_gets_no_record(rebuilt: dict[str, Path], tmp_path: Path) -> None:
    whole = Path(shutil.copytree(rebuilt["original"], tmp_path / "full_sft"))
    base_identity.record_base(whole)
    assert not (whole / RECORD).exists()


@pytest.mark.parametrize("change", ["config.json", "tokenizer_config.json"])
def test_the_fingerprint_sees_config_and_tokenizer_changes(rebuilt: dict[str, Path], tmp_path: Path, change: str) -> None:
    copy = Path(shutil.copytree(rebuilt["original"], tmp_path / "copy"))
    before = fingerprint_files(copy)
    data = json.loads((copy / change).read_text(encoding="utf-8"))
    data["edited_by_test"] = 1
    (copy / change).write_text(json.dumps(data), encoding="utf-8")
    after = fingerprint_files(copy)
    assert [name for name in after if after[name] != before[name]] == [change]
