"""The DDP check: the same global batches trained by one process and by N processes under torchrun end in
the same weights, up to float rounding.

Every process takes its share of each global batch (`EpochSampler`) and DDP averages the gradients over the
processes, so N processes make the update that one process makes on the whole batch. BatchNorm is the
exception: in training mode it normalises over each process's share, not the global batch, so the check
freezes the BatchNorm statistics (`freeze_bn`); SyncBatchNorm would share them, but has no CPU kernel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hrnet_lib import viz
from hrnet_lib.io import read_json, read_jsonl
from hrnet_lib.train.checkpoint import load_checkpoint
from hrnet_lib.train.loop import build_training_model
from hrnet_lib.train.presets import apply_overrides, get_preset
from hrnet_lib.train.run_dir import speed_summary
from hrnet_lib.train.runtime import Runtime, TrainingError

# Every run of the check: BN statistics frozen, nothing held out (no validation), every step logged.
# fp32 everywhere: bf16 rounds passes of different sizes apart far above 1e-5.
CHECK_OVERRIDES = ("freeze_bn=true", "val_fraction=0", "log_every=1", "precision=fp32")
# On GPUs: a global batch that 1, 2, 4 and 8 processes share.
GPU_OVERRIDES = ("device=cuda", "global_batch=64")
CPU_OVERRIDES = ("device=cpu", "global_batch=4")
# The columns of the check's table: header and the row field each shows.
COLUMNS = {
    "processes": "processes",
    "device": "device",
    "global batch": "global_batch",
    "steps": "steps",
    "s / step": "step_s",
    "images / s": "images_per_s",
    "largest weight difference to 1 process": "max_difference",
    "largest weight change": "max_change",
}


def train_command(nproc: int, args: Sequence[str]) -> list[str]:
    """`python -m hrnet_lib train ARGS`, under `torchrun --standalone --nproc_per_node N` when N > 1."""
    if nproc > 1:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        return [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "hrnet_lib", "train", *args]
    return [sys.executable, "-m", "hrnet_lib", "train", *args]


def gpu_process_counts(gpus: int) -> tuple[int, ...]:
    """The process counts a node with `gpus` GPUs compares: 1, 2, 4 and 8, as far as it has GPUs."""
    return tuple(n for n in (1, 2, 4, 8) if n <= gpus)


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts' floating-point tensors."""
    if a.keys() != b.keys():
        raise ValueError(f"the state dicts differ in their keys: {sorted(a.keys() ^ b.keys())[:5]}")
    return max(
        (float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()),
        default=0.0,
    )


def run_check(
    data_root: Path,
    out: Path,
    processes: Sequence[int] = (1, 2),
    steps: int = 5,
    overrides: Sequence[str] = CPU_OVERRIDES,
    preset: str = "smoke",
) -> list[dict[str, Any]]:
    """Train `steps` global batches from the same seed once per process count (into out/N-process, made
    anew) and compare each run's last.pt with the first count's. One row per count: processes, device,
    seconds per step and images per second (median after the first step), the largest difference of any
    weight from the first run's, and the largest change of a weight from the start (what the steps did)."""
    args = [*CHECK_OVERRIDES, f"max_iters={steps}", *overrides]
    weights, rows = {}, []
    for count in processes:
        run = Path(out) / f"{count}-process"
        shutil.rmtree(run, ignore_errors=True)
        command = train_command(
            count, ["--preset", preset, "--data-root", str(data_root), "--out", str(run), *args]
        )
        started = time.monotonic()
        # one compute thread per process, as torchrun sets it, so N processes use N cores
        result = subprocess.run(
            command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise TrainingError(
                f"the DDP check's run with {count} process(es) exited with status {result.returncode}:\n"
                f"{result.stderr[-3000:]}"
            )
        took = time.monotonic() - started
        print(f"{count} process(es): {steps} steps in {took:.0f} s, start-up included", flush=True)
        weights[count] = load_checkpoint(run / "last.pt")["model"]
        speed = speed_summary(read_jsonl(run / "log.jsonl"))
        info = read_json(run / "config.json")
        rows.append(
            {
                "processes": info["world_size"],  # as the run recorded it
                "device": info["device"],
                "global_batch": info["config"]["global_batch"],
                "steps": steps,
                "step_s": speed["steady_step_s"],
                "images_per_s": speed["steady_images_per_s"],
                "max_difference": largest_difference(weights[count], weights[processes[0]]),
            }
        )
    start = start_weights(preset, args)
    for row, count in zip(rows, processes, strict=True):
        row["max_change"] = largest_difference(weights[count], start)
    return rows


def start_weights(preset: str, overrides: Sequence[str]) -> dict[str, torch.Tensor]:
    """The weights every run of the check starts from: the model of the preset, built from its seed."""
    cfg = apply_overrides(get_preset(preset), [*overrides, "device=cpu"])
    model = build_training_model(cfg, None, Runtime(0, 1, 0, torch.device("cpu")))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The check's rows as a markdown table, the weight differences to two significant digits."""
    cells = [
        [f"{row[key]:.2g}" if key.startswith("max_") else row[key] for key in COLUMNS.values()]
        for row in rows
    ]
    return viz.markdown_table(list(COLUMNS), cells, digits=3)
