"""Named run configurations: ``mlplab train --preset NAME``.

A preset is a plain config file shipped inside the package, ``mlplab/presets/NAME.toml``, that
``mlplab train --config`` reads just as well (``mlplab train --list-presets`` prints where each
one lies, to copy and edit). The first line of each file is a comment saying what it trains.
"""

from __future__ import annotations

from pathlib import Path

from mlplab.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def preset_names() -> list[str]:
    """The names of the shipped presets, sorted."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    """The config file of the preset called ``name``.

    Raises
    ------
    ConfigError
        For a name that is not a shipped preset, naming those that are.
    """
    names = preset_names()
    if name not in names:
        raise ConfigError(
            f"unknown preset {name!r}; choose one of: {', '.join(names)} "
            "(`mlplab train --list-presets` describes them)"
        )
    return PRESETS_DIR / f"{name}.toml"


def preset_description(name: str) -> str:
    """The preset's first comment line, without its ``#``: what it trains."""
    for line in preset_path(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""
