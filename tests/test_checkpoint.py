"""Checkpoint files: atomic under SIGKILL, RNG states round-trip, safe (weights_only) loading."""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hrnet_lib.io import NoSpaceError
from hrnet_lib.train.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.standard_normal()), torch.rand(3)


def test_rng_state_round_trip() -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's legacy state
    state = rng_state()
    first = _draws()
    _draws()
    set_rng_state(state)
    again = _draws()
    assert first[:2] == again[:2]
    assert torch.equal(first[2], again[2])


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    state = {
        "model": model.state_dict(),
        "config": {"model": "x", "milestones": [1, 2]},
        "rng": [rng_state()],
    }
    save_checkpoint(state, tmp_path / "a.pt")
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)  # no pickled Python objects inside
    assert torch.equal(loaded["model"]["weight"], model.weight)
    assert load_checkpoint(tmp_path / "a.pt")["config"] == state["config"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'model' entry"):
        load_checkpoint(tmp_path / "other.pt")


class RunsCode:
    """Pickles as a call of Path.touch on `marker` (what a hostile file would do with os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_runs_code_is_refused_without_torchs_advice(tmp_path: Path) -> None:
    """No training checkpoint holds code, so a last.pt whose pickle calls a function is refused, naming what
    it holds; torch's advice to retry with weights_only=False is not passed on."""
    marker = tmp_path / "PWNED"
    torch.save({"model": RunsCode(marker)}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="cannot read checkpoint .*last.pt: it holds objects of") as error:
        load_checkpoint(tmp_path / "last.pt")
    assert "getattr" in str(error.value) and "weights_only" not in str(error.value)
    assert not marker.exists()


def test_checkpoint_write_failing_midway_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(3)}, "i": 0}, target)

    def disk_full(obj, f, *args, **kwargs) -> None:
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    expected = f"no space left on the device of {tmp_path} to write last.pt; the previous last.pt is kept"
    with pytest.raises(NoSpaceError, match=re.escape(expected)):
        save_checkpoint({"model": {"w": torch.ones(3)}, "i": 1}, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["i"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_full_disk_under_torch_save_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real torch.save on a disk that fills up after 1 kB: torch reports the failed write as its own
    RuntimeError ("unexpected pos", no errno); the error says the disk is full and last.pt is kept."""
    target = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(3)}, "i": 0}, target)
    real_fdopen = os.fdopen

    class FillingDisk:
        def __init__(self, file) -> None:
            self.file, self.written = file, 0

        def write(self, data) -> int:
            self.written += len(data)
            if self.written > 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

        def __getattr__(self, name: str):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FillingDisk(real_fdopen(fd, mode)))
    with pytest.raises(NoSpaceError, match="to write last.pt; the previous last.pt is kept") as full:
        save_checkpoint({"model": {"w": torch.ones(100_000)}, "i": 1}, target)
    monkeypatch.undo()
    assert isinstance(full.value.__cause__, RuntimeError) and full.value.errno == errno.ENOSPC
    assert load_checkpoint(target)["i"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_sigkill_during_writes_never_leaves_a_torn_checkpoint(tmp_path: Path) -> None:
    """A process rewriting a 16 MB checkpoint in a loop is killed; the file is always one whole version."""
    target = tmp_path / "last.pt"
    script = textwrap.dedent(
        f"""
        import torch
        from hrnet_lib.train.checkpoint import save_checkpoint
        i = 0
        while True:
            save_checkpoint({{"model": {{"w": torch.full((4_000_000,), float(i))}}, "i": i}}, {str(target)!r})
            print(i, flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # one version written
        time.sleep(0.3)  # now mid-way through later writes
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(target)
    weights = state["model"]["w"]
    assert weights.numel() == 4_000_000
    assert torch.all(weights == float(state["i"]))
