"""The README's Layout section names every module of the package and every rule, so a newcomer finds each room."""

from __future__ import annotations

import re

from conftest import REPO


def layout() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]


def test_every_module_has_its_line() -> None:
    section, listed = layout(), set()
    folder = ""
    for line in section.splitlines():
        if match := re.match(r"^  (\w+)/(\s|$)", line):
            folder = match[1] + "/"
        elif match := re.match(r"^  (  )?(\w+\.py)\s", line):  # a folder's modules are indented two more
            listed.add((folder if match[1] else "") + match[2])
    modules = {str(path.relative_to(REPO / "src/glmtune")) for path in (REPO / "src/glmtune").rglob("*.py")
               if path.name != "__init__.py"}
    assert modules == listed


def test_every_rule_is_named() -> None:
    rules_text = "".join(path.read_text(encoding="utf-8")
                         for path in [REPO / "workflow/Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))])
    rules = set(re.findall(r"^rule (\w+):", rules_text, flags=re.M)) | set(re.findall(r"^use rule \w+ as (\w+)", rules_text, flags=re.M))
    named = set(re.findall(r"\w+", layout().split("workflow/scripts/*.py")[0]))
    assert len(rules) > 15 and rules <= named, sorted(rules - named)
