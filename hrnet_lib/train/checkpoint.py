"""Checkpoint files: atomic saves, RNG state capture and restore, safe loading.

Checkpoints hold only tensors and plain Python values, so they load with `torch.load(weights_only=True)`;
they are written through `hrnet_lib.io.atomic_write`, so a run killed mid-save keeps the previous file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrnet_lib.io import atomic_write
from hrnet_lib.model.weights import UnsafeCheckpointError, read_checkpoint


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically `torch.save` a checkpoint dict."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` onto the CPU; a clear error when it is missing or
    unreadable. `load_state_dict` copies its weights and optimiser state to the model's device."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state, _ = read_checkpoint(path)  # weights_only: a file that would run code is refused
    except UnsafeCheckpointError as error:
        raise ValueError(
            f"cannot read checkpoint {path}: it holds objects of {', '.join(error.types)}, which no "
            "training checkpoint holds and only full unpickling (which can run code) rebuilds"
        ) from None
    except ValueError as error:
        raise ValueError(f"cannot read checkpoint {error}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a training checkpoint (no 'model' entry)")
    return state


def rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch and CUDA generator states, as tensors and plain values.

    CUDA: the current device's generator only (each training process saves its own), so a run resumes on
    a node with a different number of GPUs.
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states captured by `rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
