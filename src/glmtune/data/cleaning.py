"""Per-dataset cleaning of canonical conversations, each step counted.

The steps come from the GLM-4 LoRA tutorial on EmoLLM data (remove the 🐳 emoji, drop a
self-introduction first line) and common practice (empty turns, length filters). Rules act on message
content only (a system message's tools are left as they are). A conversation that cleaning empties or
filters out is not lost silently: the caller writes it to the rejects file, and re-validates what is left.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from typing import Any

import regex

from glmtune.data.conversation import is_blank
from glmtune.data_settings import CleanSettings


# LLaMA-Factory's identity.json writes the assistant's name and author as {{name}} / {{author}}, to be filled in
# before training; left as they are, the model learns to introduce itself as "{{name}}".
PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}")


class Dropped(Exception):
    """Cleaning removed the whole conversation; the message is the reason."""


def placeholders_in(messages: Sequence[dict[str, Any]]) -> set[str]:
    """The template placeholders ({{name}}) left in the messages' text."""
    return {found for msg in messages for found in PLACEHOLDER.findall(msg["content"])}


def _is_empty(msg: dict[str, Any]) -> bool:
    """A question, answer or tool call that shows no text (glmtune.data.conversation.is_blank). An empty observation
    is a tool's empty result: ChatGLM3's template writes it, GLM-4's stops the tokenize job naming the record."""
    return msg["role"] in ("user", "assistant") and is_blank(msg["content"])


def _character_bounds(content: str) -> list[int]:
    """Where each user-perceived character (extended grapheme cluster) of `content` starts, and its end: an emoji with
    its skin tone, its zero-width-joined parts and presentation selector is one; so is a letter with combining marks.
    A CRLF, one cluster to Unicode, stays two here: removing \r must not take the line break with it."""
    bounds = [0]
    for cluster in regex.finditer(r"\X", content):
        if cluster.group() == "\r\n":
            bounds.append(cluster.start() + 1)
        bounds.append(cluster.end())
    return bounds


def _without(content: str, text: str) -> str:
    """`content` without `text`; where `text` begins a character on screen, without the rest of that character too:
    removing 👍 from 👍🏽 leaves nothing, not a lone skin tone; 🏃 from 🏃‍♀️ leaves no joiner and ♀️; ❤ from ❤️ no
    invisible presentation selector. A string inside a character (a skin tone, U+FE0F, a vowel sign) goes alone: removing
    🏻 from 👍🏻 leaves 👍, U+FE0F from 带️ leaves 带 (and the selector right after it goes with it, as before)."""
    if text not in content:
        return content
    bounds = _character_bounds(content)
    starts = set(bounds)
    kept, done = [], 0
    while (found := content.find(text, done)) != -1:
        end = found + len(text)
        if found in starts:
            end = bounds[bisect_left(bounds, end)]
        elif not text.endswith("\ufe0f") and content.startswith("\ufe0f", end):
            end += 1
        kept.append(content[done:found])
        done = end
    return "".join(kept) + content[done:]


def _remove_empty_turns(messages: list[dict[str, Any]], counts: Counter[str]) -> list[dict[str, Any]]:
    """Drop each exchange, a user message and all that answers it up to the next user message (answers, tool calls,
    their observations), whose question or any answer is empty. Dropping the empty message alone would leave a
    question unanswered, or an observation after a plain answer, which the model would learn to ask for without a
    call. Before the first user message, only an empty message itself goes."""
    exchanges: list[list[dict[str, Any]]] = [[]]
    for msg in messages:
        if msg["role"] == "user":
            exchanges.append([])
        exchanges[-1].append(msg)
    preamble, *asked = exchanges
    kept = [msg for msg in preamble if not _is_empty(msg)]
    if len(kept) < len(preamble):
        counts["empty_turns_dropped"] += len(preamble) - len(kept)
    for exchange in asked:
        if any(map(_is_empty, exchange)):
            counts["empty_turns_dropped"] += 1
        else:
            kept.extend(exchange)
    return kept


def _drop_emptied_system(before: Sequence[dict[str, Any]], after: list[dict[str, Any]], counts: Counter[str]) -> list[dict[str, Any]]:
    """Drop a system message that cleaning left without text (one with tools keeps them and stays)."""
    kept = []
    for old, new in zip(before, after):
        if new["role"] == "system" and not is_blank(old["content"]) and is_blank(new["content"]) and not new.get("tools"):
            counts["empty_system_dropped"] += 1
            continue
        kept.append(new)
    return kept


def _without_intro_line(answer: str, phrase: str, counts: Counter[str]) -> str:
    """The answer without its first line when that line holds `phrase` (the tutorial's self-introduction). The
    phrase further down ("很好，我是说…" in the answer's body) leaves the answer whole: dropping an unrelated first line
    would lose text the user gave. Either non-drop is counted, so a rule doing nothing shows."""
    first, newline, rest = answer.partition("\n")
    if phrase not in first:
        counts["intro_phrase_not_on_first_line"] += 1
        return answer
    if not newline:  # a one-line answer has no introduction line to drop
        counts["intro_line_matched_one_line_answer"] += 1
        return answer
    counts["intro_lines_dropped"] += 1
    return rest


def clean_conversation(messages: Sequence[dict[str, Any]], rules: CleanSettings, counts: Counter[str],
                       removed: Counter[str] | None = None) -> list[dict[str, Any]]:
    """Apply the rules in order; return the cleaned messages or raise Dropped with the reason. `removed` counts the
    messages each of `remove_strings` changed (the report's one counter cannot tell a string that matched nothing)."""
    cleaned = [dict(msg) for msg in messages]
    for msg in cleaned:
        original = msg["content"]
        for text, replacement in rules.replace.items():
            msg["content"] = msg["content"].replace(text, replacement)
        if msg["content"] != original:
            counts["messages_with_replacements"] += 1
        replaced = msg["content"]
        for text in rules.remove_strings:
            before = msg["content"]
            msg["content"] = _without(before, text)
            if removed is not None and msg["content"] != before:
                removed[text] += 1
        if msg["content"] != replaced:
            counts["messages_with_strings_removed"] += 1
        if rules.drop_intro_line and msg["role"] == "assistant" and rules.drop_intro_line in msg["content"]:
            msg["content"] = _without_intro_line(msg["content"], rules.drop_intro_line, counts)
    cleaned = _drop_emptied_system(messages, cleaned, counts)
    if rules.drop_empty_turns:
        cleaned = _remove_empty_turns(cleaned, counts)
    if not any(m["role"] == "assistant" and m.get("loss") for m in cleaned) or not any(m["role"] == "user" for m in cleaned):
        counts["dropped_empty"] += 1
        raise Dropped("cleaning: no exchange with a non-empty question and answer is left")
    answers = [len(m["content"]) for m in cleaned if m["role"] == "assistant" and m.get("loss")]
    if min(answers) < rules.min_answer_chars:
        counts["dropped_short"] += 1
        raise Dropped(f"cleaning: an answer has {min(answers)} characters, fewer than min_answer_chars {rules.min_answer_chars}")
    total = sum(len(m["content"]) for m in cleaned)
    if rules.max_chars is not None and total > rules.max_chars:
        counts["dropped_long"] += 1
        raise Dropped(f"cleaning: {total} characters, more than max_chars {rules.max_chars}")
    return cleaned


def rules_that_matched_nothing(rules: CleanSettings, counts: Counter[str], removed: Counter[str]) -> list[str]:
    """What to warn of a dataset's rules that changed nothing in any record: a misspelt string, or an intro phrase
    that `replace` (applied first) had already rewritten, would otherwise pass as a rule at work."""
    problems = []
    if unmatched := [text for text in rules.remove_strings if not removed[text]]:
        problems.append(f"clean.remove_strings {', '.join(map(repr, unmatched))} found in no message: nothing removed")
    intro = ("intro_lines_dropped", "intro_phrase_not_on_first_line", "intro_line_matched_one_line_answer")
    if rules.drop_intro_line and not any(counts[key] for key in intro):
        problems.append(f"clean.drop_intro_line {rules.drop_intro_line!r} is in no answer: nothing dropped"
                        + (" (clean.replace runs first: look for the phrase as replace leaves it)" if rules.replace else ""))
    return problems
