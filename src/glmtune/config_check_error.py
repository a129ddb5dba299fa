"""The error every pre-job check raises (glmtune.config_checks, glmtune.model_checks), and the helpers they share:
where a relative path was looked for, and a key the chosen source or format would not read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class ConfigCheckError(ValueError):
    """The config points at something that is not there, or its keys disagree; the message starts with `config:`.
    `path`: the path the config gave, where one is not there (check_config then says where it was looked for)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


def where_looked(path: str, config_dirs: Sequence[str | Path]) -> str:
    """A relative path is read from the working directory (where snakemake runs), not from the config file's folder:
    say so, and name a --configfile folder the path would have been found in (found, not taken: refuse, not guess)."""
    if Path(path).is_absolute():
        return ""
    cwd = Path.cwd().resolve()
    beside = [Path(d) for d in config_dirs if Path(d).resolve() != cwd and (Path(d) / path).exists()]
    also = (f"; {path} is there from {beside[0]}, the folder of a --configfile: write it from the working directory "
            "or as an absolute path") if beside else ""
    return f" (a relative path is read from the working directory, {cwd}{also})"


def check_read(where: str, section: Mapping[str, Any], chooser: str, read_by: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse a key of `section` that its `chooser` (source, format) does not read: the user meant something by it."""
    chosen = section.get(chooser)
    for key, readers in read_by.items():
        if section.get(key) is not None and chosen not in readers:
            readers_text = " or ".join(f"{chooser}: {reader}" for reader in readers)
            raise ConfigCheckError(f"config: {where}.{key} is read only with {readers_text}, and this one's {chooser} "
                                   f"is {chosen}, which would ignore it: set {where}.{chooser} to the one meant, or "
                                   f"remove {key} (`{key}: null` in a later file or --config)")
