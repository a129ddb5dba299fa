"""`snakemake --report` builds nothing: it embeds the files as they are, made by whatever config made them. After a
config edit that left them out of date (a run dropped from the config still in the table, the data page of the
splits before an edit) it embedded them without a word. Before the report is made, a dry run of the files it shows
tells whether a job would update them; if one would, the report is refused, naming the jobs."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def report_requested(argv: Sequence[str]) -> bool:
    """Whether the snakemake command line asks for a report of the files as they are (`--report [file]`, `--reporter
    <plugin>`); not with `--report-after-run`, which runs the jobs first."""
    asked = any(arg in ("--report", "--reporter") or arg.startswith(("--report=", "--reporter=")) for arg in argv[1:])
    return asked and "--report-after-run" not in argv


def jobs_to_run(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run's output: rule -> jobs it would run (empty when nothing is to be done)."""
    table = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", dry_run_output, re.S)
    if table is None:
        return {}
    return {rule: int(count) for rule, count in re.findall(r"^(\S+)\s+(\d+)\s*$", table.group(1), re.M)}


def stale_report_problem(files: Sequence[str], snakefile: str | Path, configfiles: Sequence[str | Path],
                         config_args: Sequence[str], build_command: str, profiles: Sequence[str] = ()) -> str | None:
    """Why the report of `files` would show out-of-date results (None where every one is current): a dry run of them
    with this job's config and profiles (a profile's rerun triggers decide what is out of date).
    `build_command`: the command that updates them, for the message."""
    missing = [file for file in files if not Path(file).exists()]
    command = [sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", *files, "--snakefile", str(snakefile),
               *profiles]
    if configfiles:
        command += ["--configfile", *map(str, configfiles)]
    if config_args:
        command += ["--config", *config_args]
    result = subprocess.run(command, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return (f"snakemake --report: could not check that the files it shows are current (a dry run of them failed): "
                f"{output.strip()[-2000:]}")
    if "Nothing to be done" in output and not missing:
        return None
    jobs = ", ".join(f"{rule} ({count})" for rule, count in jobs_to_run(output).items() if rule != "all") or (
        "" if missing else "see a dry run of them")  # its table not found: still not current
    found = ([f"missing: {', '.join(missing)}"] if missing else []) + (
        [f"jobs would make or update them for this config: {jobs}" + ("" if missing else " (the report would show "
         "results of an earlier config: a run no longer in it, the splits before an edit)")] if jobs else [])
    return (f"snakemake --report embeds the files as they are; {'; '.join(found)}. Build them first: {build_command} "
            "(or add --report-after-run), then make the report again")
