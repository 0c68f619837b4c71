"""Shared helpers of the benchmark scripts: child-process wall/CPU time and peak RSS, machine description."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    """One child process: wall seconds, CPU seconds (user + system, all its threads), peak RSS MiB."""

    wall_s: float
    cpu_s: float
    rss_mib: float


#: ``python -S -c _LAUNCHER REPORT CMD...``: run CMD, write "wall_s cpu_s maxrss_KiB" of it to REPORT,
#: exit with its status. Its own image is a bare interpreter, so CMD's maxrss starts near zero.
_LAUNCHER = """import os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    f.write(f"{wall} {ru.ru_utime + ru.ru_stime} {ru.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured_full(
    cmd: list[str], env: dict | None = None, cpus: Sequence[int] | None = None, nice: int = 0
) -> Measured:
    """Run ``cmd`` (optionally pinned to ``cpus``, at niceness ``nice``); measure that child alone (wait4).

    A negative ``nice`` (root only) lets a benchmark take the CPUs from other jobs on a shared
    machine for its duration, so that it measures the tools rather than the load. Linux shares
    the CPUs fairly between sessions ("autogroups") before it looks at thread counts or process
    niceness, so the child gets a session of its own whose autogroup niceness is set too.

    The child is started by a tiny launcher process (:data:`_LAUNCHER`), which times it and reads
    its rusage. Measured straight from here, a child's peak RSS would be at least this process's
    own peak: Linux carries the ``maxrss`` of the memory image a process replaces across ``exec``,
    and a vfork'd or forked child's image is ours (a benchmark that generated a big input in
    process reported that as the tool's peak).
    """

    def pre() -> None:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
        if nice:
            os.setsid()
            try:
                with open("/proc/self/autogroup", "w") as f:
                    f.write(str(nice))
            except OSError:
                pass  # no autogroups here: plain niceness below is what counts
            os.nice(nice)

    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rep:  # a file: a chatty child cannot block
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, rep.name, *cmd], env={**os.environ, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=err, preexec_fn=pre if (cpus or nice) else None)
        proc.wait()
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        wall, cpu, maxrss_kib = (float(v) for v in rep.read().split())
    return Measured(wall, cpu, maxrss_kib / 1024.0)


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run ``cmd``; return ``(wall seconds, peak RSS in MiB)`` of that child alone (via wait4)."""
    m = run_measured_full(cmd, env)
    return m.wall_s, m.rss_mib


def load_average() -> str:
    """The 1/5/15-minute load averages, e.g. ``"3.1 2.8 2.5"``."""
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> str:
    """One line describing this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, Python {platform.python_version()}"
