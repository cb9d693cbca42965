"""`python -m hrnet_lib data check|download|weights`: validate a WFLW root, fetch the official archives,
or fetch the ImageNet backbone weights the published recipe starts from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrnet_lib.data import download, wflw
from hrnet_lib.model import pretrained

REPO_MANIFEST = Path(__file__).resolve().parents[2] / "data" / "manifest.json"


def format_stats(root: str | Path, stats: dict) -> str:
    """The statistics of `check_dataset` as a plain-text table."""
    lines = [f"WFLW root: {root}", f"images: {stats['images']}   faces: {stats['faces']}", ""]
    header = ["split", "faces", "images", *wflw.ATTRIBUTES]
    rows = [header]
    for split, split_stats in stats["splits"].items():
        attributes = [str(split_stats["attributes"][name]) for name in wflw.ATTRIBUTES]
        rows.append([split, str(split_stats["faces"]), str(split_stats["images"]), *attributes])
    rows.append(["subset file", "", "", *(str(stats["subsets"][name]) for name in wflw.ATTRIBUTES)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [cell.rjust(width) for cell, width in zip(row, widths, strict=True)]
        cells[0] = row[0].ljust(widths[0])
        lines.append("  ".join(cells).rstrip())
    lines += ["", f"{wflw.TEST_LIST_FILE}: {stats['test_list']} lines"]
    return "\n".join(lines)


def check(root: Path) -> int:
    """Validate a dataset root; print statistics and every error; 1 on any error."""
    stats, errors = wflw.check_dataset(root, progress=None)
    if stats:
        print(format_stats(root, stats))
    if errors:
        print(f"\n{len(errors)} error(s):")
        for error in errors:
            print(error)
        return 1
    print("\nno errors")
    return 0


def fetch(root: Path, archives: list[Path], manifest: Path | None, timeout: float) -> int:
    """Download (or take local) archives, verify and extract them; a clear message, not a traceback."""
    if manifest is None:
        local = Path("data") / "manifest.json"
        manifest = local if local.is_file() else REPO_MANIFEST
    try:
        download.download_dataset(root, manifest, archives, timeout=timeout)
    except download.DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"WFLW is ready under {root}; check it with: python -m hrnet_lib data check --root {root}")
    return 0


def fetch_weights(out: Path, manifest: Path | None, timeout: float) -> int:
    """Download and check the ImageNet HRNetV2-W18 weights; a clear message, not a traceback."""
    manifest = manifest or REPO_MANIFEST
    try:
        pretrained.download_weights(out, download.load_weights_entry(manifest), timeout=timeout)
    except download.DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"ImageNet weights are ready at {out}; train from them with --pretrained {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m hrnet_lib data`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m hrnet_lib data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser("check", help="validate a dataset root and print its statistics")
    check_parser.add_argument("--root", type=Path, required=True, help="directory holding WFLW_annotations/")
    fetch_parser = commands.add_parser("download", help="fetch, verify and extract the WFLW archives")
    fetch_parser.add_argument(
        "--root", type=Path, default=Path("data/WFLW"), help="dataset root to fill (default: %(default)s)"
    )
    fetch_parser.add_argument(
        "--archive", type=Path, action="append", default=[], help="an archive you already have (repeatable)"
    )
    fetch_parser.add_argument(
        "--manifest", type=Path, default=None, help="archive manifest (default: data/manifest.json)"
    )
    fetch_parser.add_argument(
        "--timeout", type=float, default=30.0, help="network timeout in seconds (default: %(default)s)"
    )
    weights_parser = commands.add_parser("weights", help="fetch and check the ImageNet HRNetV2-W18 weights")
    weights_parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/hrnetv2_w18-00eb2006.pth"),
        help="where to put the file (default: %(default)s)",
    )
    weights_parser.add_argument(
        "--manifest", type=Path, default=None, help="manifest with a 'weights' entry (default: the repo's)"
    )
    weights_parser.add_argument(
        "--timeout", type=float, default=30.0, help="network timeout in seconds (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.root)
    if args.command == "weights":
        return fetch_weights(args.out, args.manifest, args.timeout)
    return fetch(args.root, args.archive, args.manifest, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
