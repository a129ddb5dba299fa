"""The report's out-of-date check as pure logic: which command lines ask for a report, and a dry run's job table."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from glmtune.report_check import jobs_to_run, report_requested, stale_report_problem


def test_a_report_is_asked_for_by_its_options_only() -> None:
    assert report_requested(["snakemake", "--report", "report.html"])
    assert report_requested(["snakemake", "--report=report.html", "--configfile", "my.yaml"])
    assert report_requested(["snakemake", "--reporter", "html"])
    assert not report_requested(["snakemake", "--cores", "8", "results/report/data.html"])
    assert not report_requested(["snakemake", "--report-html-stylesheet-path", "s.css"])
    assert not report_requested(["snakemake", "--report", "r.html", "--report-after-run"])  # the jobs run first


def test_the_jobs_of_a_dry_run_are_read_from_its_table() -> None:
    output = """Job stats:
job                 count
----------------  -------
merge_splits            1
train                   2
all                     1
total                   4

Reasons:
    params have changed since last execution:
        merge_splits
"""
    assert jobs_to_run(output) == {"merge_splits": 1, "train": 2, "all": 1}
    assert jobs_to_run("Building DAG of jobs...\\nNothing to be done (all requested files are present and up to date).") == {}


def test_a_missing_file_is_named_as_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not as "results of an earlier config": a data page deleted is missing, whatever the dry run says of it."""
    monkeypatch.chdir(tmp_path)
    Path("metrics.html").write_text("x")
    dry_run = "Job stats:\njob            count\n-----------  -------\nreport_data        1\ntotal              1\n"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, dry_run, ""))
    problem = stale_report_problem(["metrics.html", "data.html"], "Snakefile", [], [], "snakemake data.html")
    assert problem == ("snakemake --report embeds the files as they are; missing: data.html; jobs would make or update "
                       "them for this config: report_data (1). Build them first: snakemake data.html (or add "
                       "--report-after-run), then make the report again")


def test_the_dry_run_takes_the_command_lines_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile's settings (its rerun triggers) decide what is out of date, as in the run the report stands for."""
    monkeypatch.chdir(tmp_path)
    Path("metrics.html").write_text("x")
    commands = []

    def dry_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, "Nothing to be done (all requested files are present).", "")

    monkeypatch.setattr(subprocess, "run", dry_run)
    assert stale_report_problem(["metrics.html"], "Snakefile", [], [], "cmd", ["--profile", "profiles/slurm"]) is None
    assert commands[0][-2:] == ["--profile", "profiles/slurm"] and "--dry-run" in commands[0]
