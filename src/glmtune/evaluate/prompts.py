"""The test prompts as generation gets them: cut to the tokenize limit as the demos cut them, never silently.

A cut prompt keeps its start and loses its end, the question included, so its answer says little about the model:
every cut is counted (scores.json `prompts_cut`) and logged with the lengths, and when more than
tokenize.max_truncated_ratio of the prompts would be cut, evaluation stops before generating, naming the setting.
The room the answers get is checked too: a reference longer than evaluate.max_new_tokens can never be matched whole,
so such answers are counted (scores.json `answers_longer_than_max_new_tokens`) and logged with the lengths; a warning,
not a stop, since a short limit is a deliberate choice for a quick look (and the demos' own default cuts nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glmtune.chat_template import ChatTemplate, answer_ids, cut_prompt, prompt_parts
from glmtune.settings import EvaluateSettings, TokenizeSettings

log = logging.getLogger(__name__)


def generation_prompts(tokenizer: Any, template: ChatTemplate, conversations: Sequence[Sequence[dict[str, Any]]],
                 settings: TokenizeSettings, test_path: str | Path) -> tuple[list[list[int]], int]:
    """(the prompts for generation, how many were cut): each conversation's messages before the answer, cut to
    settings.prompt_limit tokens."""
    parts = [prompt_parts(tokenizer, template, messages) for messages in conversations]
    limit = settings.prompt_limit
    lengths = [len(ids) for ids, _ in parts]
    cut = sum(length > limit for length in lengths)
    if cut:
        check_cut(cut, lengths, settings, test_path)
    return [cut_prompt(ids, header, limit) for ids, header in parts], cut


def check_cut(cut: int, lengths: list[int], settings: TokenizeSettings, test_path: str | Path) -> None:
    """Log the cut with the lengths; stop when it is more than tokenize.max_truncated_ratio of the prompts."""
    limit, setting, share = settings.prompt_limit, settings.prompt_setting, cut / len(lengths)
    message = (f"{test_path}: {cut} of {len(lengths)} test prompts ({share:.0%}) are longer than {limit} tokens "
               f"({setting}) and lose their end, the question included; prompt {_lengths_advice(lengths, limit, setting)}")
    if share > settings.max_truncated_ratio:
        raise ValueError(f"evaluate: {message}. That is more than tokenize.max_truncated_ratio "
                         f"{settings.max_truncated_ratio}: raise {setting} (or tokenize.max_truncated_ratio)")
    log.warning("%s", message)


def check_answer_room(tokenizer: Any, template: ChatTemplate, answers: Sequence[dict[str, Any]],
                      settings: EvaluateSettings, test_path: str | Path) -> int:
    """How many reference answers are longer than evaluate.max_new_tokens (in the tokens a model writes for them,
    the header's newline included: chat_template.answer_ids), logged with the lengths and the limit that would hold
    them: their scores measure the limit as much as the model."""
    limit = settings.max_new_tokens
    lengths = [len(answer_ids(tokenizer, template, answer)) for answer in answers]
    longer = sum(length > limit for length in lengths)
    if not longer:
        return 0
    log.warning("%s", f"{test_path}: {longer} of {len(lengths)} test answers ({longer / len(lengths):.0%}) are longer "
                f"than evaluate.max_new_tokens {limit} tokens, so no prediction can match them whole; answer "
                + _lengths_advice(lengths, limit, "evaluate.max_new_tokens"))
    return longer


def _lengths_advice(lengths: Sequence[int], limit: int, setting: str) -> str:
    """'lengths p50 …, p95 …, max …; <setting>: N keeps …': the lengths over a limit, and the limit to write."""
    p50, p95, longest = (int(v) for v in np.percentile(lengths, [50, 95, 100], method="higher"))
    return (f"lengths p50 {p50}, p95 {p95}, max {longest}; {setting}: "
            + (f"{p95} keeps 95 % whole" if p95 > limit else f"{longest} keeps them all"))
