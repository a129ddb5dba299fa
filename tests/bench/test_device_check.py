"""tools/device_check.sh, the one prepared GPU check, runs its steps on the CPU with --tiny: a GPU session gets one
try at it, so a script broken by a change elsewhere must show here first."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STEPS = ["gpu-tests", "bench-train-config", "bench-train-long", "bench-train-kernels", "bench-eval"]


def test_the_device_check_runs_every_step_on_a_tiny_model(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(REPO / "tools" / "device_check.sh"), "--tiny"], env=env, capture_output=True,
                            text=True, timeout=1200)
    table = (tmp_path / "gpu_table.md").read_text(encoding="utf-8")
    assert result.returncode == 0, result.stderr[-2000:]
    exits = dict(re.findall(r"^### (\S+) \(exit (\d+),", table, flags=re.M))
    assert exits == dict.fromkeys(STEPS, "0"), table
    assert table.count("| recipe |") == 4, table  # three bench-train tables and bench-eval's
    for recipe in ("| demo |", "| config |", "| long |", "| config-plain-loss |", "| glmtune: length-sorted |"):
        assert recipe in table, f"{recipe} missing from\n{table}"
    if importlib.util.find_spec("bitsandbytes") is not None:  # the QLoRA memory case runs on a CPU too
        assert "| long-qlora |" in table, table
