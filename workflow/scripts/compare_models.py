"""Snakemake entry: the comparison of the base and every run (metrics.json, Markdown, HTML) and their loss curves."""
from pathlib import Path

from glmtune.evaluate.compare import compare_runs
from glmtune.logs import job_logging
from glmtune.train.plots import plot_loss_curves

with job_logging(snakemake.log[0]):
    inp, out, runs = snakemake.input, snakemake.output, snakemake.params.runs
    files = {
        run: {"method": snakemake.params.methods[run], "scores": scores, "log": log,
              "summary": str(Path(trained, "train_summary.json")), "benchmark": benchmark,
              "trained_by": snakemake.params.trained_by[run]}
        for run, scores, log, trained, benchmark in zip(runs, inp.scores, inp.logs, inp.trained, inp.benchmarks)
    }
    compare_runs(inp.base, files, out.metrics, out.table, out.html)
    # One curve a training (a run evaluating another run's model has that run's curve)
    plot_loss_curves({run: files[run]["log"] for run in runs if files[run]["trained_by"] == run}, out.curves)
