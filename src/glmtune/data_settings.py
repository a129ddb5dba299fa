"""Typed settings of the data sections: datasets.<name> (with its clean and demo parts) and split.

The same pattern as glmtune.settings: frozen dataclasses without field defaults, built by `from_config` from a section
that came validated through workflow/schemas/config.schema.yaml (which fills in every default). A few dataset keys have
no default in the schema because they are given or not (format, files, url, ...): `UNSET` names them, and an absent
one is None ("not given"), never a value of its own.

Pure Python (no torch): the workflow builds these while building the job graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from glmtune.settings import S, Section


class GivenOrNot(Section):
    """A section with keys the schema gives no default: absent means not given (None)."""

    UNSET: tuple[str, ...] = ()

    @classmethod
    def from_config(cls: type[S], section: Mapping[str, Any], where: str | None = None) -> S:
        if isinstance(section, Mapping):
            section = {**dict.fromkeys(cls.UNSET), **section}  # type: ignore[attr-defined]
        return super().from_config(section, where)  # type: ignore[misc]


@dataclasses.dataclass(frozen=True)
class CleanSettings(Section):
    """datasets.<name>.clean: the cleaning steps (glmtune.data.cleaning)."""

    SECTION = "datasets.<name>.clean"

    replace: dict[str, str]  # applied first: e.g. LLaMA-Factory's identity.json {{name}} / {{author}}
    remove_strings: tuple[str, ...]
    drop_intro_line: str | None  # e.g. "好，我是": an answer whose first line holds it loses that line
    drop_empty_turns: bool
    min_answer_chars: int
    max_chars: int | None

    def rule_counters(self) -> dict[str, int]:
        """The counter of each rule that is set beyond the defaults, at 0: the dataset's report then shows a rule that
        matched nothing as 0 rather than leaving it out (as if it had not been set)."""
        rules = {"messages_with_replacements": bool(self.replace), "messages_with_strings_removed": bool(self.remove_strings), "intro_lines_dropped": bool(self.drop_intro_line),
                 "dropped_short": self.min_answer_chars > 0, "dropped_long": self.max_chars is not None}
        return {name: 0 for name, active in rules.items() if active}


@dataclasses.dataclass(frozen=True)
class DemoSettings(Section):
    """datasets.<name>.demo: size and seed of the generated AdvertiseGen-style data (source: demo)."""

    SECTION = "datasets.<name>.demo"

    train_rows: int
    dev_rows: int
    seed: int


@dataclasses.dataclass(frozen=True)
class ConvertSettings(GivenOrNot):
    """What the convert stage takes of a dataset (common.smk's convert_options): the converters' options only where
    given."""

    SECTION = "datasets.<name>"
    UNSET = ("columns", "tags")

    encoding: str
    on_invalid: str  # error | skip
    system: str | None
    dedupe: bool
    clean: CleanSettings
    columns: Mapping[str, str | None] | None
    tags: Mapping[str, str | None] | None
    max_reject_ratio: float

    def converter_options(self) -> dict[str, Any]:
        """The converters' own keys (glmtune.data.formats.register's `options`: the LLaMA-Factory column and tag
        renames), where given."""
        from glmtune.data.formats import option_keys

        return {key: getattr(self, key) for key in option_keys() if getattr(self, key) is not None}


@dataclasses.dataclass(frozen=True)
class FetchSettings(GivenOrNot):
    """What the fetch_dataset stage takes of a dataset (fetch.smk's spec)."""

    SECTION = "datasets.<name>"
    UNSET = ("url",)

    source: str
    url: str | None
    sha256: str | None
    demo: DemoSettings


@dataclasses.dataclass(frozen=True)
class DatasetSettings(GivenOrNot):
    """One datasets.<name> entry, after config.smk's check_config has filled a llamafactory entry's format, columns, tags and files."""

    SECTION = "datasets.<name>"
    UNSET = ("format", "dataset_info", "name", "columns", "tags", "files", "url")

    source: str
    format: str | None
    dataset_info: str | None
    name: str | None
    columns: Mapping[str, str | None] | None
    tags: Mapping[str, str | None] | None
    files: Mapping[str, str | tuple[str, ...]] | None
    url: str | None
    sha256: str | None
    demo: DemoSettings
    encoding: str
    on_invalid: str
    system: str | None
    dedupe: bool
    max_reject_ratio: float
    max_samples: int | None
    sample_ratio: float | None
    clean: CleanSettings


@dataclasses.dataclass(frozen=True)
class SplitSettings(Section):
    """split: how the converted files become train / validation / test (glmtune.data.split)."""

    SECTION = "split"

    validation_ratio: float
    test_ratio: float
    seed: int
    dedupe_across_datasets: bool


def given_files(entry: str | Sequence[str]) -> list[str]:
    """The files of one `files` entry: a path, or a list of them read as one file (a sharded dataset's files)."""
    return [entry] if isinstance(entry, str) else list(entry)
