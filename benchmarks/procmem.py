"""Resident memory of a running child process: the RSS watchdogs of the scale benchmarks."""

from __future__ import annotations

from pathlib import Path


def rss_gib(pid: int) -> float:
    """Current VmRSS of ``pid`` in GiB, from /proc (0.0 once it has exited, or off Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return 0.0
