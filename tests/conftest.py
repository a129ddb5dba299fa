"""Shared fixtures: a small end-to-end run of the package's stages (no Snakemake), built once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The tests' training overrides of the schema defaults (helpers.settings.train_settings fills in the rest).
TRAIN_SETTINGS = {
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"]},
    "max_steps": 40, "batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 1e-2, "lr_scheduler": "constant",
    "warmup_steps": 0, "weight_decay": 0.0, "logging_steps": 5, "save_steps": 20, "seed": 0,
}


# QLoRA's 4-bit layers (bitsandbytes, the `qlora` extra) also run on the CPU: its stage is tested here where installed.
NEEDS_BITSANDBYTES = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                                        reason="QLoRA needs the qlora extra: pip install -e '.[qlora]'")


def shared_data(relative: str) -> Path:
    """A file from ../shared/data, or skip the test when this clone has none."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data {relative} is not available ({SHARED_DATA} is absent in this clone)")
    return path


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic data -> conversations -> splits -> tiny model -> tokenized -> 40 LoRA steps."""
    from glmtune.data.convert import convert_file
    from glmtune.data.split import merge_and_split
    from helpers.settings import converted_part, convert_settings, split_settings
    from glmtune.data.synthetic import write_advertisegen
    from glmtune.model.tiny import build_tiny_model
    from glmtune.tokenize.splits import tokenize_splits
    from glmtune.train.trainer import train_model
    from helpers.settings import model_settings, tiny_settings, tokenize_settings, train_settings

    root = tmp_path_factory.mktemp("small_run")
    raw = write_advertisegen(root / "raw", 400, 40, 1)
    for name, path in raw.items():
        convert_file(path, root / f"{name}.jsonl", root / f"{name}.rejects.jsonl", root / f"{name}.report.json", "advertisegen", "adgen", convert_settings())
    merge_and_split([converted_part("adgen", "all", str(root / "train.jsonl")), converted_part("adgen", "test", str(root / "dev.jsonl"))],
                    root / "splits", split_settings(validation_ratio=0.1, test_ratio=0.0, seed=0), write_test=True)
    model = build_tiny_model([root / "splits" / "train.jsonl"], root / "model", tiny_settings(hidden_size=64, intermediate_size=128), family="glm4")
    tokenized = {"train": root / "tok" / "train", "validation": root / "tok" / "validation"}
    tokenize_splits({s: root / "splits" / f"{s}.jsonl" for s in tokenized}, tokenized, root / "tok" / "stats.json", model,
                    tokenize_settings(max_input_length=64, max_output_length=128), model_settings(template="glm4"))
    train_model(tokenized["train"], tokenized["validation"], model.resolve(), root / "adapter", root / "log.jsonl",
               root / "loss.png", root / "checkpoints", train_settings(**TRAIN_SETTINGS), trust_remote_code=False, family="glm4")
    return {"root": root, "model": model, "adapter": root / "adapter", "test": root / "splits" / "test.jsonl",
            "log": root / "log.jsonl", "plot": root / "loss.png", "tokenized": root / "tok", "checkpoints": root / "checkpoints"}


# GPU tests: everything under tests/gpu/ is marked `gpu` (`pytest -m gpu` selects exactly those) and every `gpu` test
# is skipped, with the reason, where torch sees no CUDA device. (No conftest.py under tests/gpu: the tests import
# this file as `conftest`, and a second one would shadow it.)
GPU_TESTS = REPO / "tests" / "gpu"


@pytest.hookimpl(tryfirst=True)  # before -m selects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if GPU_TESTS in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.gpu)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items:
        import torch

        if not torch.cuda.is_available():
            for item in gpu_items:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false here)"))
    # The SLURM tests first: most of their ~9 min is waiting for the scheduler's polling, so under `pytest -n 2` one
    # worker waits through them while the other runs the rest (pyproject.toml: files go out in this order).
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)


@pytest.fixture(scope="session")
def default_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The default job's data, tiny model and tokenized splits, for tests/gpu (helpers.gpu_stages.build_default_job)."""
    from helpers.gpu_stages import build_default_job

    return build_default_job(tmp_path_factory.mktemp("default_job"))
