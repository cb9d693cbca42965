"""A run folder against hostile and unlucky use: one run at a time, resuming a finished run, damaged or
foreign checkpoints in it, and a disk that fills up while a checkpoint is written.

Runs the real command (`hrnet_lib.train.loop.main`, the smoke preset) on a tiny synthetic WFLW.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hrnet_lib.train.checkpoint import load_checkpoint
from hrnet_lib.train.loop import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # the fixture in conftest.py


def smoke(data: Path, run: Path, *more: str) -> list[str]:
    return ["--preset", "smoke", "--data-root", str(data), "--out", str(run), *more]


@pytest.fixture(scope="module")
def finished(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run of two steps (validated at its end): last.pt, best.pt and summary.json."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(smoke(data, run, "max_iters=2")) == 0
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def contents(run: Path) -> dict[str, bytes]:
    """Every file of a run folder but the lock file (which names its latest holder)."""
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.name != ".lock"}


def test_resume_of_a_finished_run_changes_nothing(
    data: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--resume` on a complete run (a rerun of the same command) says so and leaves every file as it was:
    summary.json keeps its measured timings, even when best.pt is damaged."""
    run = copy_of(finished, tmp_path)
    before = contents(run)
    summary = json.loads(before["summary.json"])
    assert summary["iterations"] == 2 and summary["first_step_s"] is not None
    capsys.readouterr()
    assert main(smoke(data, run, "max_iters=2", "--resume")) == 0
    out = capsys.readouterr().out
    assert f"--resume: {run} holds a finished run (2 of 2 steps); nothing to do, nothing changed" in out
    assert "epochs=2, max_iters=2 now" in out
    assert contents(run) == before
    (run / "best.pt").write_bytes(b"damaged")
    before = contents(run)
    assert main(smoke(data, run, "max_iters=2", "--resume")) == 0
    assert contents(run) == before
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_a_finished_run_goes_on_when_asked_and_keeps_its_summary(
    data: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """More steps continue the run; the earlier session's summary moves into config.json, never lost. A
    damaged best.pt stops the resume before anything is written, with a message and no traceback."""
    run = copy_of(finished, tmp_path)
    first_summary = json.loads((run / "summary.json").read_text())
    best = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(b"damaged")
    before = contents(run)
    capsys.readouterr()
    assert main(smoke(data, run, "max_iters=3", "--resume")) == 1
    err = capsys.readouterr().err
    assert f"--resume: cannot read checkpoint {run / 'best.pt'}" in err and "Traceback" not in err
    assert contents(run) == before
    (run / "best.pt").write_bytes(best)
    assert main(smoke(data, run, "max_iters=3", "--resume")) == 0
    info = json.loads((run / "config.json").read_text())
    assert [s["from_iteration"] for s in info["sessions"]] == [0, 2]
    assert info["sessions"][0]["summary"] == first_summary and "summary" not in info["sessions"][1]
    assert json.loads((run / "summary.json").read_text())["iterations"] == 3


def test_a_foreign_or_broken_last_checkpoint_is_refused(
    data: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """best.pt copied over last.pt (weights without the optimiser and RNG state), and a last.pt with a NaN
    weight, are refused by name before any step; the NaN one is never called "the last good checkpoint"."""
    run = copy_of(finished, tmp_path)
    shutil.copyfile(run / "best.pt", run / "last.pt")
    capsys.readouterr()
    assert main(smoke(data, run, "max_iters=3", "--resume")) == 1
    err = capsys.readouterr().err
    assert f"--resume: {run / 'last.pt'} holds weights without the training state" in err
    assert "(no optimizer, rng)" in err and "Traceback" not in err

    run = copy_of(finished, tmp_path / "nan")
    state = load_checkpoint(run / "last.pt")
    state["model"]["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, run / "last.pt")
    assert main(smoke(data, run, "max_iters=3", "--resume")) == 1
    err = capsys.readouterr().err
    assert f"--resume: {run / 'last.pt'}: model.conv1.weight holds 1 NaN of" in err
    assert "last good checkpoint" not in err and "Traceback" not in err
    assert load_checkpoint(run / "last.pt")["iteration"] == 2  # nothing was trained or written


def hold(run: Path) -> subprocess.Popen:
    """Another process holding the run folder as a training run does (RunDir.prepare), until killed."""
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from hrnet_lib.train.run_dir import RunDir
        folder = RunDir(Path({str(run)!r}))
        folder.prepare(False)
        print("holding", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "holding\n"
    return proc


def test_one_run_at_a_time_holds_a_run_folder(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second run on a folder in use stops at once, naming the folder and the holder, and writes nothing;
    a holder killed with SIGKILL leaves no stale lock."""
    run = tmp_path / "run"
    holder = hold(run)
    try:
        assert main(smoke(data, run, "max_iters=1", "seed=1")) == 1
        err = capsys.readouterr().err
        assert f"{run} is in use by another training run (pid {holder.pid} on " in err
        assert [p.name for p in run.iterdir()] == [".lock"]
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"a save the SIGKILL cut short")
    assert main(smoke(data, run, "max_iters=1", "seed=1")) == 0
    assert not (run / ".last.pt.k1ll3d.tmp").exists()
    assert load_checkpoint(run / "last.pt")["config"]["seed"] == 1
    assert f"pid {os.getpid()} " in (run / ".lock").read_text()  # the latest holder, for the next message
    assert main(smoke(data, run, "max_iters=2", "seed=1", "--resume")) == 0  # released at the end


def test_full_disk_while_saving_a_checkpoint_stops_with_a_message(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up during the second checkpoint save: the run stops with exit 1 and a message that
    says so (torch alone says "unexpected pos"), and last.pt stays the first save's."""
    real_save, calls = torch.save, []

    def second_save_finds_the_disk_full(obj, f, *args, **kwargs) -> None:
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04 part of a zip")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", second_save_finds_the_disk_full)
    run = tmp_path / "run"
    assert main(smoke(data, run, "max_iters=3", "ckpt_every=1")) == 1
    err = capsys.readouterr().err
    assert f"no space left on the device of {run} to write last.pt; the previous last.pt is kept" in err
    assert "Traceback" not in err
    monkeypatch.undo()
    assert load_checkpoint(run / "last.pt")["iteration"] == 1
    assert not list(run.glob(".*.tmp"))
