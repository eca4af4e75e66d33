"""Shared fixtures: where the fixture data lives, and an environment that cannot reach real data."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """The folder of committed fixture data (``mnist-small/``, ``fashion-small/``)."""
    return FIXTURES


@pytest.fixture
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make data lookups see nothing of the machine: no MLPLAB_DATA, no system copies, no mirrors.

    The user cache moves to a fresh ``tmp_path / "cache"`` (returned), HOME too, proxies are off
    so that 127.0.0.1 is reached directly, and every mirror list is emptied: a test that wants a
    download points a mirror at its own local server.
    """
    from mlplab.data import sources

    for variable in (
        "MLPLAB_DATA",
        "MLPLAB_MIRRORS",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in list(sources.MIRRORS):
        monkeypatch.setitem(sources.MIRRORS, name, [])
    for name in list(sources.SYSTEM_DIRS):
        monkeypatch.setitem(sources.SYSTEM_DIRS, name, [])
    return tmp_path / "cache"


@pytest.fixture
def fixture_is_mnist(fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the known mnist checksums those of the fixture, as if the fixture were official."""
    from mlplab.data import read_idx, sources

    table = {}
    for stem in sources.FILE_STEMS:
        idx = read_idx(fixtures_dir / "mnist-small" / f"{stem}.gz")
        table[stem] = (idx.payload_bytes, idx.sha256)
    monkeypatch.setitem(sources.CHECKSUMS, "mnist", table)
