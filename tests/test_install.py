"""The install lines the README gives work as pasted: the CPU one takes torch's CPU build, and every extra that
installs packages goes through constraints.txt, which pins them (CI installs the SLURM plugins from it too)."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
    return dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))


def test_quick_start_gives_a_cpu_line_and_a_gpu_line_each_complete() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    installs = [line for block in blocks for line in block.splitlines() if "pip install torch" in line]
    cpu = [line for line in installs if CPU_INDEX in line]
    gpu = [line for line in installs if CPU_INDEX not in line]
    assert len(cpu) == 1 and len(gpu) == 1, installs
    cpu_intro = section.split(cpu[0])[0].rsplit("```bash", 1)[0].strip().rsplit("\n\n", 1)[-1]
    assert "without a GPU" in cpu_intro and "CPU build" in cpu_intro  # the line the header says comes first
    for line, extras in ((cpu[0], "dev,deepspeed"), (gpu[0], "dev,deepspeed,liger,qlora")):  # the GPU's kernels
        assert line.startswith("python3 -m venv .venv") and f'pip install -c constraints.txt -e ".[{extras}]"' in line


def test_the_slurm_extra_is_pinned_in_constraints_and_installed_through_them() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]["slurm"]
    names = {re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0] for requirement in extra}
    assert names == {"snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep"}
    assert names <= set(pins())
    lines = [line for line in README.splitlines() if '".[slurm]"' in line]
    assert lines and all("pip install -c constraints.txt" in line for line in lines), lines
    ci = (REPO / ".ci/run").read_text(encoding="utf-8")
    install = re.search(r"pip install [^\n]*--target \.venv/slurm-plugins[^\n]*\\\n[^\n]*", ci)
    assert install and "-c constraints.txt" in install.group(0) and "==" not in install.group(0)
    assert names <= set(install.group(0).split())
