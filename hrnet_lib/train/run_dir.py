"""A training run's folder: config.json, log.jsonl, last.pt and best.pt, summary.json, and exact resume.

best.pt holds the weights of the lowest validation NME (or of the latest epoch without a hold-out);
last.pt the full training state that `--resume` continues from; config.json the config, data checksum
and every session's command and commit; log.jsonl one record per `log_every` steps and per validation,
each with `elapsed_s` (seconds since its session started); summary.json, once the run is complete, its
speed and where the session's time went. Rank 0 alone writes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from hrnet_lib.data.wflw import data_manifest
from hrnet_lib.device import memory_mb
from hrnet_lib.io import atomic_bytes, jsonl_text, prepare_output, read_json, read_jsonl, save_json
from hrnet_lib.model.inference import forward_flops
from hrnet_lib.train.checkpoint import load_checkpoint, save_checkpoint
from hrnet_lib.train.presets import TrainConfig, legacy_precision
from hrnet_lib.train.runtime import Runtime, TrainingError

# Config keys that may differ between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = {
    "workers",
    "log_every",
    "ckpt_every",
    "max_iters",
    "compile",
    "cudnn_benchmark",
    "val_batch",
    "epochs",
}


class RunDir:
    """The files of one run folder, and this session's log records and checkpoint time."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.last, self.best = self.out / "last.pt", self.out / "best.pt"
        self.log_path, self.config_path = self.out / "log.jsonl", self.out / "config.json"
        self.summary_path = self.out / "summary.json"
        self.records: list[dict[str, Any]] = []  # this session's, for summary.json
        self.checkpoint_s = 0.0
        self.started = time.perf_counter()
        self._log: IO[str] | None = None

    def prepare(self, resume: bool) -> bool:
        """Check the folder can be written before any long work; whether the run resumes from last.pt."""
        try:
            prepare_output(self.config_path)
        except ValueError as error:
            raise TrainingError(str(error)) from None
        if resume and not self.last.is_file():
            print(f"--resume: no checkpoint at {self.last}, starting a new run", flush=True)
            return False
        if not resume and self.last.exists():
            raise TrainingError(
                f"{self.out} already holds a run ({self.last}); pass --resume or choose another --out"
            )
        return resume

    def read_last(self, cfg: TrainConfig, data_root: Path) -> dict[str, Any]:
        """last.pt, checked against this session's data and config (only RESUMABLE_CHANGES may differ)."""
        try:
            state = load_checkpoint(self.last)
        except ValueError as error:
            raise TrainingError(
                f"--resume: {error}; move it away to start a new run in {self.out}"
            ) from error
        recorded = read_json(self.config_path).get("data_manifest_sha256")
        if recorded and recorded != data_manifest(data_root):
            raise TrainingError(
                f"--resume: the annotations in {data_root} differ from those {self.out} started with "
                "(data_manifest_sha256 in config.json); an exact resume needs the same data"
            )
        ours, theirs = cfg.to_dict(), legacy_precision(state["config"])
        changed = sorted(k for k, v in theirs.items() if k not in RESUMABLE_CHANGES and ours.get(k) != v)
        if changed:
            overrides = " ".join(f"{k}={_override_text(theirs[k])}" for k in changed)
            raise TrainingError(
                f"--resume with a different config: {changed} differ from {self.last}; "
                f"add the overrides {overrides} to continue it as it started"
            )
        return state

    def start_session(self, info: dict[str, Any], resume: bool, iteration: int) -> None:
        """Write config.json (this session's config, every session's command and commit), cut the log back
        to the resumed step, remove a stale summary, and open the log."""
        session = {"command": info["command"], "commit": info["commit"], "from_iteration": iteration}
        if not resume:
            self.log_path.unlink(missing_ok=True)
            info["sessions"] = [session]
        else:
            info["sessions"] = [*read_json(self.config_path).get("sessions", []), session]
            try:
                kept = [
                    r for r in read_jsonl(self.log_path, torn_tail=True) if r.get("iteration", 0) <= iteration
                ]
            except ValueError as error:
                raise TrainingError(str(error)) from None
            atomic_bytes(self.log_path, jsonl_text(kept).encode())
        save_json(info, self.config_path)
        self.summary_path.unlink(missing_ok=True)  # written again when this session completes the run
        self._log = open(self.log_path, "a")  # noqa: SIM115 (closed by `close`)

    def log(self, record: dict[str, Any]) -> None:
        """Append a record, stamped with the seconds since this session started."""
        if self._log is not None:
            record["elapsed_s"] = time.perf_counter() - self.started
            self._log.write(jsonl_text([record]))
            self._log.flush()
            self.records.append(record)

    def save(self, state: dict[str, Any], path: Path) -> None:
        """Atomically save a checkpoint, counting the time for summary.json."""
        begin = time.perf_counter()
        save_checkpoint(state, path)
        self.checkpoint_s += time.perf_counter() - begin

    def kept_note(self) -> str:
        """Where the last good checkpoint is, for an error message."""
        if not self.last.exists():
            return " (no checkpoint was written yet)"
        return (
            f"; the last good checkpoint is {self.last} (iteration {load_checkpoint(self.last)['iteration']})"
        )

    def finish(self, iteration: int, epochs: int, best_nme: float, setup_s: float, validated: bool) -> None:
        """Write summary.json, the sign of a complete run, and say where the chosen weights are."""
        summary = {
            "iterations": iteration,
            "epochs_done": epochs,
            "best_val_nme": best_nme if math.isfinite(best_nme) else None,
            "best_iteration": load_checkpoint(self.best)["iteration"],
            "seconds_this_session": time.perf_counter() - self.started,
            "setup_s": setup_s,
            **speed_summary(self.records),
            "checkpoint_s": self.checkpoint_s,
        }
        save_json(summary, self.summary_path)
        chosen = f"best validation NME {100 * best_nme:.2f}%" if validated else "final weights kept"
        print(f"done: {iteration} steps, {chosen}, {self.best}", flush=True)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def training_flops(cfg: TrainConfig) -> int:
    """Model FLOPs of one training image: three times its forward pass (the backward pass computes the
    gradients of both the activations and the weights, each as costly as the forward)."""
    return 3 * forward_flops(cfg.model, cfg.input_size, cfg.num_keypoints, cfg.upsample)


def _override_text(value: Any) -> str:
    """A config value as a `key=value` override writes it (lists comma-separated, None as none)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


class StepMeter:
    """Loss, data wait and wall time of the steps since the last log record; with the model FLOPs of an
    image, their rate, and with the device's dense bf16 peak (TFLOP/s), the share of it (MFU)."""

    def __init__(self, flops_per_image: int = 0, peak_tflops: float | None = None) -> None:
        self.flops_per_image, self.peak_tflops = flops_per_image, peak_tflops
        self.reset()

    def reset(self) -> None:
        self.loss, self.steps, self.wait, self.start = 0.0, 0, 0.0, time.perf_counter()

    def add(self, loss: float, wait: float) -> None:
        self.loss += loss
        self.steps += 1
        self.wait += wait

    def record(self, cfg: TrainConfig, rt: Runtime) -> dict[str, Any]:
        """The log fields of the steps since the last record: loss, throughput, data wait, memory."""
        seconds = time.perf_counter() - self.start
        images = self.steps * cfg.global_batch
        record = {
            "loss": self.loss / self.steps,
            "images_per_s": images / seconds,
            "images_per_s_per_device": images / seconds / rt.world,
            "step_s": seconds / self.steps,
            "data_wait_s": self.wait / self.steps,
            "data_wait_share": self.wait / seconds,
            "memory_mb": memory_mb(rt.device),
        }
        if self.flops_per_image:
            record["model_tflops_per_s"] = images / seconds * self.flops_per_image / 1e12
            if self.peak_tflops:
                record["mfu"] = record["model_tflops_per_s"] / rt.world / self.peak_tflops
        return record


def speed_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed of a session from its log records: the cold first window apart, medians of the later ones.

    Keys: first_step_s (None for a resumed session), steady_images_per_s, steady_step_s,
    data_wait_share, steady_model_tflops_per_s (all processes) and mfu (the share of one device's dense
    bf16 peak; see `StepMeter`) as medians over the windows after the first (None when there are none or
    the records lack the field), peak_memory_mb, and validation_s (all validations of the session).
    """
    steps = [r for r in records if "loss" in r]
    steady = steps[1:]  # the first window holds the session's cold start (step 1 alone in a new run)
    first = steps[0] if steps and steps[0]["iteration"] == 1 else None

    def median(key: str) -> float | None:
        values = [r[key] for r in steady if r.get(key) is not None]
        return float(np.median(values)) if values else None

    return {
        "first_step_s": first["step_s"] if first else None,
        "steady_images_per_s": median("images_per_s"),
        "steady_step_s": median("step_s"),
        "data_wait_share": median("data_wait_share"),
        "steady_model_tflops_per_s": median("model_tflops_per_s"),
        "mfu": median("mfu"),
        "peak_memory_mb": max((r["memory_mb"] for r in steps), default=None),
        "validation_s": sum(r["val_s"] for r in records if "val_s" in r),
    }
