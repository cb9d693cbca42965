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
# The published model was trained by mmpose on 8 GPUs with 64 images each: a global
# batch of 512, Adam at a learning rate of $2 \times 10^{-3}$ without weight decay, a
# linear warm-up from $0.001\times$ over the first 500 iterations, the rate divided by
# 10 at epochs 40 and 55, and 60 epochs, on the MSE between predicted and target
# heatmaps (weighted per landmark).
#
# `python -m hrnet_lib train` runs that recipe (presets `wflw-mmpose`, and `wflw-1gpu`
# for one GPU) or a scaled-down one (the CPU presets: a smaller network on smaller
# crops; the configuration table below sets this run beside the published recipe) under
# `torchrun`: one process per GPU (NCCL), or gloo processes on a CPU. Each process gets
# its share of every global batch, so a global batch holds the same faces whatever the
# number of processes; rank 0 alone validates, logs and saves. Validation runs every
# epoch on a held-out part of the training split, never on the test set.
#
# This chapter first walks through that machinery in the library's own lines (each piece
# headed by its file and first line, and run at once): the process group, how a global
# batch is dealt to the processes, gradient accumulation, the gradient all-reduce and
# the schedule. A live experiment then trains the same global batches with one process
# and with two, on the machine that builds the book. Last comes the report of the
# training run behind this book: it is launched here with the chosen number of
# processes, or reused when finished (set `rerun = True` to train again); an interrupted
# run is resumed exactly where it stopped.

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
import torch

from hrnet_lib import viz
from hrnet_lib.book import chapter
from hrnet_lib.train import ddp_check, loop, runtime
from hrnet_lib.train.presets import TrainConfig, apply_overrides, get_preset
from hrnet_lib.train.recipe import lr_at
from hrnet_lib.train.sampler import EpochSampler, deal

root = chapter.ensure_data(data_root, data_kind, synth_train, synth_test)
run = chapter.ensure_run(run_dir, preset, root, nproc, rerun)
provenance = chapter.run_provenance(run, data_kind, preset, root)
with open(run / "config.json", encoding="utf-8") as handle:
    info = json.load(handle)
print(viz.provenance(provenance))

# %% [markdown]
# ## One process per GPU: the process group
#
# `torchrun --nproc_per_node N -m hrnet_lib train ...` starts N copies of the training
# command and gives each its place in environment variables: `RANK` (0 to N-1 over all
# machines), `LOCAL_RANK` (its GPU on this machine) and `WORLD_SIZE` (N), with
# `MASTER_ADDR` and `MASTER_PORT` where the processes meet. `setup_runtime` reads them,
# takes the GPU of its local rank and joins the process group: NCCL between GPUs, gloo
# between CPU processes. Started without torchrun, the same code runs as one process
# with no group.

# %%
viz.show_source(runtime.setup_runtime)

# %%
print("in this notebook (no torchrun):", runtime.setup_runtime(get_preset("smoke")))

# %% [markdown]
# ## Dealing a global batch to the processes
#
# An epoch is one permutation of the training faces, seeded by (seed + epoch) and padded
# to whole global batches. Global batch $i$ is the slice $[iG, (i+1)G)$ of that order,
# and process $r$ of $N$ takes every $N$-th face of it from the $r$-th. So the same
# faces make up each global batch whatever the number of processes: only who computes
# which image changes.

# %%
viz.show_source(EpochSampler)

# %%
faces, example_batch = info["train_faces"], 16
rows = []
for world in (1, 2, 4, 8):
    shares = deal(faces, example_batch, world, seed=0)
    cells = [" ".join(map(str, share)) for share in shares] + [""] * (8 - world)
    whole = sorted(sum(shares, [])) == sorted(deal(faces, example_batch, 1, seed=0)[0])
    rows.append([world, *cells, whole])
viz.show(
    viz.markdown_table(
        ["processes", *(f"rank {r}" for r in range(8)), f"same {example_batch} faces"],
        rows,
    ),
    f"The first global batch of epoch 0 (a global batch of {example_batch} for the "
    f"example; this run's is {info['config']['global_batch']}) over this run's "
    f"{faces} training faces, dealt by EpochSampler to 1, 2, 4 and 8 processes: the "
    f"face indices each rank trains on.",
    provenance,
)

# %% [markdown]
# ## Gradient accumulation keeps the global batch
#
# The global batch is part of the recipe; the number of processes is not. Each process
# takes `global_batch / world` images a step, in micro-batches of `per_device_batch`
# when that is smaller (a GPU with too little memory), accumulating their gradients
# before the one optimiser step. DDP averages the gradients over the processes during
# the backward pass of the last micro-batch only (`no_sync` skips the others), so the
# step is the mean gradient of the whole global batch.

# %%
viz.show_source(runtime.batch_sizes, loop.forward_backward)

# %%
rows = []
for name, overrides in (("wflw-mmpose", []), ("wflw-mmpose", ["per_device_batch=32"])):
    cfg = apply_overrides(get_preset(name), overrides)
    for world in (1, 2, 4, 8):
        per_process, micro, accumulation = runtime.batch_sizes(cfg, world)
        total = world * accumulation * micro
        rows.append(
            [name, cfg.per_device_batch, world, per_process, micro, accumulation, total]
        )
viz.show(
    viz.markdown_table(
        [
            "preset",
            "per_device_batch",
            "processes",
            "per process",
            "micro-batch",
            "accumulated",
            "global batch",
        ],
        rows,
    ),
    "runtime.batch_sizes for the published recipe on 1, 2, 4 and 8 processes: the "
    "global batch stays 512 (processes x accumulated micro-batches x micro-batch).",
)

# %% [markdown]
# ## The learning-rate schedule
#
# The rate is a function of the optimiser step alone (mmpose's schedule): a linear
# warm-up from $0.001\times$ over the first steps, then a step decay by $\times 0.1$ at
# the milestone epochs. A resumed run therefore needs no scheduler state.

# %%
viz.show_source(lr_at)

# %%
recipe_steps = EpochSampler(7125, 512, 1, 0, 0).steps  # 7,500 WFLW faces, 5% held out
this_config = TrainConfig.from_dict(info["config"])
schedules = {}
for name, cfg, per_epoch in (
    ("published recipe (wflw-mmpose)", get_preset("wflw-mmpose"), recipe_steps),
    (f"this run (preset {preset})", this_config, info["iters_per_epoch"]),
):
    steps = np.arange(per_epoch * cfg.epochs)
    schedules[name] = (steps, [lr_at(int(i), per_epoch, cfg) for i in steps])
viz.show(
    viz.plot_schedules(schedules),
    f"lr_at over every optimiser step: the published recipe as wflw-mmpose runs it "
    f"({recipe_steps} steps an epoch: WFLW's 7,500 training faces less the 5% held out "
    f"to pick best.pt; mmpose used all of them, 15 steps; 60 epochs) and this run "
    f"({info['iters_per_epoch']} steps an epoch, {this_config.epochs} epochs).",
    provenance,
)

# %% [markdown]
# ## The gradient all-reduce and the optimiser step
#
# `wrap_model` wraps the model in `DistributedDataParallel` when a process group exists.
# DDP registers a hook on every parameter: as the backward pass produces gradients, it
# averages them over the processes in buckets (an all-reduce), overlapping the
# communication with the rest of the backward pass. After it every process holds the
# same mean gradient, and `optimizer_step` takes the same Adam step everywhere, so the
# weights stay identical without ever being sent. One more all-reduce carries the loss
# (for the log) and whether any process was asked to stop. The live check below runs
# both under torchrun.

# %% [markdown]
# ## A live check: one process and two make the same steps
#
# If DDP is right, training the same global batches with one process and with two gloo
# processes under torchrun ends in the same weights, up to the rounding of float sums
# taken in another order. `run_check` trains a few steps of the smoke model on this
# book's data both ways, from the same seed, and compares the two `last.pt` files.
#
# BatchNorm needs care. In training mode it normalises each batch with that batch's own
# mean and variance, and under DDP each process sees only its share: two processes
# normalise over 2 images each where one process normalises over 4, a different model by
# design (the published recipe's BatchNorm also saw only each GPU's 64 images).
# `SyncBatchNorm` shares the statistics over the processes, but torch has no CPU kernel
# for it, so the check freezes the BatchNorm statistics instead (`freeze_bn=true`:
# BatchNorm layers run in eval mode with their running statistics). On a machine with
# GPUs the check is repeated on 1, 2, 4 and 8 of them, as many as there are, and adds a
# throughput row for each.

# %%
viz.show_source(loop.wrap_model, loop.optimizer_step, ddp_check.run_check)

# %%
check = run.parent / "ddp-check"
rows = ddp_check.run_check(root, check / "cpu", (1, 2), steps=5)
if torch.cuda.is_available():
    counts = ddp_check.gpu_process_counts(torch.cuda.device_count())
    overrides = ddp_check.GPU_OVERRIDES
    rows += ddp_check.run_check(root, check / "gpu", counts, 20, overrides)
viz.show(
    ddp_check.table(rows),
    "The same global batches trained with 1 and 2 gloo processes on this machine's CPU "
    "(and on its GPUs, if any), BatchNorm statistics frozen: the largest difference of "
    "any weight from the one-process run, beside the largest change the steps made to "
    "a weight. Seconds per step and images per second are medians after the first step "
    "(one compute thread per process).",
    provenance,
)
difference = rows[1]["max_difference"]
print(
    f"largest weight difference, 2 gloo processes vs 1: {difference:.2g} "
    f"({'below' if difference < 1e-5 else 'NOT below'} 1e-5: float rounding)"
)

# %% [markdown]
# ## The run's configuration
#
# The resolved configuration is stored in the run folder with the commit and a checksum
# of the annotation files, so every figure here can say exactly what produced it.

# %%
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
    [
        "training / validation faces",
        f"{info['train_faces']} / {info['val_faces']}",
        "-",
    ],
    [
        "steps per epoch / total",
        f"{info['iters_per_epoch']} / {info['total_iters']}",
        "-",
    ],
]
viz.show(
    viz.markdown_table(["setting", "this run", "published recipe (wflw-mmpose)"], rows),
    "Resolved training configuration of this run beside the published recipe (mmpose "
    "trained on the whole WFLW training split and held nothing out; "
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
# All four curves are read from `RUN/log.jsonl`, written by rank 0 while training: one
# record every `log_every` steps (mean loss over the window, learning rate, images per
# second over all processes, time spent waiting for data) and one per epoch with the
# validation NME.

# %%
steps, validations = chapter.read_log(run)
series = {
    key: np.array([record[key] for record in steps])
    for key in ("iteration", "lr", "loss", "images_per_s")
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
    "Learning-rate schedule, training loss, validation NME (held-out training faces) "
    "and throughput of this run.",
    provenance,
)

# %% [markdown]
# The first step is logged on its own: on a GPU it holds the cold start (cuDNN chooses
# and builds a kernel for every convolution shape it has not seen, and `torch.compile`
# compiles), so the throughput below is the median over the windows after it.

# %%
from hrnet_lib.train.run_dir import speed_summary

speed = speed_summary(steps + validations)
best = min(validations, key=lambda record: record["val_nme"], default=None)
steady = speed["steady_images_per_s"] or float("nan")
tflops, mfu = speed["steady_model_tflops_per_s"], speed["mfu"]
model_flops = (
    "-"
    if tflops is None
    else f"{tflops:.3g}, "
    + ("no published peak for this device" if mfu is None else f"{100 * mfu:.2f}%")
)
rows = [
    ["steps logged", len(steps)],
    ["first step (s)", speed["first_step_s"]],
    ["median images / s after the first step (all processes)", steady],
    ["... per process", steady / info["world_size"]],
    ["median share of step time waiting for data", speed["data_wait_share"]],
    [
        "model TFLOP/s (3 x forward FLOPs an image), MFU (share of dense bf16 peak)",
        model_flops,
    ],
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
