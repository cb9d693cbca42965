"""Shared test fixtures: the real WFLW mini fixture when ../shared is present, tiny synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WFLW_MINI = REPO.parent / "shared" / "fixtures" / "wflw-mini"


@pytest.fixture(scope="session")
def wflw_mini() -> Path:
    """Root of the four real WFLW faces (third-party data, read in place, never committed)."""
    if not (WFLW_MINI / "WFLW_annotations").is_dir():
        pytest.skip(f"real WFLW fixture not found at {WFLW_MINI} (it lives in ../shared beside the checkout)")
    return WFLW_MINI
