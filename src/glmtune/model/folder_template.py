"""A model folder's own chat template against the layout training uses (model.template's family).

Training encodes every conversation with the family's layout (glmtune.chat_template), and the merged model ships
the tokenizer of the prepared folder. A folder whose template lays conversations out otherwise (a model fine-tuned
elsewhere with a default system prompt baked in, an edited template, none at all) would give `apply_chat_template`
on the merged model other text than training saw, with nothing to say so. Such a folder gets the family's template
instead (`chat_template.jinja`, which transformers reads before tokenizer_config.json's), and the job warns with the
first difference. A folder whose template renders every probe alike keeps its own (one glmtune exported). The official
GLM-4 template is replaced too: it renders only OpenAI-style tools, and drops the plain function objects training
stores (its python, browser and cogview tools are never trained).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from glmtune.chat_template import get_template

log = logging.getLogger(__name__)

TEMPLATE_FILE = "chat_template.jinja"
_WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "查询天气", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
# Conversations as users hand them to apply_chat_template, each with and without the generation prompt: a plain
# turn, a system prompt, several turns, contents with edge whitespace (training keeps it: a template that trims
# differs), and a tool call with its observation, its tool given OpenAI-style and as the plain function object
# that the training data and predictions.jsonl store (the official GLM-4 template renders only the former).
PROBES: dict[str, list[dict[str, Any]]] = {
    "one turn": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}],
    "system prompt": [{"role": "system", "content": "你是一个助手。"}, {"role": "user", "content": "类型#裙"},
                      {"role": "assistant", "content": "这款裙子简约大方。"}],
    "several turns": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": "再说一遍"}, {"role": "assistant", "content": "Hello again."}],
    "edge whitespace": [{"role": "system", "content": " 你是一个助手。\n"}, {"role": "user", "content": "\n写一首诗 \n"},
                        {"role": "assistant", "content": "  床前明月光\n\n"}],
    "tool call": [{"role": "system", "content": "", "tools": [_WEATHER]}, {"role": "user", "content": "北京天气？"},
                  {"role": "assistant", "content": '{"city": "北京"}', "metadata": "get_weather"},
                  {"role": "observation", "content": '{"temp": 25}'}, {"role": "assistant", "content": "北京25度。"}],
}
PROBES["tool call, plain function"] = [{**PROBES["tool call"][0], "tools": [_WEATHER["function"]]},
                                       *PROBES["tool call"][1:]]


def template_difference(tokenizer: Any, family: str) -> str | None:
    """None when the tokenizer's own chat template renders every probe as the family's layout does; else where the
    first one differs (or that the folder has no template, or that it fails on a probe)."""
    ours = get_template(family).jinja()
    if not getattr(tokenizer, "chat_template", None):
        return "it has no chat template"
    for name, messages in PROBES.items():
        for prompt in (False, True):
            probe = messages[:-1] if prompt else messages
            expected = tokenizer.apply_chat_template(probe, chat_template=ours, tokenize=False, add_generation_prompt=prompt)
            try:
                own = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=prompt)
            except Exception as err:  # a template's own raise_exception, or a jinja error on a role it lacks
                return f"its template fails on the {name} probe ({type(err).__name__}: {err})"
            if own != expected:
                at = next((i for i, (a, b) in enumerate(zip(own, expected)) if a != b), min(len(own), len(expected)))
                return (f"the {name} probe{' with the generation prompt' if prompt else ''} differs at character {at}: "
                        f"its template writes {own[max(0, at - 20):at + 40]!r} where {family} writes "
                        f"{expected[max(0, at - 20):at + 40]!r}")
    return None


def family_template_files(name: str, source: Path, family: str | None) -> dict[str, str]:
    """The files a prepared native folder holds instead of links: the family's chat template where the folder's own
    lays conversations out otherwise (warned, with the first difference); none when it agrees, when no family is
    given, or when the folder has no tokenizer to compare (the stages that need one say so)."""
    if family is None:
        return {}
    from glmtune.model.loading import load_tokenizer

    try:
        tokenizer = load_tokenizer(source, trust_remote_code=False)
    except (OSError, ValueError):
        return {}
    difference = template_difference(tokenizer, family)
    if difference is None:
        return {}
    log.warning("model %r: %s's chat template is not the %s layout training uses: %s. The prepared model gets the %s "
                "template (%s), so the adapter and the merged model render for apply_chat_template what training "
                "saw; check that model.template: %s is this model's family", name, source, family, difference, family,
                TEMPLATE_FILE, family)
    return {TEMPLATE_FILE: get_template(family).jinja()}
