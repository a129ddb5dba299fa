"""The README's Layout section names every module of the package and every rule, so a newcomer finds each room."""

from __future__ import annotations

import ast
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


# The stage folders in the DAG's order: a folder may import an earlier one (and the package's top-level modules), never a
# later one, so data preparation runs without torch models and a stage is tested without the stages after it.
STAGE_ORDER = ("data", "model", "tokenize", "train", "evaluate", "export", "bench")


def package_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at the top or inside a function: both are a dependency)."""
    root = REPO / "src"
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (root / "glmtune").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("glmtune"):
                for alias in node.names:  # `from glmtune.x import y` names module glmtune.x.y when there is one
                    targets.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name in modules)
        graph[name] = {t for t in targets if t in modules and t not in (name, "glmtune")}
    return graph


def test_no_stage_folder_imports_a_later_stage() -> None:
    def stage(module: str) -> int:  # -1 for a top-level module
        parts = module.split(".")
        return STAGE_ORDER.index(parts[1]) if len(parts) > 2 else -1

    upward = []
    for module, targets in package_imports().items():
        for target in targets:
            if stage(module) >= 0 and stage(target) > stage(module):
                upward.append(f"{module} -> {target}")
    assert upward == []
    assert (REPO / "src/glmtune/data").is_dir() and len(STAGE_ORDER) == len(
        {p.name for p in (REPO / "src/glmtune").iterdir() if p.is_dir() and (p / "__init__.py").is_file()})


def test_no_import_cycle_between_files() -> None:
    graph, cycles = package_imports(), []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, [*path, target], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module], done)
    assert cycles == []
