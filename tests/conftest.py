"""Shared test fixtures: the four real WFLW faces kept in tests/data/wflw-mini."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WFLW_MINI = REPO / "tests" / "data" / "wflw-mini"


@pytest.fixture(scope="session")
def wflw_mini() -> Path:
    """Root of the four real WFLW faces in the official layout (credited in tests/data/README.md)."""
    return WFLW_MINI
