"""A throwaway single-node SLURM cluster on localhost (munge, slurmctld, slurmd), for the SLURM test and by hand.

    python tests/helpers/slurm_cluster.py up [--gpus 2]    # prints the partition name; `sinfo`, `srun hostname` then work
    python tests/helpers/slurm_cluster.py down

Needs root and the Debian packages slurmctld slurmd slurm-client munge (measured with SLURM 22.05). What it does
follows ../shared/notes/slurm.md: the configuration goes to /etc/slurm/slurm.conf (the plugin strips SLURM_CONF
from its inner srun's environment), accounting is off (so jobs are queried with squeue, which needs a long
MinJobAge), no cgroups. `gpus` declares fake GPUs (character devices made with mknod, the same as /dev/null) so
that jobs asking for `gpu` are accepted and scheduled, without any real GPU. State, logs and PID files live in
STATE (default /tmp/glmtune-slurm); `down` stops the daemons by their PIDs and removes the files it wrote, so a
later `scontrol` fails at once instead of waiting for a controller that is gone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CONF_DIR = Path("/etc/slurm")
MARK = "# written by glmtune tests/slurm_cluster.py"  # as first written: a conf from before the move stays ours
PARTITION = "debug"
STATE = Path(os.environ.get("GLMTUNE_SLURM_STATE", "/tmp/glmtune-slurm"))
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "srun")
FAKE_GPU = "/dev/glmtune-fake-gpu{}"


class ClusterError(RuntimeError):
    pass


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not shutil.which(name) and not Path("/usr/sbin", name).exists()]


def _run(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise ClusterError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _wait(what: str, ready, seconds: float = 30) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ready():
            return
        time.sleep(0.3)
    raise ClusterError(f"{what} did not come up in {seconds:.0f} s; see {STATE}/*.log")


def _node_line(gpus: int) -> str:
    """The CPU and memory line that `slurmd -C` prints, for a node called localhost."""
    hardware = _run("slurmd", "-C").stdout.splitlines()[0].split()
    fields = [f for f in hardware if not f.startswith(("NodeName=", "UpTime="))]
    gres = [f"Gres=gpu:{gpus}"] if gpus else []
    return " ".join(["NodeName=localhost", "NodeAddr=127.0.0.1", *fields, *gres, "State=UNKNOWN"])


def slurm_conf(gpus: int = 0) -> str:
    s = STATE
    return "\n".join([
        MARK,
        "ClusterName=glmtune-test",
        "SlurmctldHost=localhost",
        "SlurmUser=root",
        "AuthType=auth/munge",
        f"StateSaveLocation={s}/ctld",
        f"SlurmdSpoolDir={s}/d",
        f"SlurmctldPidFile={s}/slurmctld.pid",
        f"SlurmdPidFile={s}/slurmd.pid",
        f"SlurmctldLogFile={s}/slurmctld.log",
        f"SlurmdLogFile={s}/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MinJobAge=600",            # finished jobs stay visible to squeue (>= 3 x the plugin's first status check)
        "ReturnToService=2",
        "SchedulerParameters=sched_interval=2",
        *(["GresTypes=gpu"] if gpus else []),
        _node_line(gpus),
        f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _munge_works() -> bool:
    encoded = subprocess.run(["munge", "-n"], capture_output=True)
    return encoded.returncode == 0 and subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True).returncode == 0


CONTROLLER_PORT = 6817  # slurmctld's default (slurm_conf sets none)


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _controller_up() -> bool:
    return subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15).stdout.count("UP") > 0


def _node_idle() -> bool:
    state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15).stdout.split()
    return bool(state) and all(s in ("idle", "mix", "alloc") for s in state)


def up(gpus: int = 0) -> str:
    """Start munge (unless running), slurmctld and slurmd; return the partition name once `sinfo` shows the node idle."""
    if os.geteuid() != 0:
        raise ClusterError("needs root (writes /etc/slurm/slurm.conf, starts the daemons)")
    if missing := missing_binaries():
        raise ClusterError(f"SLURM is not installed (missing {', '.join(missing)})")
    conf = CONF_DIR / "slurm.conf"
    if conf.exists() and MARK not in conf.read_text():
        raise ClusterError(f"{conf} exists and was not written by this script; not touching it")
    down(quiet=True)
    if _port_taken(CONTROLLER_PORT):  # a controller this script did not start: its jobs are not ours to cancel
        raise ClusterError(f"a SLURM controller already listens on port {CONTROLLER_PORT} (not started by this script, "
                           "or its state is gone): stop it first; starting beside it would run on it and `down` would "
                           "cancel its jobs")
    for sub in ("ctld", "d"):
        (STATE / sub).mkdir(parents=True, exist_ok=True)
    if not _munge_works():
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            _run("mungekey", "--create", "--keyfile", str(key))
            shutil.chown(key, "munge", "munge")
            key.chmod(0o600)
        for folder in (Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, "munge", "munge")
        _run("runuser", "-u", "munge", "--", "munged")
        _wait("munged", _munge_works, 10)
        (STATE / "munged.started").write_text("/run/munge/munged.pid\n")  # ours, so `down` stops it
    if gpus:
        lines = []
        for i in range(gpus):
            device = FAKE_GPU.format(i)
            if not Path(device).exists():
                _run("mknod", device, "c", "1", "3")  # the same device as /dev/null: a file gres can point at
            lines.append(f"NodeName=localhost Name=gpu File={device}")
        (CONF_DIR / "gres.conf").write_text(MARK + "\n" + "\n".join(lines) + "\n")
    conf.write_text(slurm_conf(gpus))
    _run("slurmctld", "-i")  # -i: ignore state left by an earlier cluster
    _wait("slurmctld", _controller_up)
    _run("slurmd", "-N", "localhost")
    _wait("the node", _node_idle)
    return PARTITION


def _stop(pid_file: Path, seconds: float = 15) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def down(quiet: bool = False) -> None:
    """Stop slurmd, slurmctld and (if `up` started it) munged by PID; remove the configuration this script wrote."""
    _stop(STATE / "slurmd.pid")
    _stop(STATE / "slurmctld.pid")
    started = STATE / "munged.started"
    if started.exists():
        _stop(Path(started.read_text().strip()))
        started.unlink()
    for name in ("slurm.conf", "gres.conf"):
        path = CONF_DIR / name
        if path.exists() and MARK in path.read_text():
            path.unlink()
    for device in Path("/dev").glob("glmtune-fake-gpu*"):
        device.unlink()
    if not quiet:
        print(f"SLURM stopped; logs kept in {STATE}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--gpus", type=int, default=0, help="fake GPUs to declare on the node (gres gpu)")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            print(up(args.gpus))
        else:
            down()
    except ClusterError as err:
        print(f"slurm_cluster: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
