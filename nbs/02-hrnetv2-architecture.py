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
# # The HRNetV2 architecture
#
# HRNet (Sun et al., CVPR 2019; Wang et al., TPAMI 2020) keeps a high-resolution
# representation through the whole network instead of recovering it from a
# low-resolution one. After a stem of two stride-2 convolutions (a quarter of the input
# resolution) and a first stage of bottleneck blocks, each new stage adds a branch at
# half the resolution of the last one; within a stage every branch runs its own residual
# blocks and then all branches exchange information (each output branch sums every input
# branch, upsampled or strided to its resolution). HRNetV2's head upsamples the four
# final branches to the highest resolution, concatenates them (18 + 36 + 72 + 144 = 270
# channels for W18) and predicts one heatmap per landmark with two 1x1 convolutions.
#
# This chapter shows the model's code as `hrnet_lib/model/hrnet.py` holds it (each piece
# headed by its file and first line) and runs each piece at once on a tensor. Everything
# below is measured on the model that `hrnet_lib.build_model` returns: the shapes with
# forward hooks, the parameters by counting, the FLOPs with torch's own
# `FlopCounterMode`.

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
import torch

from hrnet_lib import build_model, viz
from hrnet_lib.model.hrnet import BasicBlock, Bottleneck, HighResolutionModule, HRNet
from hrnet_lib.model.inference import STAGES, fuse_plan, model_summary, trace_shapes
from hrnet_lib.provenance import git_commit
from hrnet_lib.train.presets import get_preset

# Published reference figures (FACTS.md): the HRNet paper's W18 landmark model and
# mmpose's count.
PAPER_PARAMS_M, PAPER_GFLOPS, MMPOSE_PARAMS = 9.3, 4.3, 9_662_528

torch.manual_seed(0)
model = build_model("hrnetv2_w18", num_keypoints=98)
summary = model_summary(model, input_size=256)
print(
    f"hrnetv2_w18: {summary['params']['total']:,} parameters, output "
    f"{summary['output_shape']}"
)
# Shapes, parameters and FLOPs depend on the code alone (no data, no training, no
# hardware): its commit.
print(
    f"every table and figure on this page: hrnet_lib commit {git_commit()[:12]}, "
    f"preset {preset}"
)

# %% [markdown]
# ## Stages and branches, drawn from the model
#
# One column per stage; one box per branch with its channels and feature-map size for a
# 256x256 input. The arrows are the fusion at the end of each stage, where every branch
# feeds every branch of the next.

# %%
modules = {f"stage{i}": getattr(model.config, f"stage{i}") for i in range(1, 5)}
branch_stages = [("stem", summary["shapes"]["stem"])] + [
    (
        f"{name}\n{cfg.num_modules} module(s) x {cfg.num_blocks[0]} {cfg.block}",
        summary["shapes"][name],
    )
    for name, cfg in modules.items()
]
head_shapes = [
    (
        "concat (V2)",
        (
            sum(c for c, _, _ in summary["shapes"]["stage4"]),
            *summary["shapes"]["stage4"][0][1:],
        ),
    ),
    ("heatmaps", tuple(summary["output_shape"])),
]
viz.show(
    viz.plot_architecture(branch_stages, head_shapes, input_shape=(3, 256, 256)),
    "HRNetV2-W18 as built by hrnet_lib.build_model: the output shape of each stage's "
    "branches (C, H x W), measured with forward hooks on a 256x256 input.",
)

# %% [markdown]
# ## The residual blocks
#
# Every branch is a chain of residual blocks. The first stage, at a quarter of the input
# resolution, uses four bottleneck blocks (1x1 reduce, 3x3, 1x1 expand to four times the
# width); the branches of the later stages use basic blocks (two 3x3 convolutions). A
# block whose input width differs from its output gets a 1x1 convolution on its
# shortcut.

# %%
viz.show_source(BasicBlock, Bottleneck)

# %%
blocks = {
    "stage 1, first bottleneck (layer1[0])": (model.layer1[0], (1, 64, 64, 64)),
    "stage 2, branch 1, first basic block": (
        model.stage2[0].branches[1][0],
        (1, 36, 32, 32),
    ),
}
with torch.no_grad():
    for name, (block, shape) in blocks.items():
        out = block(torch.randn(shape))
        count = sum(p.numel() for p in block.parameters())
        print(f"{name}: {tuple(shape)} -> {tuple(out.shape)}, {count:,} parameters")

# %% [markdown]
# ## A multi-resolution module and its fusion
#
# A module runs each branch's blocks, then fuses: output branch $i$ is the ReLU of the
# sum over all input branches $j$ of $f_{ij}(x_j)$, where $f_{ii}$ is the identity, a
# lower-resolution branch ($j > i$) is brought up by a 1x1 convolution and an upsampling
# by $2^{j-i}$, and a higher-resolution one ($j < i$) comes down through $i - j$
# stride-2 3x3 convolutions. Stage 4 runs three such modules with four branches.

# %%
viz.show_source(HighResolutionModule.forward, HighResolutionModule._make_fuse_layers)

# %%
module = model.stage4[0]
inputs = [torch.randn(1, c, h, w) for c, h, w in summary["shapes"]["stage4"]]
with torch.no_grad():
    outputs = module(inputs)
for i, (x, y) in enumerate(zip(inputs, outputs, strict=True)):
    print(f"branch {i}: {tuple(x.shape)} -> {tuple(y.shape)}")
sizes = [(h, w) for _, h, w in summary["shapes"]["stage4"]]
viz.show(
    viz.plot_fuse(sizes, fuse_plan(module)),
    "The fusion of stage 4's first module, read from its layers by fuse_plan: which "
    "input branch is upsampled (blue) or strided (red) into which output branch, and "
    "what each path does; every output branch sums all four paths into it.",
)

# %% [markdown]
# ## The HRNetV2 head
#
# HRNetV1 kept only the highest-resolution branch. HRNetV2's representation upsamples
# the four final branches bilinearly to the first one's size and concatenates them, so
# the head sees every resolution: 18 + 36 + 72 + 144 = 270 channels at a quarter of the
# input. Two 1x1 convolutions (with BatchNorm and ReLU between them) map them to one
# heatmap per landmark.

# %%
viz.show_source(HRNet.concat_branches, HRNet.forward)

# %%
# the four branches of stage 4 for a 256x256 image (random values: only shapes matter)
features = [torch.randn(1, c, h, w) for c, h, w in summary["shapes"]["stage4"]]
with torch.no_grad():
    concatenated = model.concat_branches(features)
    heatmaps = model.head(concatenated)
print("branches:", [tuple(f.shape) for f in features])
print("concatenated:", tuple(concatenated.shape), "-> heatmaps:", tuple(heatmaps.shape))

# %% [markdown]
# ## One image traced through the network
#
# `forward_features` is the whole backbone: the stem's two stride-2 convolutions, stage
# 1, and for each later stage a transition (a new, half-resolution branch made from the
# lowest one) followed by the stage's modules. `trace_shapes` runs one 256x256 image
# through the model with forward hooks and records what comes out of each step.

# %%
viz.show_source(HRNet.forward_features)

# %%
rows = []
for step, shapes in trace_shapes(model, 256):
    for branch, (channels, height, width) in enumerate(shapes):
        rows.append(
            [step if branch == 0 else "", branch, channels, f"{height} x {width}"]
        )
viz.show(
    viz.markdown_table(["step", "branch", "channels", "feature map"], rows),
    "One 256x256 image through HRNetV2-W18, step by step (measured with forward "
    "hooks): each transition's output is the next stage's input.",
)

# %% [markdown]
# ## Parameters and FLOPs per stage
#
# The HRNet paper's parameter and operation counts for HRNetV2-W18 on WFLW, and mmpose's
# parameter count (98 heatmaps), are set beside the measured ones below. FLOPs are
# counted here as torch counts them (a multiply-add is 2 FLOPs); the paper's "FLOPs" are
# multiply-adds, so its number compares with half of torch's count (GMACs).

# %%
parts = [name for name in STAGES if summary["params"][name] or summary["flops"][name]]
rows = [
    [
        name,
        f"{summary['params'][name]:,}",
        summary["flops"][name] / 1e9,
        summary["gmacs"][name],
    ]
    for name in parts
]
rows.append(
    [
        "total",
        f"{summary['params']['total']:,}",
        summary["flops"]["total"] / 1e9,
        summary["gmacs"]["total"],
    ]
)
viz.show(
    viz.markdown_table(
        ["part", "parameters", "GFLOPs (torch)", "GMACs"], rows, digits=3
    ),
    "Parameters and FLOPs of HRNetV2-W18 (98 points, 256x256) per part, counted on the "
    "model.",
)
total_m = summary["params"]["total"] / 1e6
reference = [
    ["parameters (M)", total_m, PAPER_PARAMS_M, MMPOSE_PARAMS / 1e6],
    ["GMACs at 256x256", summary["gmacs"]["total"], PAPER_GFLOPS, None],
]
viz.show(
    viz.markdown_table(
        ["", "hrnet_lib (measured)", "paper", "mmpose"], reference, digits=3
    ),
    f"Measured totals beside the published ones; parameters equal mmpose's exactly: "
    f"{summary['params']['total'] == MMPOSE_PARAMS}.",
)
params = {p: summary["params"][p] / summary["params"]["total"] for p in parts}
flops = {p: summary["flops"][p] / summary["flops"]["total"] for p in parts}
top_params, top_flops = max(params, key=params.get), max(flops, key=flops.get)
viz.show(
    viz.plot_stage_costs(
        parts,
        [summary["params"][p] for p in parts],
        [summary["flops"][p] for p in parts],
    ),
    f"Where the parameters and the FLOPs of HRNetV2-W18 are, per part: {top_params} "
    f"holds the most parameters ({100 * params[top_params]:.0f}%), {top_flops} takes "
    f"the most FLOPs ({100 * flops[top_flops]:.0f}%); the head takes "
    f"{100 * flops['head']:.0f}% of the FLOPs.",
)

# %% [markdown]
# ## The model of this book's preset
#
# The GPU presets train the network above; the CPU presets use the smaller
# HRNetV2-W18-small-v2 at a lower resolution so that training fits a 2-core machine.

# %%
config = get_preset(preset)
small = build_model(config.model, num_keypoints=config.num_keypoints)
small_summary = model_summary(small, input_size=config.input_size)
rows = [
    [
        name,
        f"{s['params']['total']:,}",
        s["gmacs"]["total"],
        " / ".join(f"{c}x{h}x{w}" for c, h, w in s["shapes"]["stage4"]),
    ]
    for name, s in (
        ("hrnetv2_w18 @256", summary),
        (f"{config.model} @{config.input_size}", small_summary),
    )
]
viz.show(
    viz.markdown_table(
        ["model", "parameters", "GMACs", "stage-4 branches"], rows, digits=3
    ),
    f"The published model and the one preset {preset} trains (measured).",
)

# %% [markdown]
# ## What the weight loader does with each checkpoint layout
#
# `hrnet_lib.load_weights(model, path_or_state_dict)` detects the layout from the keys
# and renames it to the model's own names (the official release's, as timm's `hrnet_w18`
# uses them):
#
# - **mmpose 0.x** (the published WFLW checkpoint): `backbone.*` and
#   `keypoint_head.final_layer.{0,1,3}`, inside a dict with `state_dict` and `meta`;
# - **mmpose 1.x**: `backbone.*`, `head.conv_layers.{0,1}` and `head.final_layer`;
# - **ImageNet** (official / timm classifier): the backbone is loaded, the
#   classification head (`incre_modules`, `downsamp_modules`, `final_layer`,
#   `classifier`) is ignored and reported, and the heatmap head keeps its
#   initialisation: this is how training starts from ImageNet weights;
# - the project's own checkpoints (`{"model": state_dict, "config": ...}`).
#
# Each layout below is made from one reference model's weights and loaded into a fresh
# model; for the complete layouts, the loaded model's heatmaps equal the reference's
# exactly. Loading is strict: below the table, W18-small-v2 weights (fewer blocks)
# loaded into W18 give one error that lists every missing key at once.

# %%
from hrnet_lib import load_weights
from hrnet_lib.model.inference import calibrate_batchnorm
from hrnet_lib.model.weights import WeightsMismatchError, to_mmpose_state_dict

torch.manual_seed(1)
# BatchNorm statistics from one batch give the reference O(1) activations (a fresh
# HRNet's are ~1e-8), so that equal outputs below mean equal weights.
reference = calibrate_batchnorm(build_model("hrnetv2_w18"), torch.randn(2, 3, 64, 64))
own = reference.state_dict()
backbone = {k: v for k, v in own.items() if not k.startswith("head.")}
classifier = {
    "incre_modules.0.0.conv1.weight": torch.zeros(32, 18, 1, 1),
    "classifier.weight": torch.zeros(1000, 2048),
}
layouts = {
    "project checkpoint": {
        "model": own,
        "config": {"model": "hrnetv2_w18"},
        "epoch": 60,
    },
    "mmpose 0.x file": {
        "state_dict": to_mmpose_state_dict(own, 0),
        "meta": {"mmpose_version": "0.x"},
    },
    "mmpose 1.x file": {"state_dict": to_mmpose_state_dict(own, 1), "meta": {}},
    "ImageNet classifier (official / timm)": {**backbone, **classifier},
}
image = torch.randn(
    1, 3, 64, 64
)  # any multiple of 32: the weights, not the size, are compared
with torch.no_grad():
    expected_features, expected = reference.forward_features(image), reference(image)
rows = []
for name, weights in layouts.items():
    fresh = build_model("hrnetv2_w18").eval()
    report = load_weights(fresh, weights)
    with torch.no_grad():
        pairs = zip(fresh.forward_features(image), expected_features, strict=True)
        features = all(torch.equal(a, b) for a, b in pairs)
        heatmaps = bool(torch.equal(fresh(image), expected))
    rows.append(
        [
            name,
            report.layout,
            report.loaded,
            len(report.ignored),
            len(report.missing),
            features,
            heatmaps,
        ]
    )
header = [
    "weights",
    "layout",
    "loaded",
    "ignored",
    "kept at init",
    "same features",
    "same heatmaps",
]
viz.show(
    viz.markdown_table(header, rows),
    "load_weights on each layout, made from one reference model: tensors loaded, keys "
    "ignored and model keys kept at initialisation; 'same features' and 'same "
    "heatmaps' compare the loaded model's four branch outputs and heatmaps with the "
    "reference's on a random image (ImageNet weights have no heatmap head).",
)
try:
    load_weights(
        build_model("hrnetv2_w18"), build_model("hrnetv2_w18_small_v2").state_dict()
    )
except WeightsMismatchError as error:
    print("W18-small-v2 weights into W18:\n" + "\n".join(str(error).splitlines()[:6]))

# %% [markdown]
# When mmpose's released checkpoint is in `data/`, its load report is shown here too.

# %%
from hrnet_lib.book import chapter

published = chapter.repo_path(chapter.PUBLISHED_CHECKPOINT)
if published.is_file():
    print(load_weights(build_model("hrnetv2_w18"), published))
else:
    print(f"{chapter.PUBLISHED_CHECKPOINT} is not present; nothing to load")
