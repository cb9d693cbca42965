"""The ImageNet HRNetV2-W18 weights the published recipe starts from: fetched, then checked to load."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hrnet_lib.data.download import Archive, DownloadError, fetch_any, verify
from hrnet_lib.model.hrnet import build_model
from hrnet_lib.model.weights import WeightsMismatchError, load_weights


def check_weights(path: str | Path, entry: Archive, log: Callable[[str], None] = print) -> None:
    """Raise DownloadError naming `path` unless its size and hash agree with `entry` (where it has them) and
    it loads strictly into the HRNetV2-W18 backbone (an ImageNet classifier or backbone-only layout)."""
    path = Path(path)
    try:
        verify(path, entry, log)
    except OSError as err:
        raise DownloadError(f"{path}: cannot be read: {err}") from None
    try:
        report = load_weights(build_model("hrnetv2_w18"), path)
    except WeightsMismatchError as err:
        raise DownloadError(f"{path}: {err}") from None
    except (ValueError, TypeError) as err:  # no checkpoint at all, or no state dict inside
        raise DownloadError(f"{path}: cannot be loaded: {err}") from None
    if report.layout not in ("imagenet", "backbone"):
        raise DownloadError(f"{path}: holds {report.layout} weights, not an ImageNet backbone")
    log(f"{entry.name}: {report}")


def download_weights(
    dest: str | Path, entry: Archive, timeout: float = 30.0, log: Callable[[str], None] = print
) -> Path:
    """Fetch the ImageNet HRNetV2-W18 weights of `entry` to `dest`, checked (`check_weights`) before use.

    A file already at `dest` gets the same check and is kept either way: DownloadError when it fails. The
    download lands beside `dest` first and is moved into place only when it passes; one that fails is
    deleted, with the reason.
    """
    dest = Path(dest)
    if dest.is_file():
        log(f"{dest}: already present, checking it (delete it to download again)")
        try:
            check_weights(dest, entry, log)
        except DownloadError as err:
            raise DownloadError(
                f"{dest} is already there but is not usable (left in place; delete or move it to download "
                f"the weights again): {err}"
            ) from None
        return dest
    staging = dest.with_name(f".{dest.name}.download")
    failure = fetch_any(entry, staging, timeout, log)
    if failure is not None:
        raise DownloadError(f"could not download {entry.name}: {failure}. Fetch it by hand, put it at {dest}")
    try:
        check_weights(staging, entry, log)
    except DownloadError as err:
        staging.unlink(missing_ok=True)
        raise DownloadError(f"{entry.name} is not usable (deleted): {err}") from None
    os.replace(staging, dest)
    return dest
