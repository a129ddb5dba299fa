"""Reject reasons grouped by kind, for the convert job's errors and the data page.

A reason names its numbers ("an answer has 55 characters, fewer than min_answer_chars 60", "line 7: ..."): counted
text by text, 51 rejects of one rule split into dozens of one-or-few counts and the top three hide the cause. So
reasons are counted by their shape (each number a placeholder), each group shown by its first reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class ReasonGroup:
    example: str  # the first reason of the group, as written
    count: int
    first_at: str | None  # where its first reject is (file line, record index)
    numbers_vary: bool  # the group holds reasons that differ in their numbers

    def __str__(self) -> str:
        vary = " (numbers vary)" if self.numbers_vary else ""
        where = f" (first at {self.first_at})" if self.first_at else ""
        return f"{self.count} x {self.example}{vary}{where}"


def common_reasons(rejects: Iterable[Mapping[str, Any]], limit: int) -> list[ReasonGroup]:
    """The `limit` most common kinds of reason among `rejects` (each a rejects-file row: `reason`, `where`)."""
    counts: Counter[str] = Counter()
    first: dict[str, Mapping[str, Any]] = {}
    texts: dict[str, set[str]] = {}
    for reject in rejects:
        reason = str(reject.get("reason", "?"))
        kind = NUMBER.sub("#", reason)
        counts[kind] += 1
        first.setdefault(kind, reject)
        texts.setdefault(kind, set()).add(reason)
    return [ReasonGroup(str(first[kind].get("reason", "?")), count, first[kind].get("where"), len(texts[kind]) > 1)
            for kind, count in counts.most_common(limit)]
