"""Shared test fixtures: the four real WFLW faces kept in tests/data/wflw-mini, and the training tests' tiny
synthetic WFLW and single compute thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hrnet_lib.data.synthetic import synthesize

REPO = Path(__file__).resolve().parents[1]
WFLW_MINI = REPO / "tests" / "data" / "wflw-mini"


@pytest.fixture(scope="session")
def wflw_mini() -> Path:
    """Root of the four real WFLW faces in the official layout (credited in tests/data/README.md)."""
    return WFLW_MINI


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One compute thread in this process for the test: the training tests' processes share 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic WFLW, made once per module: 24 training faces (about 18 train + 6 validation with the
    smoke preset), 4 test faces."""
    root = tmp_path_factory.mktemp("wflw-synth")
    synthesize(root, n_train=24, n_test=4, seed=0, progress=False)
    return root
