"""How much memory this process may use, and byte counts a person can read.

Networks and runs are checked against :func:`available_memory_bytes` *before* anything large is
allocated, so that an impossible size (``99999999999:relu``, a model file claiming a billion
units) fails at once with a one-line error instead of swapping the machine to a halt or being
killed by the kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
CGROUP_MEMORY_CURRENT = Path("/sys/fs/cgroup/memory.current")


def available_memory_bytes() -> int:
    """Bytes this process can still allocate without swapping, as best the system tells.

    The smaller of: the kernel's ``MemAvailable`` (``/proc/meminfo``; on systems without it,
    free physical pages from ``os.sysconf``), and, inside a container with a cgroup v2 memory
    limit (``/sys/fs/cgroup/memory.max`` holding a number rather than ``max``), that limit
    less the cgroup's current usage. Returns 0 only when every source says so; a system that
    reports nothing at all is treated as unlimited rather than refusing every network.
    """
    system = _meminfo_available()
    if system is None:
        system = _sysconf_available()
    candidates = [value for value in (system, _cgroup_headroom()) if value is not None]
    if not candidates:
        return 2**63 - 1
    return max(0, min(candidates))


def _meminfo_available() -> int | None:
    try:
        text = MEMINFO.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            try:
                return int(fields[1]) * 1024  # the kernel reports kB (kibibytes)
            except (IndexError, ValueError):
                return None
    return None


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_headroom() -> int | None:
    """The cgroup v2 limit minus what the cgroup already uses; None without a numeric limit."""
    try:
        limit_text = CGROUP_MEMORY_MAX.read_text().strip()
    except OSError:
        return None
    if not limit_text.isdigit():  # "max": no limit
        return None
    limit = int(limit_text)
    try:
        used = int(CGROUP_MEMORY_CURRENT.read_text().strip())
    except (OSError, ValueError):
        used = 0
    return max(0, limit - used)


def format_bytes(n: int | float) -> str:
    """``n`` bytes in binary units: ``512 B``, ``1.5 KiB``, ``3.0 GiB``, ``314.0 TiB``."""
    value = float(n)
    if abs(value) < 1024:
        return f"{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024.0
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # the loop always returns at PiB


__all__ = ["available_memory_bytes", "format_bytes"]
