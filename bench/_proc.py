"""CPU time and memory of processes, from /proc, for the benchmarks' per-process figures.

CPU is read as utime + stime of each process (all its threads) at the start and
the end of a measured window; a process that starts inside the window counts
from zero. A group (PostgreSQL: the postmaster and every backend; eventflow:
a supervisor and its workers and their writer processes) is a root pid and its
descendants at the moment of each sample.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU of one process (all threads), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def children(pid: int) -> list[int]:
    """Children of every thread of `pid` (a writer process is a child of the writer thread)."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in threads:
        try:
            found.extend(
                int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            )
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants alive now."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found


def peak_rss_mb(pid: int | str = "self") -> float:
    """The process's own peak resident memory (`VmHWM`; `ru_maxrss` would start at its
    parent's, since Linux carries the high-water mark across fork and exec)."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int | str = "self") -> float:
    return _status_mb(pid, "VmRSS")


def _status_mb(pid: int | str, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # the process is gone
        pass
    return 0.0


class CpuWindow:
    """CPU seconds per named group of processes between `start()` and `stop()`.

    Groups are given as root pids; `descendants` says whether a group's
    children count too (re-listed at each sample, so new backends count).
    """

    def __init__(self, groups: dict[str, tuple[list[int], bool]]) -> None:
        self.groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self.seconds: dict[str, float] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: cpu_seconds(pid) for pid in _members(roots, descendants)}
            for name, (roots, descendants) in self.groups.items()
        }

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        end = self._sample()
        self.seconds = {
            name: sum(cpu - self._start[name].get(pid, 0.0) for pid, cpu in pids.items())
            for name, pids in end.items()
        }
        return self.seconds

    def per_event_us(self, events: int) -> dict[str, float]:
        return {name: round(s * 1e6 / max(events, 1), 1) for name, s in self.seconds.items()}


def _members(roots: Iterable[int], descendants: bool) -> list[int]:
    if not descendants:
        return list(roots)
    return [pid for root in roots for pid in tree(root)]


def postmaster_pid(data_dir: str | Path) -> int:
    """The postmaster of a scripts/postgres.sh server (first line of postmaster.pid)."""
    return int((Path(data_dir) / "pgdata" / "postmaster.pid").read_text().split()[0])


def broker_pid(data_dir: str | Path) -> int:
    """The broker of a scripts/kafka.sh server."""
    return int((Path(data_dir) / "kafka.pid").read_text().strip())
