"""File helpers every writer uses: atomic writes, JSON and JSON-lines, output-folder checks.

A write goes to a temporary file beside its target, is fsynced, then renamed over it (`os.replace` is
atomic on POSIX), so a process killed at any moment leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any


class NoSpaceError(OSError):
    """A write that found its disk (or quota) full: the message names the file and says that the file as it
    was is kept."""


_FULL = (errno.ENOSPC, errno.EDQUOT)


class _WriteRecorder:
    """A file that remembers the first OSError its `write` raised: torch.save reports a failed write as
    its own RuntimeError, without the errno that says the disk is full."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.error = file, None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it onto `path`; a full
    disk is a NoSpaceError naming `path`, which keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recorder: _WriteRecorder | None = None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results should be as readable as any file
        with os.fdopen(fd, "wb") as f:
            recorder = _WriteRecorder(f)
            write(recorder)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = error if isinstance(error, OSError) else getattr(recorder, "error", None)
        if cause is not None and cause.errno in _FULL:
            kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
            full = NoSpaceError(f"no space left on the device of {path.parent} to write {path.name}; {kept}")
            full.errno = cause.errno
            raise full from error
        raise


def atomic_bytes(path: str | Path, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    atomic_write(path, lambda f: f.write(data))


def save_json(data: Any, path: str | Path, indent: int = 2) -> None:
    """Atomically write `data` as indented JSON; NaN and infinity are refused (JSON has neither)."""
    atomic_bytes(path, (json.dumps(data, indent=indent, allow_nan=False) + "\n").encode())


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON file as a dict; {} when it is missing."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def jsonl_text(records: Iterable[dict[str, Any]]) -> str:
    """Records as JSON lines, one per record."""
    return "".join(json.dumps(record) + "\n" for record in records)


def read_jsonl(path: str | Path, torn_tail: bool = False) -> list[dict[str, Any]]:
    """Records of a JSON-lines file ([] when it is missing); a line that is no JSON is a ValueError naming
    it, except that with `torn_tail` a torn last line (a process killed while writing it) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if not torn_tail or number < len(lines):
                raise ValueError(f"{path}:{number}: not a JSON record ({error})") from None
    return records


def prepare_output(path: str | Path, option: str = "--out") -> None:
    """Create the folder `path` will be written to and check that it can be, before the long work that ends
    by writing it: a ValueError naming `option`, the path and the reason otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; name the file to write")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"{option} {path}: cannot create the folder {folder} ({error.strerror or error})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")
