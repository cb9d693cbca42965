"""`python -m hrnet_lib bench`: throughput of data loading, the model and a training step.

Benchmarks are not tests: this measures and writes `OUT/bench.json` and `OUT/bench.png`, and prints
a short table. Every number is measured on the machine that runs it; nothing is estimated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from hrnet_lib.provenance import hardware
from hrnet_lib.train.checkpoint import save_json


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float]] = []
    for key in ("no_cache", "cache", "cache_device_targets"):
        bars.append((f"data, {key.replace('_', ' ')}\n(samples/s)", results["data"][key]["samples_per_s"]))
    for device, model in results["model"].items():
        for batch, row in model["images_per_s"].items():
            for variant, value in row.items():
                bars.append((f"{device} forward\nbatch {batch}, {variant}", value))
    bars.append(("train step\n(images/s)", results["train"]["images_per_s"]))
    fig, ax = plt.subplots(figsize=(1.4 * len(bars) + 2, 4), layout="constrained")
    ax.bar(range(len(bars)), [v for _, v in bars], color="#4c72b0")
    ax.set_xticks(range(len(bars)), [k for k, _ in bars], fontsize=8)
    ax.set_ylabel("per second")
    ax.set_title(f"hrnet_lib throughput on {results['hardware']}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    from hrnet_lib.data.loader import bench_loader
    from hrnet_lib.data.synthetic import synthesize
    from hrnet_lib.model.inference import bench_forward
    from hrnet_lib.train.loop import bench_train
    from hrnet_lib.train.presets import apply_overrides, get_preset

    parser = argparse.ArgumentParser(prog="python -m hrnet_lib bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument(
        "--data-root", type=Path, default=None, help="dataset to read (default: a synthetic one)"
    )
    parser.add_argument("--samples", type=int, default=200, help="samples per data-loading measurement")
    parser.add_argument("--train-preset", default="wflw-mmpose", help="configuration of the training step")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="on a GPU, also time torch.compile'd forward passes and compile the training step (minutes)",
    )
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    root = args.data_root or args.out / "synthetic"
    if args.data_root is None and not (root / "WFLW_annotations").is_dir():
        synthesize(root, n_train=args.samples, n_test=20, seed=0)

    results: dict[str, Any] = {
        "hardware": hardware("cuda" if torch.cuda.is_available() else "cpu"),
        "torch": torch.__version__,
    }
    cache_dir = args.out / "cache"
    results["data"] = {
        "no_cache": bench_loader(root, n=args.samples, cache=False),
        "cache": bench_loader(root, n=args.samples, cache=True, cache_dir=cache_dir),
        "cache_device_targets": bench_loader(
            root, n=args.samples, cache=True, cache_dir=cache_dir, device_targets=True
        ),
    }
    results["data"]["speedup"] = (
        results["data"]["cache"]["samples_per_s"] / results["data"]["no_cache"]["samples_per_s"]
    )
    results["model"] = {"cpu": bench_forward(device="cpu")}
    if torch.cuda.is_available():
        results["model"]["cuda"] = bench_forward(device="cuda", batch_sizes=(1, 64), compile=args.compile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = get_preset(args.train_preset)
    if device == "cpu":
        # On a small CPU, compiling takes minutes, 8 workers compete with the compute and one step of the
        # 512-image global batch takes many minutes: measure the same model and input with steps of 16.
        cfg = apply_overrides(cfg, ["compile=false", "workers=1", "global_batch=16", "per_device_batch=8"])
    elif args.compile:
        cfg = apply_overrides(cfg, ["compile=true"])
    results["train"] = bench_train(cfg, root, device=device, steps=args.train_steps)
    results["train"]["preset"] = args.train_preset

    save_json(results, args.out / "bench.json")
    _plot(results, args.out / "bench.png")
    print(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0
