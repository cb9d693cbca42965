"""Build the book: execute the four notebooks with papermill, then build the offline HTML with jupyter-book.

    python -m hrnet_lib.book --preset P --run RUN --data-root DIR --data-kind synthetic|wflw --gpus N

Each notebook is executed from its jupytext source (`nbs/NN-name.py`) with the run's parameters into
`book/generated/` (never committed); the first failing notebook stops the build, so no page is published
with stale or missing outputs. jupyter-book 1.x then builds `book/_build/html` with warnings as errors,
and no page may load a script or stylesheet from the network. `--preset smoke` makes its own tiny
synthetic dataset and run in a private temporary folder (or `--work DIR`): the tests' book.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hrnet_lib.book.chapter import REPO
from hrnet_lib.book.report_page import write_report_page

BOOK = REPO / "book"
NBS = REPO / "nbs"
GENERATED = BOOK / "generated"
NOTEBOOKS = ("01-wflw-data", "02-hrnetv2-architecture", "03-multi-gpu-training", "04-subset-evaluation")
# Synthetic dataset sizes: the smoke book's private set, and `make synth`'s default (Makefile SYNTH_*).
SMOKE_SYNTH = {"synth_train": 24, "synth_test": 16}
DEFAULT_SYNTH = {"synth_train": 1500, "synth_test": 500}
_REMOTE = re.compile(
    r"<(?:script[^>]*\bsrc|link[^>]*\bhref)\s*=\s*[\"']?\s*(?:https?:)?//", flags=re.IGNORECASE
)


class BookError(RuntimeError):
    """A book build that cannot go on: a failed notebook, a failed HTML build, a remote asset."""


def default_nproc(preset: str, gpus: int) -> int:
    """Training processes: one per GPU; on a machine without CUDA, 2 gloo processes for the smoke
    preset (so the book shows a real multi-process run) and 1 otherwise."""
    import torch

    if torch.cuda.is_available():
        return max(gpus, 1)
    return 2 if preset == "smoke" else 1


def notebook_parameters(
    preset: str, run: str, data_root: str, data_kind: str, nproc: int, work: Path | None
) -> dict[str, Any]:
    """The papermill parameters shared by the four notebooks (the `parameters` cell of each).

    The smoke preset ignores `run` and `data_root`: it uses `work`/run and `work`/data, synthetic.
    """
    if preset == "smoke":
        if work is None:
            raise ValueError("the smoke preset needs a work folder for its private data and run")
        return {
            "data_root": str(work / "data"),
            "data_kind": "synthetic",
            "preset": preset,
            "nproc": nproc,
            "run_dir": str(work / "run"),
            "rerun": False,
            **SMOKE_SYNTH,
        }
    return {
        "data_root": data_root,
        "data_kind": data_kind,
        "preset": preset,
        "nproc": nproc,
        "run_dir": run,
        "rerun": False,
        **DEFAULT_SYNTH,
    }


def execute_notebooks(
    parameters: dict[str, Any], generated: Path = GENERATED, names: Sequence[str] = NOTEBOOKS
) -> list[Path]:
    """Execute each notebook from its jupytext source into `generated`; stop at the first error."""
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    generated.mkdir(parents=True, exist_ok=True)
    outputs = []
    for name in names:
        source = NBS / f"{name}.py"
        if not source.is_file():
            raise BookError(f"{source}: notebook source not found")
        notebook = jupytext.read(source)
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        output = generated / f"{name}.ipynb"
        started = time.monotonic()
        print(f"[book] executing {source} -> {output}", flush=True)
        try:
            papermill.execute_notebook(
                notebook,
                str(output),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(REPO),
                progress_bar=False,
                log_output=True,
                stdout_file=sys.stdout,
                stderr_file=sys.stderr,
            )
        except PapermillExecutionError as error:
            raise BookError(
                f"{source}: cell {error.exec_count} failed with {error.ename}: {error.evalue}\n"
                f"(the executed notebook with the traceback is {output}); the book was not built"
            ) from None
        hide_default_parameters(output)
        print(f"[book] {name}: {time.monotonic() - started:.1f} s", flush=True)
        outputs.append(output)
    return outputs


def hide_default_parameters(notebook_path: Path) -> None:
    """Tag a notebook's default `parameters` cell `remove-cell`: the page shows only the cell papermill
    injected with the values this build used, not both."""
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    nbformat.write(notebook, notebook_path)


def build_html(book: Path = BOOK) -> Path:
    """jupyter-book 1.x build with warnings as errors; returns the HTML folder."""
    html = book / "_build" / "html"
    shutil.rmtree(book / "_build", ignore_errors=True)
    executable = Path(sys.executable).with_name("jupyter-book")
    command = [str(executable), "build", str(book), "--warningiserror", "--keep-going", "--quiet"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise BookError(
            f"jupyter-book build failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    check_offline(html)
    return html


def remote_assets(html: Path) -> list[str]:
    """Every `file: tag` in the built HTML that loads a script or stylesheet from the network."""
    found = []
    for page in sorted(html.rglob("*.html")):
        text = page.read_text(encoding="utf-8", errors="replace")
        for match in _REMOTE.finditer(text):
            end = text.find(">", match.start())
            found.append(f"{page.relative_to(html)}: {text[match.start() : end + 1][:200]}")
    return found


def check_offline(html: Path) -> None:
    """Raise when any page would fetch a script or stylesheet from the network."""
    remote = remote_assets(html)
    if remote:
        raise BookError("the book references remote scripts or stylesheets:\n" + "\n".join(remote))


def prepare_book(out: Path) -> Path:
    """The book source folder to build in: book/ itself, or a fresh copy of its sources at `out`
    (so that a test build never replaces the book that `make reproduce` made). Old outputs go first."""
    out = out.resolve()
    if out != BOOK.resolve():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(BOOK, out, ignore=shutil.ignore_patterns("_build", "generated"))
    shutil.rmtree(out / "generated", ignore_errors=True)
    shutil.rmtree(out / "_build", ignore_errors=True)
    return out


def build(
    preset: str,
    run: str,
    data_root: str,
    data_kind: str,
    nproc: int,
    work: Path | None = None,
    out: Path = BOOK,
    notebooks: Sequence[str] = NOTEBOOKS,
) -> Path:
    """Execute the notebooks into `out`/generated and build `out`/_build/html, which it returns.

    The smoke preset without `work` runs in a private temporary folder, removed afterwards.
    """
    book = prepare_book(out)
    private = None
    if preset == "smoke" and work is None:
        private = Path(tempfile.mkdtemp(prefix="hrnet-book-smoke-"))
        work = private
    try:
        parameters = notebook_parameters(preset, run, data_root, data_kind, nproc, work)
        execute_notebooks(parameters, book / "generated", notebooks)
        write_report_page(book / "generated" / "reproduction-summary.md", parameters)
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
    return build_html(book)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m hrnet_lib.book`: execute the notebooks for a run and build the book."""
    parser = argparse.ArgumentParser(prog="python -m hrnet_lib.book", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", required=True, help="training preset of the run; 'smoke' builds a private one"
    )
    parser.add_argument("--run", default=None, help="run folder (default runs/PRESET)")
    parser.add_argument("--data-root", default="data/synthetic", help="dataset root")
    parser.add_argument("--data-kind", choices=("synthetic", "wflw"), default="synthetic")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs / training processes (0 or 1 on a CPU)")
    parser.add_argument("--nproc", type=int, default=None, help="training processes (default: from --gpus)")
    parser.add_argument("--work", type=Path, default=None, help="smoke preset: keep its data and run here")
    parser.add_argument("--out", type=Path, default=BOOK, help="book folder to build in (default book/)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        nproc = args.nproc or default_nproc(args.preset, args.gpus)
        run = args.run or f"runs/{args.preset}"
        html = build(args.preset, run, args.data_root, args.data_kind, nproc, args.work, args.out)
    except BookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"[book] built {html / 'index.html'} in {time.monotonic() - started:.0f} s")
    return 0
