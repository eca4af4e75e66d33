"""Assertions shared by several test files (pytest puts this folder on the import path)."""

from __future__ import annotations


def one_line_error(err: str) -> str:
    """The single ``mlplab: error: ...`` line a user error prints on stderr (no traceback)."""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("mlplab: error: ") and "Traceback" not in err
    return lines[0]
