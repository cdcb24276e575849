"""Processes as Linux's /proc shows them: fields of `stat`, children, CPU time (tests and
benchmarks; empty or 0 where /proc is absent)."""

from __future__ import annotations

import os
from pathlib import Path


def stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: [0] state, [1] ppid, [11] utime,
    [12] stime, [16] nice; [] when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def pids() -> list[int]:
    try:
        return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    except OSError:
        return []


def children(pid: int) -> list[int]:
    """Live (not zombie) children of `pid`."""
    return [p for p in pids() if (f := stat(p)) and f[1] == str(pid) and f[0] != "Z"]


def cmdline(pid: int) -> bytes:
    """The NUL-separated command line of `pid` (b"" when gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    f = stat(pid)
    return bool(f) and f[0] != "Z"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of `pid` and its live children."""
    total = 0.0
    for p in (pid, *children(pid)):
        f = stat(p)
        if f:
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return total
