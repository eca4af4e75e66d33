"""Available memory (/proc/meminfo, the cgroup limit, sysconf) and readable byte counts."""

from __future__ import annotations

import pytest

from mlplab import resources

MEMINFO = """\
MemTotal:       16384000 kB
MemFree:         1024000 kB
MemAvailable:    8192000 kB
Buffers:          102400 kB
"""


@pytest.fixture
def fake_system(tmp_path, monkeypatch):
    """Point every source at files under tmp_path; a test writes the ones it wants."""
    paths = {
        "meminfo": tmp_path / "meminfo",
        "max": tmp_path / "memory.max",
        "current": tmp_path / "memory.current",
    }
    monkeypatch.setattr(resources, "MEMINFO", paths["meminfo"])
    monkeypatch.setattr(resources, "CGROUP_MEMORY_MAX", paths["max"])
    monkeypatch.setattr(resources, "CGROUP_MEMORY_CURRENT", paths["current"])
    return paths


def test_available_memory_is_memavailable_from_proc_meminfo_in_bytes(fake_system):
    fake_system["meminfo"].write_text(MEMINFO)
    assert resources.available_memory_bytes() == 8_192_000 * 1024


def test_a_numeric_cgroup_limit_lowers_the_available_memory_by_what_is_used(fake_system):
    fake_system["meminfo"].write_text(MEMINFO)
    fake_system["max"].write_text(f"{2 * 1024**3}\n")
    fake_system["current"].write_text(f"{512 * 1024**2}\n")
    assert resources.available_memory_bytes() == 2 * 1024**3 - 512 * 1024**2
    fake_system["current"].write_text(f"{3 * 1024**3}\n")  # over the limit already
    assert resources.available_memory_bytes() == 0


def test_a_cgroup_without_a_limit_changes_nothing(fake_system):
    fake_system["meminfo"].write_text(MEMINFO)
    fake_system["max"].write_text("max\n")
    assert resources.available_memory_bytes() == 8_192_000 * 1024


def test_without_proc_meminfo_the_free_physical_pages_are_used(fake_system, monkeypatch):
    values = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(resources.os, "sysconf", lambda name: values[name])
    assert resources.available_memory_bytes() == 4_096_000
    fake_system["meminfo"].write_text("MemTotal: 100 kB\n")  # an old kernel: no MemAvailable
    assert resources.available_memory_bytes() == 4_096_000


def test_the_real_machine_reports_a_plausible_amount():
    available = resources.available_memory_bytes()
    assert isinstance(available, int)
    assert 0 < available < 2**63


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (3_180_040, "3.0 MiB"),
        (8 * 1024**3, "8.0 GiB"),
        (79_499_999_999_215 * 4, "289.2 TiB"),
        (3 * 1024**5, "3.0 PiB"),
        (5 * 1024**6, "5120.0 PiB"),
    ],
)
def test_format_bytes_uses_binary_units(n, text):
    assert resources.format_bytes(n) == text
