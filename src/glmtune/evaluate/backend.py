"""The generation backend seam: evaluation is "tokenized prompts -> greedy texts" by a backend, then shared scoring.

A backend is a class in a module of its own, registered by its `evaluate.cache` name in BACKENDS ("auto" is
resolved to one of them by glmtune.evaluate.batching.resolve_cache). It answers two questions:

- `batch_limit(prompts, max_new_tokens)`: the most rows one batch may hold (its `batch_size` setting, "auto" its own
  way);
- `generate(plan, part)`: the completions of the plan's batches `plan.batches[part]`, by prompt index.

The plan (which prompts go together, longest first) is made here, once, the same for every backend and every process,
so the multi-process split (glmtune.evaluate.ranks.RankSplit) wraps any backend: each rank runs every N-th batch of
the one plan and the predictions are those of one process. To add a backend: its module, its line in BACKENDS, its
name in the schema's `evaluate.cache` enum, and tests (README, Layout).

Imports no torch: the registry is read without loading any backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from glmtune.chat_template import ChatTemplate


@dataclass(frozen=True)
class Plan:
    """The prompts cut into batches (lists of prompt indices, in the order they run) and the tokens to generate."""

    prompts: Sequence[list[int]]
    batches: list[list[int]]
    max_new_tokens: int

    @property
    def batch_size(self) -> int:
        """Rows of the widest batch (the first: batches run longest prompts first and only the last is short)."""
        return max((len(rows) for rows in self.batches), default=0)


class GenerationBackend(Protocol):
    """Greedy completions of tokenized prompts (see the module's docstring)."""

    def batch_limit(self, prompts: Sequence[list[int]], max_new_tokens: int) -> int: ...

    def generate(self, plan: Plan, part: slice = slice(None)) -> dict[int, str]: ...


# What a backend is made from: the loaded model, its tokenizer and chat template, evaluate.batch_size, and whether
# this process shows a progress bar.
BackendFactory = Callable[..., GenerationBackend]

# evaluate.cache -> the backend: "module:class" (imported only when chosen), or the class itself.
BACKENDS: dict[str, str | BackendFactory] = {
    "dynamic": "glmtune.evaluate.generation:DynamicCacheBackend",
    "static": "glmtune.evaluate.generation:StaticCacheBackend",
}


def backend_factory(name: str) -> BackendFactory:
    """The registered backend `name` (imported now)."""
    if name not in BACKENDS:
        raise ValueError(f"evaluate.cache: no generation backend {name!r}; known: {', '.join(sorted(BACKENDS))} or auto")
    entry = BACKENDS[name]
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return entry


def make_backend(name: str, model: Any, tokenizer: Any, template: ChatTemplate, batch_size: int | str,
                 progress: bool = True) -> GenerationBackend:
    """The backend `name` (a resolved evaluate.cache, not "auto") on a loaded model."""
    return backend_factory(name)(model=model, tokenizer=tokenizer, template=template, batch_size=batch_size,
                                 progress=progress)


def make_plan(backend: GenerationBackend, prompts: Sequence[list[int]], max_new_tokens: int) -> Plan:
    """The batches of `prompts`: longest first, at most the backend's batch limit, evened out (batching.py)."""
    from glmtune.evaluate.batching import even_batch_size, plan_batches  # here: batching imports torch

    rows = even_batch_size(len(prompts), backend.batch_limit(prompts, max_new_tokens))
    return Plan(prompts, plan_batches(prompts, rows), max_new_tokens)


def in_order(outputs: dict[int, str], count: int) -> list[str]:
    """A backend's completions as a list in the prompts' order; a missing or extra prompt index is an error."""
    if sorted(outputs) != list(range(count)):
        missing = sorted(set(range(count)) - set(outputs))[:5]
        raise RuntimeError(f"the generation backend returned {len(outputs)} completions for {count} prompts "
                           f"(first missing indices: {missing}, or indices outside 0..{count - 1})")
    return [outputs[i] for i in range(count)]


def generate_texts(backend: GenerationBackend, prompts: Sequence[list[int]], max_new_tokens: int) -> list[str]:
    """Every prompt's completion, in the prompts' order."""
    return in_order(backend.generate(make_plan(backend, prompts, max_new_tokens)), len(prompts))
