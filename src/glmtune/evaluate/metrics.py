"""Generation metrics, computed exactly as the ChatGLM3 finetune demo's compute_metrics does.

Scores are comparable with numbers published from that demo: ROUGE-1/2/L F scores (x100, rounded to 4
places as the demo does) over jieba words, and BLEU-4 over jieba words on a 0-1 scale. "bleu-4-char" is
LLaMA-Factory's character-level BLEU-4 (x100, rounded to 4 places), reported by its GLM recipes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jieba
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_chinese import Rouge

# jieba logs its dictionary build at DEBUG to stderr; keep it quiet. The dictionary itself is still built
# lazily, on the first jieba.cut().
jieba.setLogLevel(logging.WARNING)


def default_jieba_cache_dir() -> Path:
    """The user's own cache folder for jieba: $XDG_CACHE_HOME/glmtune/jieba, else ~/.cache/glmtune/jieba."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "glmtune" / "jieba"


def use_private_jieba_cache(folder: str | Path | None = None, tokenizer: Any = None) -> Path:
    """Point jieba's dictionary cache (`tokenizer`, default jieba's global one) at a folder only this user writes.

    jieba's default, jieba.cache in the shared temp folder, can be planted or replaced by any other user of the
    machine, and jieba loads it unchecked. `folder` None: default_jieba_cache_dir(), or a fresh private temp
    folder when that cannot be made (e.g. a read-only home). Effective until the dictionary is loaded.
    """
    tokenizer = tokenizer or jieba.dt
    try:
        path = Path(folder) if folder else default_jieba_cache_dir()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        if folder:
            raise
        path = Path(tempfile.mkdtemp(prefix="glmtune-jieba-"))  # mode 0o700
    tokenizer.tmp_dir = str(path)
    return path


use_private_jieba_cache()

ROUGE_KEYS = ("rouge-1", "rouge-2", "rouge-l")
METRIC_KEYS = (*ROUGE_KEYS, "bleu-4", "bleu-4-char")

# method3 (NIST geometric smoothing) is what both the demo and LLaMA-Factory use.
_SMOOTH = SmoothingFunction().method3


def _is_blank(tokens: Sequence[str]) -> bool:
    # LLaMA-Factory's test: rouge_chinese drops whitespace, so whitespace-only tokens leave nothing to score.
    return not " ".join(tokens).split()


def score_pair(prediction: str, reference: str) -> dict[str, float]:
    """Score one prediction against one reference; keys are METRIC_KEYS.

    Both texts are stripped first, as the demo strips decoded text. An empty or whitespace-only side
    scores 0 everywhere, where rouge_chinese would raise "Hypothesis is empty." / "Reference is empty.".
    """
    prediction, reference = prediction.strip(), reference.strip()
    pred_tokens = list(jieba.cut(prediction))
    ref_tokens = list(jieba.cut(reference))
    if _is_blank(pred_tokens) or _is_blank(ref_tokens):
        return dict.fromkeys(METRIC_KEYS, 0.0)

    rouge = Rouge().get_scores(" ".join(pred_tokens), " ".join(ref_tokens))[0]
    scores = {key: round(rouge[key]["f"] * 100, 4) for key in ROUGE_KEYS}
    # The demo leaves word-level BLEU on a 0-1 scale; kept so numbers match it.
    scores["bleu-4"] = float(sentence_bleu([ref_tokens], pred_tokens, smoothing_function=_SMOOTH))
    char_bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=_SMOOTH)
    scores["bleu-4-char"] = round(float(char_bleu) * 100, 4)
    return scores


def corpus_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean of each score_pair metric over all pairs, plus "num_samples" and "num_empty_predictions".

    Empty predictions stay in the mean (as zeros), so a model that often says nothing is penalised.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} != {len(references)}"
        )
    totals = dict.fromkeys(METRIC_KEYS, 0.0)
    for prediction, reference in zip(predictions, references):
        for key, value in score_pair(prediction, reference).items():
            totals[key] += value
    count = len(predictions)
    result = {key: (total / count if count else 0.0) for key, total in totals.items()}
    result["num_samples"] = count  # ints: counts read better in the JSON report
    result["num_empty_predictions"] = sum(1 for p in predictions if not p.strip())
    return result
