"""The generation backend seam: a backend registered in one BACKENDS entry runs the evaluate stage, scored as any
other; the schema's evaluate.cache names exactly the registered backends (and auto)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers.settings import evaluate_settings, model_settings, schema, tokenize_settings

from glmtune.evaluate import backend as seam
from glmtune.evaluate.backend import BACKENDS, Plan, backend_factory, in_order, make_plan
from glmtune.evaluate.metrics import corpus_scores
from glmtune.evaluate.predict import evaluate_model
from glmtune.io import read_jsonl


class EchoBackend:
    """A made-up backend: each prompt's own text back (no model call), batches of at most 5 rows, every run logged."""

    runs: list[list[list[int]]] = []

    def __init__(self, model: Any, tokenizer: Any, template: Any, batch_size: int | str, progress: bool) -> None:
        self.tokenizer = tokenizer

    def batch_limit(self, prompts: Sequence[list[int]], max_new_tokens: int) -> int:
        return 5

    def generate(self, plan: Plan, part: slice = slice(None)) -> dict[int, str]:
        batches = plan.batches[part]
        EchoBackend.runs.append(batches)
        return {i: self.tokenizer.decode(plan.prompts[i], skip_special_tokens=True).strip() for rows in batches for i in rows}


def test_a_backend_in_one_registry_entry_runs_the_evaluate_stage(
    small_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(BACKENDS, "echo", EchoBackend)
    EchoBackend.runs.clear()
    caplog.set_level("INFO", logger="glmtune.evaluate.predict")
    settings = dataclasses.replace(evaluate_settings(max_samples=12, max_new_tokens=8), cache="echo")
    scores = evaluate_model(small_run["model"], small_run["test"], tmp_path / "p.jsonl", tmp_path / "s.json", settings,
                            model_settings(template="glm4"), tokenize_settings(max_input_length=64))
    rows = list(read_jsonl(tmp_path / "p.jsonl"))
    assert len(rows) == 12
    total = len(list(read_jsonl(small_run["test"])))
    assert f"evaluating the first 12 of its {total} test conversations (evaluate.max_samples)" in caplog.text
    # Each prediction is its own prompt echoed back, in the test split's order (the prompt, role tokens dropped).
    assert all(row["messages"][-1]["content"] in row["prediction"] and row["prediction"] != row["reference"] for row in rows)
    assert len({row["prediction"] for row in rows}) > 1
    # The plan: 12 prompts at most 5 a batch, evened to 4 + 4 + 4, run in one call.
    assert [[len(rows) for rows in batches] for batches in EchoBackend.runs] == [[4, 4, 4]]
    # Scored by the shared scorers, as any backend's predictions.
    expected = corpus_scores([r["prediction"] for r in rows], [r["reference"] for r in rows])
    assert {k: scores[k] for k in expected} == expected
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == scores


def test_the_schema_cache_enum_is_the_registry_and_auto() -> None:
    enum = schema()["properties"]["evaluate"]["properties"]["cache"]["enum"]
    assert sorted(enum) == sorted([*BACKENDS, "auto"])
    for name in BACKENDS:  # every entry resolves to a backend with the protocol's two methods
        factory = backend_factory(name)
        assert callable(factory.batch_limit) and callable(factory.generate)


def test_an_unknown_backend_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"no generation backend 'vllm'; known: dynamic, static or auto"):
        backend_factory("vllm")


def test_a_backend_that_loses_a_prompt_is_an_error() -> None:
    assert in_order({1: "b", 0: "a"}, 2) == ["a", "b"]
    with pytest.raises(RuntimeError, match=r"returned 2 completions for 3 prompts \(first missing indices: \[1\]"):
        in_order({0: "a", 2: "c"}, 3)
    with pytest.raises(RuntimeError, match="returned 3 completions for 2 prompts"):
        in_order({0: "a", 1: "b", 2: "c"}, 2)


def test_the_plan_is_evened_and_longest_first() -> None:
    class Limit:
        def batch_limit(self, prompts: Sequence[list[int]], max_new_tokens: int) -> int:
            return 4

    prompts = [[1] * n for n in (3, 9, 1, 7, 5, 2, 8, 4, 6)]
    plan = make_plan(Limit(), prompts, 10)  # type: ignore[arg-type]
    assert [[len(prompts[i]) for i in rows] for rows in plan.batches] == [[9, 8, 7], [6, 5, 4], [3, 2, 1]]
    assert (plan.batch_size, plan.max_new_tokens) == (3, 10)


def test_the_registry_module_imports_no_torch() -> None:
    import subprocess
    import sys

    code = f"import sys, {seam.__name__}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
