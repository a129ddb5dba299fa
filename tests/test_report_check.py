"""The report's out-of-date check as pure logic: which command lines ask for a report, and a dry run's job table."""

from __future__ import annotations

from glmtune.report_check import jobs_to_run, report_requested


def test_a_report_is_asked_for_by_its_options_only() -> None:
    assert report_requested(["snakemake", "--report", "report.html"])
    assert report_requested(["snakemake", "--report=report.html", "--configfile", "my.yaml"])
    assert report_requested(["snakemake", "--reporter", "html"])
    assert not report_requested(["snakemake", "--cores", "8", "results/report/data.html"])
    assert not report_requested(["snakemake", "--report-html-stylesheet-path", "s.css"])


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
