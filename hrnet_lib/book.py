"""Build the book: execute the four notebooks with papermill, then build the offline HTML with jupyter-book.

    python -m hrnet_lib.book --preset P --run RUN --data-root DIR --data-kind synthetic|wflw --gpus N

Each notebook is read from its jupytext source (`nbs/NN-name.py`), executed with the run's parameters
into `book/generated/` (never committed), and the first failing notebook stops the build, so no page is
published with stale or missing outputs. jupyter-book 1.x then builds `book/_build/html` with warnings
as errors, and the driver checks that no page loads a script or stylesheet from the network.
With `--preset smoke` the notebooks make their own tiny synthetic dataset and run in a private
temporary folder (or `--work DIR`), which is how the tests build the book.

The notebooks call the helpers of this module (`ensure_data`, `ensure_run`, `ensure_results`,
`run_provenance`, `read_log`) to create what is missing and to reuse what is finished.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hrnet_lib.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
NBS = REPO / "nbs"
GENERATED = BOOK / "generated"
NOTEBOOKS = ("01-wflw-data", "02-hrnetv2-architecture", "03-multi-gpu-training", "04-subset-evaluation")
# Synthetic dataset sizes: the smoke book's private set, and `make synth`'s default (Makefile SYNTH_*).
SMOKE_SYNTH = {"synth_train": 24, "synth_test": 16}
DEFAULT_SYNTH = {"synth_train": 1500, "synth_test": 500}
PUBLISHED_CHECKPOINT = "data/hrnetv2_w18_wflw_256x256-2bf032a6_20210125.pth"
PUBLISHED_PRESETS = ("wflw-mmpose", "wflw-1gpu")  # the published recipe, on 8 GPUs or one
MMPOSE_JSON = "data/WFLW/mmpose_json"  # mmpose's json with the official crops, when the user has it
_REMOTE = re.compile(
    r"<(?:script[^>]*\bsrc|link[^>]*\bhref)\s*=\s*[\"']?\s*(?:https?:)?//", flags=re.IGNORECASE
)


class BookError(RuntimeError):
    """A book build that cannot go on: a failed notebook, a failed HTML build, a remote asset."""


class CommandError(RuntimeError):
    """A command run for a notebook (training, evaluation) failed; the message carries its last output."""


# ----------------------------------------------------------------------------- paths and commands


def repo_path(path: str | Path) -> Path:
    """A parameter path as given (absolute) or relative to the repository root, whatever the cwd.

    The notebooks run with cwd = repo root under the driver but with cwd = nbs/ in JupyterLab.
    """
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO / path


def stream(command: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a command, echoing its output as it comes (progress bars at most every few seconds).

    Raises `CommandError` with the command and its last lines of output when it fails.
    """
    print("$", " ".join(str(c) for c in command), flush=True)
    merged = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        [str(c) for c in command],
        cwd=cwd or REPO,
        env=merged,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    tail: list[str] = []
    pending, last_progress = b"", 0.0
    while chunk := process.stdout.read1(4096):
        pending += chunk
        *complete, pending = re.split(rb"(?<=[\r\n])", pending)
        for piece in complete:
            text = piece.decode(errors="replace").strip()
            if not text:
                continue
            tail = [*tail[-39:], text]
            if piece.endswith(b"\n") or time.monotonic() - last_progress > 5.0:
                print(text, flush=True)
                last_progress = time.monotonic()
    if pending.strip():
        print(pending.decode(errors="replace").strip(), flush=True)
    code = process.wait()
    if code != 0:
        last = "\n".join(tail[-15:])
        raise CommandError(
            f"`{' '.join(str(c) for c in command)}` exited with status {code}; its last output:\n{last}"
        )


# ----------------------------------------------------------------------------- what the notebooks call


def ensure_data(
    data_root: str | Path, data_kind: str, synth_train: int, synth_test: int, seed: int = 0
) -> Path:
    """The dataset root, synthesised first when it is a synthetic root that does not exist yet.

    A WFLW root is never made here: `make data` downloads it; a missing one is a clear error.
    """
    root = repo_path(data_root)
    annotations = root / "WFLW_annotations"
    if annotations.is_dir():
        return root
    if data_kind == "wflw":
        raise FileNotFoundError(f"{root}: no WFLW_annotations folder; run `make data` (see data/README.md)")
    if data_kind != "synthetic":
        raise ValueError(f"data_kind must be 'synthetic' or 'wflw', not {data_kind!r}")
    from hrnet_lib.data.synthetic import synthesize

    synthesize(root, n_train=synth_train, n_test=synth_test, seed=seed)
    return root


def recipe_variants(run_dir: str | Path) -> list[str]:
    """The run's departures from the published recipe that mmpose publishes as rows of their own
    (`loss=awing`, `unbiased=true`), from RUN/config.json; [] for the recipe itself."""
    with open(repo_path(run_dir) / "config.json", encoding="utf-8") as handle:
        config = json.load(handle)["config"]
    variants = [] if config.get("loss", "mse") == "mse" else [f"loss={config['loss']}"]
    return variants + (["unbiased=true"] if config.get("unbiased") else [])


def comparable(data_kind: str, preset: str, run_dir: str | Path | None = None) -> bool:
    """Whether a run may be set against the published 4.06 row: real WFLW and the published recipe, and,
    when `run_dir` is given, none of the `recipe_variants` (they have published rows of their own)."""
    same = data_kind == "wflw" and preset in PUBLISHED_PRESETS
    return same and not (run_dir is not None and recipe_variants(run_dir))


def model_line(results: dict[str, Any]) -> str:
    """The evaluated model as a caption states it: name, input and heatmap sizes (from results.json)."""
    model = results["provenance"]["model"]
    return (
        f"{model['model']}, {model['input_size']}x{model['input_size']} input, "
        f"{model['heatmap_size']}x{model['heatmap_size']} heatmaps"
    )


def run_finished(run_dir: str | Path) -> bool:
    """Whether a run folder holds a finished training run: its last checkpoint reached the run's total
    number of steps (RUN/config.json "total_iters") and its best checkpoint exists."""
    run = repo_path(run_dir)
    if not all((run / name).is_file() for name in ("config.json", "last.pt", "best.pt")):
        return False
    from hrnet_lib.train.checkpoint import load_checkpoint

    with open(run / "config.json", encoding="utf-8") as handle:
        total = int(json.load(handle)["total_iters"])
    return int(load_checkpoint(run / "last.pt")["iteration"]) >= total


def ensure_run(
    run_dir: str | Path, preset: str, data_root: str | Path, nproc: int, rerun: bool = False
) -> Path:
    """The run folder of a finished training run: reused when finished, else trained (or resumed) now.

    Training goes through the command line, under `torchrun --nproc_per_node nproc` when nproc > 1
    (gloo processes on a CPU, NCCL on GPUs), and its progress is streamed into the notebook.
    With `rerun`, an existing run folder is moved aside (`RUN.old-TIME`) and trained again.
    """
    run = repo_path(run_dir)
    if rerun and run.exists():
        aside = run.with_name(f"{run.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run.rename(aside)
        print(f"rerun: moved the previous run to {aside}")
    if run_finished(run):
        print(f"reusing the finished run in {run} (pass rerun=True to train again)")
        return run
    args = ["train", "--preset", preset, "--data-root", str(repo_path(data_root)), "--out", str(run)]
    if (run / "last.pt").is_file():
        args.append("--resume")
    if nproc > 1:
        launcher = [
            str(Path(sys.executable).with_name("torchrun")),
            "--standalone",
            f"--nproc_per_node={nproc}",
        ]
        command = [*launcher, "-m", "hrnet_lib", *args]
    else:
        command = [sys.executable, "-m", "hrnet_lib", *args]
    stream(command, env={"PYTHONUNBUFFERED": "1"})
    if not run_finished(run):
        raise RuntimeError(f"{run}: training ended without a finished run (see the output above)")
    return run


def run_provenance(run_dir: str | Path, data_kind: str, preset: str, data_root: str | Path) -> dict[str, str]:
    """The provenance fields of a training run (see `viz.provenance`), from RUN/config.json.

    Checks that the run is the one the book is about: trained with `preset` on `data_root`; the date
    is when its last checkpoint was written, unless the config records one.
    """
    run = repo_path(run_dir)
    with open(run / "config.json", encoding="utf-8") as handle:
        info = json.load(handle)
    command = info.get("command") or []
    run_preset = info.get("preset") or (
        command[command.index("--preset") + 1] if "--preset" in command else None
    )
    if run_preset != preset:
        raise ValueError(
            f"{run / 'config.json'}: the run was trained with preset {run_preset!r}, not {preset!r}"
        )
    if Path(info["data_root"]).resolve() != repo_path(data_root).resolve():
        raise ValueError(
            f"{run / 'config.json'}: the run was trained on {info['data_root']}, not {data_root}"
        )
    finished = datetime.datetime.fromtimestamp((run / "last.pt").stat().st_mtime, datetime.timezone.utc)
    hardware = f"{info['world_size']} x {info['device']}"
    return {
        "data_kind": data_kind,
        "preset": preset,
        "commit": info["commit"],
        "data_checksum": info["data_manifest_sha256"],
        "date": info.get("date") or finished.strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware,
    }


def read_log(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """RUN/log.jsonl split into its training-step records and its validation (per epoch) records."""
    path = repo_path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    records = read_jsonl(path)
    steps = [r for r in records if "val_nme" not in r]
    return steps, [r for r in records if "val_nme" in r]


def ensure_results(
    run_dir: str | Path, data_root: str | Path, name: str = "results", extra: Sequence[str] = ()
) -> dict[str, Any]:
    """`RUN/<name>.json` from `python -m hrnet_lib evaluate`, evaluated now when it is missing or older
    than the run's best checkpoint. `extra` adds options (`--no-flip`, `--decoder dark`, `--checkpoint`)."""
    run = repo_path(run_dir)
    out = run / f"{name}.json"
    checkpoint = run / "best.pt"
    if "--checkpoint" in extra:
        checkpoint = repo_path(extra[list(extra).index("--checkpoint") + 1])
    stale = not out.is_file() or out.stat().st_mtime < checkpoint.stat().st_mtime
    if stale:
        options = list(extra) if "--checkpoint" in extra else ["--checkpoint", str(checkpoint), *extra]
        command = [
            sys.executable,
            "-m",
            "hrnet_lib",
            "evaluate",
            *options,
            "--data-root",
            str(repo_path(data_root)),
            "--quiet",  # the notebook shows the results; no progress bars in the book
        ]
        stream([*command, "--out", str(out)], env={"PYTHONUNBUFFERED": "1"})
    else:
        print(f"reusing {out}")
    with open(out, encoding="utf-8") as handle:
        return json.load(handle)


# ----------------------------------------------------------------------------- the report page


def report_summary(parameters: dict[str, Any]) -> str:
    """Markdown summary of the run behind the book, made only from its records (nothing typed in)."""
    from hrnet_lib import viz
    from hrnet_lib.evaluate.report import COLUMNS, PUBLISHED, paired_difference

    run = repo_path(parameters["run_dir"])
    results_path = run / "results.json"
    with open(results_path, encoding="utf-8") as handle:
        results = json.load(handle)
    trained = run_provenance(run, parameters["data_kind"], parameters["preset"], parameters["data_root"])
    steps, validations = read_log(run)
    best = min(validations, key=lambda record: record["val_nme"], default=None)
    chosen = (
        f"best validation NME {100 * best['val_nme']:.2f}% (epoch {best['epoch'] + 1})"
        if best
        else "no validation hold-out (val_fraction=0): best.pt holds the final weights"
    )
    with open(run / "config.json", encoding="utf-8") as handle:
        info = json.load(handle)
    lines = [
        "## The run behind this book",
        "",
        f"- trained: {viz.provenance(trained)}",
        f"- evaluated: {viz.provenance(trained, results)}",
        f"- data root `{parameters['data_root']}`, run folder `{parameters['run_dir']}`",
        f"- training: `python -m hrnet_lib train {' '.join(info.get('command') or [])}` with "
        f"{info['world_size']} process(es), {steps[-1]['iteration'] if steps else 0} steps of "
        f"{info['config']['global_batch']} images "
        f"over {info['config']['epochs']} epochs; {chosen}, "
        f"median {_median([r['images_per_s'] for r in steps]):.1f} images/s",
        f"- evaluation: `{results['provenance'].get('command', 'python -m hrnet_lib evaluate')}`",
        f"- {_verdict(results['table'])}",
        "",
        "## Result",
        "",
    ]
    rows = [["published HRNetV2-W18 (mmpose)", *(PUBLISHED[c] for c in COLUMNS)]]
    ours = [results["table"]["model"][c]["nme"] for c in COLUMNS]
    rows.append(["this run", *ours])
    same_recipe = comparable(parameters["data_kind"], parameters["preset"], run)
    differing = ", ".join(
        [f"{parameters['data_kind']} data", f"preset {parameters['preset']}", *recipe_variants(run)]
    )
    if same_recipe:
        differences = (None if v is None else v - PUBLISHED[c] for v, c in zip(ours, COLUMNS, strict=True))
        rows.append(["this run - published", *differences])
    rows.append(["mean-shape baseline", *(results["table"]["baseline"][c]["nme"] for c in COLUMNS)])
    intervals = ""
    for name, label in (
        ("results-noflip", "this run, no flip test"),
        ("results-dark", "this run, DARK decoder"),
        ("published", "published checkpoint, evaluated here"),
    ):
        path = run / f"{name}.json"
        if path.is_file():
            with open(path, encoding="utf-8") as handle:
                other = json.load(handle)
            rows.append([label, *(other["table"]["model"][c]["nme"] for c in COLUMNS)])
            if name == "published":
                test = paired_difference(results, other)["test"]
                intervals = (
                    f" On the same {test['faces']} test faces this run minus the released checkpoint is "
                    f"{test['difference']:+.3f} NME points (95% paired bootstrap interval over faces "
                    f"{test['ci95'][0]:+.3f} to {test['ci95'][1]:+.3f})."
                )
    low, high = results["table"]["model"]["test"].get("nme_ci95") or (None, None)
    if low is not None:
        intervals = (
            f" This run's test NME has a 95% bootstrap interval over faces of {low:.2f} to {high:.2f}."
            + intervals
        )
    lines += [
        viz.markdown_table(["NME (%)", *COLUMNS], rows),
        "",
        viz.caption(
            f"NME (%) of this run ({model_line(results)}) beside the published result"
            + (
                "."
                if same_recipe
                else f": not comparable ({differing}); "
                "the mean-shape baseline is the floor that shows what was learnt."
            )
            + intervals,
            trained,
            results,
        ),
        "",
    ]
    return "\n".join(lines) + "\n"


def _verdict(table: dict[str, Any]) -> str:
    """One sentence on what the run learnt: its full-test NME against the mean-shape baseline's."""
    ours = table["model"]["test"]["nme"]
    floor = table["baseline"]["test"]["nme"]
    if ours < floor:
        times = floor / ours
        return f"learnt: test NME {ours:.2f}% is {times:.1f}x below the mean-shape baseline ({floor:.2f}%)"
    return f"not learnt: test NME {ours:.2f}% is not below the mean-shape baseline ({floor:.2f}%)"


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def write_report_page(path: Path, parameters: dict[str, Any]) -> None:
    """Write the generated part of the reproduction report page (included by book/reproduction.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_summary(parameters), encoding="utf-8")


# ----------------------------------------------------------------------------- the driver


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


if __name__ == "__main__":
    sys.exit(main())
