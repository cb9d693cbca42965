"""Fetch, verify and extract the WFLW archives listed in a manifest (data/manifest.json), and fetch
the ImageNet backbone weights the published recipe starts from (its "weights" entry).

Each archive is downloaded to ROOT/archives/NAME through NAME.part, resuming a partial file with an
HTTP Range request; its SHA-256 is checked against the manifest when the manifest has one (when it
has none the computed hash is printed and reported as unverified; it is never invented); then it is
extracted into a temporary directory beside the target and moved into place with os.replace, so an
interrupted run never leaves a half-extracted WFLW_images/.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

ARCHIVE_DIR = "archives"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download, verification or extraction problem, with a message meant for the user."""


@dataclass(frozen=True)
class Archive:
    """One manifest entry: where to get an archive, how to check it and what it extracts to."""

    name: str  # file name, e.g. WFLW_annotations.tar.gz
    urls: tuple[str, ...]  # tried in order
    sha256: str | None  # None: not known, so the download cannot be verified
    size: int | None  # bytes, None when not known
    extracts_to: str  # top-level directory the archive holds, placed directly under the dataset root


def load_manifest(path: str | Path) -> list[Archive]:
    """Read the archive list of a manifest json; raise DownloadError naming the bad entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DownloadError(f"{path}: cannot read manifest: {err}") from None
    archives = []
    for i, entry in enumerate(data.get("archives", []) if isinstance(data, dict) else []):
        try:
            archives.append(_entry(entry, str(entry["extracts_to"])))
        except (KeyError, TypeError, ValueError) as err:
            raise DownloadError(f"{path}: archives[{i}]: bad entry: {err!r}") from None
    if not archives:
        raise DownloadError(f"{path}: manifest lists no archives")
    return archives


def _entry(entry: dict, extracts_to: str) -> Archive:
    """One manifest entry as an Archive; KeyError, TypeError or ValueError when a field is bad."""
    sha = entry["sha256"]
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise ValueError(f"sha256 must be 64 lowercase hex digits or null, got {sha!r}")
    return Archive(
        name=str(entry["name"]),
        urls=tuple(str(url) for url in entry["urls"]),
        sha256=sha,
        size=None if entry["size"] is None else int(entry["size"]),
        extracts_to=extracts_to,
    )


def sha256sum(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, archive: Archive, log: Callable[[str], None] = print) -> bool:
    """Check size and SHA-256 against the manifest. True when verified, False when the manifest has
    no hash (the computed one is logged); raise DownloadError on a mismatch."""
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        raise DownloadError(f"{path}: size {size} bytes, manifest says {archive.size}")
    digest = sha256sum(path)
    if archive.sha256 is None:
        log(f"{archive.name}: sha256 {digest} (NOT verified: the manifest has no hash for this archive)")
        return False
    if digest != archive.sha256:
        raise DownloadError(
            f"{path}: sha256 {digest} does not match the manifest's {archive.sha256}; "
            "the file is damaged or a different version: delete it and run again"
        )
    log(f"{archive.name}: sha256 verified")
    return True


def fetch(url: str, dest: str | Path, timeout: float = 30.0, progress: bool | None = None) -> Path:
    """Download `url` to `dest`, resuming from `dest`.part when it exists; return `dest`.

    The partial file is kept when the transfer breaks, so calling again continues where it stopped.
    A server that ignores the Range header (status 200) is answered by starting over.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "hrnet_lib"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # nothing left to send: the partial file is complete
            os.replace(part, dest)
            return dest
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise DownloadError(f"{url}: {getattr(err, 'reason', err)}") from None
    with response:
        if response.headers.get_content_type() == "text/html":
            raise DownloadError(f"{url}: the server sent a web page, not the archive (login or quota page?)")
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        total = (int(length) + (start if resumed else 0)) if length else None
        mode = "ab" if resumed else "wb"
        try:
            with (
                open(part, mode) as f,
                tqdm(
                    total=total,
                    initial=start if resumed else 0,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=None if progress is None else not progress,
                ) as bar,
            ):
                while block := response.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(f"{url}: transfer interrupted ({err!r}); run again to resume") from None
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")
    os.replace(part, dest)
    return dest


def fetch_any(entry: Archive, dest: Path, timeout: float, log: Callable[[str], None]) -> str | None:
    """Download `entry` to `dest` from the first of its URLs that works; None when done, else why not."""
    reasons = []
    for url in entry.urls:
        log(f"{entry.name}: downloading {url}")
        try:
            fetch(url, dest, timeout=timeout)
            return None
        except DownloadError as err:
            log(f"  failed: {err}")
            reasons.append(str(err))
    return "; ".join(reasons) or "no URL in the manifest"


def _check_gzip(path: Path) -> None:
    """Read a gzip file to its end so that its length and CRC are checked: tarfile stops at the tar
    end marker and would accept an archive that lost its tail."""
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return
    try:
        with gzip.open(path) as stream:
            while stream.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise DownloadError(f"{path}: cannot extract: damaged gzip stream ({err})") from None


def extract(archive_path: str | Path, root: str | Path, extracts_to: str) -> Path:
    """Extract a tar archive that holds the directory `extracts_to` into root/extracts_to, atomically:
    into a temporary directory beside it first, then os.replace."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / extracts_to
    _check_gzip(Path(archive_path))
    tmp = Path(tempfile.mkdtemp(prefix=f".{extracts_to}.", dir=root))
    try:
        try:
            with tarfile.open(archive_path) as tar:
                members = tqdm(tar, desc=f"extracting {Path(archive_path).name}", unit="file", disable=None)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DownloadError(f"{archive_path}: cannot extract: {err}") from None
        if not (tmp / extracts_to).is_dir():
            found = sorted(p.name for p in tmp.iterdir())
            raise DownloadError(
                f"{archive_path}: expected a top-level {extracts_to}/ directory, found {found}"
            )
        os.replace(tmp / extracts_to, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _missing_message(root: Path, missing: list[tuple[Archive, str]]) -> str:
    lines = ["Could not get every WFLW archive:"]
    lines += [f"  {archive.name}: {reason}" for archive, reason in missing]
    lines += ["", "Download them by hand (see data/README.md), then either put each one at"]
    lines += [f"  {root / ARCHIVE_DIR / archive.name}" for archive, _ in missing]
    lines += ["and run this command again, or pass it with --archive PATH. They extract to"]
    lines += [f"  {root / archive.extracts_to}/" for archive, _ in missing]
    return "\n".join(lines)


def download_dataset(
    root: str | Path,
    manifest: str | Path,
    archives: Sequence[str | Path] = (),
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
) -> None:
    """Make root/WFLW_annotations and root/WFLW_images from the manifest's archives.

    Local `archives` are matched to manifest entries by file name and used instead of downloading.
    Targets already present are left alone. Raise DownloadError (with what to put where) when an
    archive can be neither found nor downloaded.
    """
    root = Path(root)
    entries = load_manifest(manifest)
    local: dict[str, Path] = {}
    for path in map(Path, archives):
        if not path.is_file():
            raise DownloadError(f"--archive {path}: no such file")
        names = [entry.name for entry in entries]
        if path.name not in names:
            raise DownloadError(f"--archive {path}: file name is not one of the manifest's {names}")
        local[path.name] = path
    missing: list[tuple[Archive, str]] = []
    for entry in entries:
        target = root / entry.extracts_to
        if target.exists():
            log(f"{entry.extracts_to}: already present at {target} (delete it to extract again)")
            continue
        path = local.get(entry.name, root / ARCHIVE_DIR / entry.name)
        if not path.is_file():
            failure = fetch_any(entry, path, timeout, log)
            if failure is not None:
                missing.append((entry, failure))
                continue
        verify(path, entry, log)
        log(f"{entry.name}: extracting to {target}")
        extract(path, root, entry.extracts_to)
    if missing:
        raise DownloadError(_missing_message(root, missing))


def load_weights_entry(path: str | Path) -> Archive:
    """The manifest's "weights" entry (a single file, nothing to extract); DownloadError when absent."""
    path = Path(path)
    try:
        return _entry(json.loads(path.read_text(encoding="utf-8"))["weights"], extracts_to="")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DownloadError(f"{path}: no usable 'weights' entry: {err!r}") from None
