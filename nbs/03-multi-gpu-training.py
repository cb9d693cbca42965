# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Multi-GPU training
#
# The published model was trained by mmpose on 8 GPUs with 64 images each: a global batch of 512, Adam
# at a learning rate of $2 \times 10^{-3}$ without weight decay, a linear warm-up from $0.001\times$ over
# the first 500 iterations, the rate divided by 10 at epochs 40 and 55, and 60 epochs, on the MSE between
# predicted and target heatmaps (weighted per landmark).
#
# `python -m hrnet_lib train` runs that recipe (presets `wflw-mmpose`, and `wflw-1gpu` for one GPU) or a
# scaled-down one (the CPU presets: a smaller network on smaller crops; the configuration table below
# sets this run beside the published recipe) under `torchrun`: one process per GPU (NCCL), or gloo
# processes on a CPU. Each process gets its share of every global batch, so a global batch holds the
# same faces whatever the number of processes; rank 0 alone validates, logs and saves. Validation runs
# every epoch on a held-out part of the training split, never on the test set.
#
# This notebook launches the training with the chosen number of processes and streams its progress
# here. A finished run in the run folder is reused, not redone (set `rerun = True` to train again); an
# interrupted one is resumed exactly where it stopped.

# %% tags=["parameters"]
data_root = "data/synthetic"
data_kind = "synthetic"
preset = "cpu-default"
nproc = 1
run_dir = "runs/cpu-default"
rerun = False
synth_train = 1500
synth_test = 500

# %%
import json

import numpy as np

from hrnet_lib import viz
from hrnet_lib.book import chapter
from hrnet_lib.train.presets import get_preset

root = chapter.ensure_data(data_root, data_kind, synth_train, synth_test)
run = chapter.ensure_run(run_dir, preset, root, nproc, rerun)
provenance = chapter.run_provenance(run, data_kind, preset, root)
print(viz.provenance(provenance))

# %% [markdown]
# ## The run's configuration
#
# The resolved configuration is stored in the run folder with the commit and a checksum of the
# annotation files, so every figure here can say exactly what produced it.

# %%
with open(run / "config.json", encoding="utf-8") as handle:
    info = json.load(handle)
config = info["config"]
keys = [
    "model",
    "input_size",
    "heatmap_size",
    "sigma",
    "unbiased",
    "loss",
    "global_batch",
    "epochs",
    "lr",
    "warmup_iters",
    "milestones",
    "flip_prob",
    "rot_sigma",
    "rot_prob",
]
recipe = get_preset("wflw-mmpose").to_dict()
gpus = recipe["global_batch"] // recipe["per_device_batch"]
rows = [[key, config[key], recipe[key]] for key in keys]
rows += [
    ["processes (world size)", info["world_size"], gpus],
    ["device", info["device"], f"{gpus} GPUs"],
    [
        "micro-batch x accumulation",
        f"{info['micro_batch']} x {info['accumulation']}",
        f"{recipe['per_device_batch']} x 1",
    ],
    ["training / validation faces", f"{info['train_faces']} / {info['val_faces']}", "-"],
    ["steps per epoch / total", f"{info['iters_per_epoch']} / {info['total_iters']}", "-"],
]
viz.show(
    viz.markdown_table(["setting", "this run", "published recipe (wflw-mmpose)"], rows),
    "Resolved training configuration of this run beside the published recipe (mmpose trained on the whole "
    "WFLW training split and held nothing out; "
    + (
        "this run holds out a validation part to choose best.pt)."
        if info["val_faces"]
        else "nor did this run: val_fraction=0, best.pt holds the final weights)."
    ),
    provenance,
)

# %% [markdown]
# ## Learning rate, loss, validation NME and throughput
#
# All four curves are read from `RUN/log.jsonl`, written by rank 0 while training: one record every
# `log_every` steps (mean loss over the window, learning rate, images per second over all processes,
# time spent waiting for data) and one per epoch with the validation NME.

# %%
steps, validations = chapter.read_log(run)
series = {
    key: np.array([record[key] for record in steps]) for key in ("iteration", "lr", "loss", "images_per_s")
}
fig = viz.plot_training(
    series["iteration"],
    series["lr"],
    series["loss"],
    series["images_per_s"],
    np.array([record["epoch"] + 1 for record in validations]),
    np.array([record["val_nme"] for record in validations]),
)
viz.show(
    fig,
    "Learning-rate schedule, training loss, validation NME (held-out training faces) and throughput of this run.",
    provenance,
)

# %% [markdown]
# The first step is logged on its own: on a GPU it holds the cold start (cuDNN chooses and builds a
# kernel for every convolution shape it has not seen, and `torch.compile` compiles), so the throughput
# below is the median over the windows after it.

# %%
from hrnet_lib.train.run_dir import speed_summary

speed = speed_summary(steps + validations)
best = min(validations, key=lambda record: record["val_nme"], default=None)
steady = speed["steady_images_per_s"] or float("nan")
tflops, mfu = speed["steady_model_tflops_per_s"], speed["mfu"]
model_flops = (
    "-"
    if tflops is None
    else f"{tflops:.3g}, " + ("no published peak for this device" if mfu is None else f"{100 * mfu:.2f}%")
)
rows = [
    ["steps logged", len(steps)],
    ["first step (s)", speed["first_step_s"]],
    ["median images / s after the first step (all processes)", steady],
    ["... per process", steady / info["world_size"]],
    ["median share of step time waiting for data", speed["data_wait_share"]],
    ["model TFLOP/s (3 x the forward's FLOPs an image), share of the dense bf16 peak (MFU)", model_flops],
    ["peak memory of rank 0 (MB)", speed["peak_memory_mb"]],
    ["time in validation (s)", speed["validation_s"]],
    ["final training loss", float(series["loss"][-1])],
]
if best is not None:
    rows += [
        ["best validation NME (%)", 100 * best["val_nme"]],
        ["epoch of the best validation NME", best["epoch"] + 1],
    ]
else:
    rows += [["validation", "none (val_fraction=0): best.pt holds the final weights"]]
viz.show(
    viz.markdown_table(["measure", "value"], rows, digits=4),
    "Throughput and outcome of this run.",
    provenance,
)
