"""File helpers: atomic writes keep the old file on failure, written files follow the umask, JSON lines."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from hrnet_lib.io import NoSpaceError, atomic_write, read_jsonl, save_json


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    save_json({"a": 1}, path)

    def broken(f) -> None:
        f.write(b"{half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_json({"nme": 0.04}, tmp_path / "results.json")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644


def test_read_jsonl_drops_only_a_torn_tail_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"iteration": 1}\n\n{"iteration": 2}\n{"itera')
    assert read_jsonl(path, torn_tail=True) == [{"iteration": 1}, {"iteration": 2}]
    with pytest.raises(ValueError, match="log.jsonl:4"):
        read_jsonl(path)
    path.write_text('{"iteration": 1}\n{bad\n{"iteration": 3}\n')
    with pytest.raises(ValueError, match="log.jsonl:2"):
        read_jsonl(path, torn_tail=True)
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_save_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_json({"nme": float("nan")}, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()
    save_json({"nme": None}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"nme": None}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_names_the_file_and_keeps_the_old_one(tmp_path: Path, code: int) -> None:
    """A write (or its fsync) that finds the disk or quota full: a NoSpaceError naming the file and saying
    the old one is kept, which it is; a folder with no file yet says nothing was written."""
    path = tmp_path / "results.json"
    save_json({"a": 1}, path)

    def full(f) -> None:
        f.write(b"{half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(NoSpaceError) as error:
        atomic_write(path, full)
    assert str(error.value) == (
        f"no space left on the device of {tmp_path} to write results.json; the previous results.json is kept"
    )
    assert error.value.errno == code and isinstance(error.value, OSError)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with pytest.raises(NoSpaceError, match="to write new.json; nothing was written"):
        atomic_write(tmp_path / "new.json", full)
