"""The loss curve a person looks at after training."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training nodes
import matplotlib.pyplot as plt  # noqa: E402

from glmtune.io import atomic_path  # noqa: E402


def one_point(points: list[tuple[int, float]]) -> str | None:
    """A marker where a line has one point (a run of one logged step), which a line alone would not show."""
    return "o" if len(points) == 1 else None


def plot_loss(log_path: str | Path, plot_path: str | Path) -> None:
    rows = [json.loads(line) for line in Path(log_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), marker=one_point(train), label="training loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Fine-tuning loss")
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    else:  # say so rather than draw empty axes
        ax.text(0.5, 0.5, "no loss logged: the run trained no step",
                ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    with atomic_path(plot_path) as tmp:  # a kill never leaves half a PNG
        fig.savefig(tmp)
    plt.close(fig)


def plot_loss_curves(logs: dict[str, str | Path], plot_path: str | Path) -> None:
    """Every run's training loss (line) and validation loss (dots, same colour) in one plot, for the comparison."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, log_path in logs.items():
        rows = [json.loads(line) for line in Path(log_path).read_text(encoding="utf-8").splitlines() if line.strip()]
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
        line = ax.plot(*zip(*train), marker=one_point(train), label=f"{name} (training)")[0] if train else None
        if evals:
            ax.plot(*zip(*evals), "o--", color=line.get_color() if line else None, label=f"{name} (validation)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Fine-tuning loss by run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(plot_path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
