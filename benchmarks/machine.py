"""The machine description recorded with every benchmark result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a supervisor's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes ``pids`` so far (those gone count 0)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def serve_process(
    arguments: list[str],
    *,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """``shelfrank serve ARGUMENTS`` (or ``command``, a process that serves the same way)
    started and waited for: the process and the gRPC address its first line announces
    (RuntimeError, the process killed, if none)."""
    process = subprocess.Popen(
        command or [sys.executable, "-m", "shelfrank.server", "serve", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("shelfrank serving on"):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return process, line.split()[-1]
