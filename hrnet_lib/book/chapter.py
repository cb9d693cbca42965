"""What the book's notebooks call: the data, the training run and the evaluations a chapter needs.

Each helper reuses what is finished and creates what is missing (synthetic data, a training run through
the command line, an evaluation), so a chapter runs the same under the book driver and in JupyterLab.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hrnet_lib.data.synthetic import synthesize
from hrnet_lib.io import read_jsonl
from hrnet_lib.train.checkpoint import load_checkpoint
from hrnet_lib.train.ddp_check import train_command
from hrnet_lib.viz import shown_path

REPO = Path(__file__).resolve().parents[2]
PUBLISHED_CHECKPOINT = "data/hrnetv2_w18_wflw_256x256-2bf032a6_20210125.pth"
PUBLISHED_PRESETS = ("wflw-mmpose", "wflw-1gpu")  # the published recipe, on 8 GPUs or one
MMPOSE_JSON = "data/WFLW/mmpose_json"  # mmpose's json with the official crops, when the user has it
# Four real WFLW faces that every clone holds (tests/data/README.md credits them).
REAL_FACES = REPO / "tests" / "data" / "wflw-mini"


class CommandError(RuntimeError):
    """A command run for a notebook (training, evaluation) failed; the message carries its last output."""


def repo_path(path: str | Path) -> Path:
    """A parameter path as given (absolute) or relative to the repository root, whatever the cwd.

    The notebooks run with cwd = repo root under the driver but with cwd = nbs/ in JupyterLab.
    """
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO / path


def shown_command(command: Sequence[str | Path]) -> str:
    """A command as a reader should see it: `python` and `torchrun` for this environment's executables
    and every path relative to the repository (`viz.shown_path`), never the building machine's."""
    names = {sys.executable: "python", str(Path(sys.executable).with_name("torchrun")): "torchrun"}
    words = map(str, command)
    return " ".join(names.get(w) or (shown_path(w) if w.startswith("/") else w) for w in words)


def stream(
    command: Sequence[str | Path],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    every: float = 60.0,
) -> None:
    """Run a command, keeping its own output out of the page: one line naming it, its latest line of
    output at most every `every` seconds while it runs (a long training), and its time when it ends.

    Raises `CommandError` with the command and its last lines of output when it fails.
    """
    print("$", shown_command(command), flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        [str(c) for c in command],
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    tail: list[str] = []
    pending, last_shown = b"", started
    while chunk := process.stdout.read1(4096):
        pending += chunk
        *complete, pending = re.split(rb"(?<=[\r\n])", pending)
        lines = [text for piece in complete if (text := piece.decode(errors="replace").strip())]
        tail = (tail + lines)[-40:]
        if tail and time.monotonic() - last_shown > every:
            print(f"  ... {tail[-1]}", flush=True)
            last_shown = time.monotonic()
    tail = [*tail, pending.decode(errors="replace").strip()] if pending.strip() else tail
    code = process.wait()
    if code != 0:
        last = "\n".join(tail[-15:])
        raise CommandError(f"`{shown_command(command)}` exited with status {code}; its last output:\n{last}")
    print(f"  done in {time.monotonic() - started:.0f} s", flush=True)


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
    print(f"synthesising {synth_train} + {synth_test} faces into {shown_path(root)}", flush=True)
    synthesize(root, n_train=synth_train, n_test=synth_test, seed=seed, progress=False)
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
        print(f"rerun: moved the previous run to {shown_path(aside)}")
    if run_finished(run):
        print(f"reusing the finished run in {shown_path(run)} (pass rerun=True to train again)")
        return run
    args = ["--preset", preset, "--data-root", str(repo_path(data_root)), "--out", str(run)]
    if (run / "last.pt").is_file():
        args.append("--resume")
    stream(train_command(nproc, args), env={"PYTHONUNBUFFERED": "1"})
    if not run_finished(run):
        raise RuntimeError(f"{run}: training ended without a finished run (see the output above)")
    return run


def run_provenance(run_dir: str | Path, data_kind: str, preset: str, data_root: str | Path) -> dict[str, str]:
    """The provenance fields of a training run (see `viz.provenance`), from RUN/config.json.

    Checks that the run is the one the book is about: trained with `preset` on `data_root`; the date
    is when its last checkpoint was written, unless the config records one; the precision is the one that
    ran.
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
    precision = info.get("precision")
    if precision is None:  # a run from before precision was recorded: bf16 ran on GPUs only
        gpu = not str(info["device"]).startswith("cpu")
        precision = "bf16" if gpu and info["config"].get("bf16", True) else "fp32"
    return {
        "data_kind": data_kind,
        "preset": preset,
        "commit": info["commit"],
        "data_checksum": info["data_manifest_sha256"],
        "date": info.get("date") or finished.strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware,
        "train_precision": precision,
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
        # --quiet leaves only the results table as output: no line of it is worth a progress note
        stream([*command, "--out", str(out)], env={"PYTHONUNBUFFERED": "1"}, every=float("inf"))
    else:
        print(f"reusing {shown_path(out)}")
    with open(out, encoding="utf-8") as handle:
        return json.load(handle)
