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
# # Subset evaluation
#
# The trained model is evaluated with the published protocol: the network sees each test
# face's crop and its mirror image (flip test), the heatmaps are decoded by argmax plus
# a quarter-pixel step toward the larger neighbour, and the points are mapped back to
# the image. The crop is the box of the face's ground-truth landmarks padded by 1.25;
# mmpose's published number used the crops of its own json (centre and scale per face),
# which `--annotations` reads when you have it. The captions say which crops each table
# used. The error of a face is the inter-ocular normalised mean error
#
# $$
# \mathrm{NME} = \frac{1}{98} \sum_{k=0}^{97}
# \frac{\lVert \hat p_k - p_k \rVert_2}{\lVert p_{60} - p_{72} \rVert_2},
# $$
#
# with $p_{60}$ and $p_{72}$ the outer eye corners. FR@10% is the share of faces with an
# NME above 0.10 and AUC@10% the area under the cumulative error distribution (CED) from
# 0 to 0.10, normalised to 1.
#
# The chapter first walks through the evaluation's code in the library's own lines (each
# piece headed by its file and first line) and runs it on one test face of this run: the
# decoder, the flip test and the NME. The tables and figures after that come from
# `python -m hrnet_lib evaluate`, whose JSON output this notebook reads; it is run now
# when the run's results are missing or older than its checkpoint.

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
import numpy as np
import torch

from hrnet_lib import viz
from hrnet_lib.book import chapter
from hrnet_lib.data import loader, transforms, wflw
from hrnet_lib.evaluate import crops, decode, metrics, report

root = chapter.ensure_data(data_root, data_kind, synth_train, synth_test)
run = chapter.repo_path(run_dir)
if not chapter.run_finished(run):
    raise FileNotFoundError(
        f"{run}: no finished training run; execute 03-multi-gpu-training (or `make "
        "train`)"
    )
results = chapter.ensure_results(run, root)
trained = chapter.run_provenance(run, data_kind, preset, root)
print(viz.provenance(trained, results))

# %% [markdown]
# ## From a heatmap to a landmark: the decoder
#
# The network gives one heatmap per landmark at a quarter of the input resolution. The
# landmark is read off it in two steps. First the integer position of the heatmap's
# maximum. Then a sub-pixel step: the published (standard) decoder moves a quarter of a
# pixel towards the larger of the two neighbours, along x and along y separately; DARK
# (distribution-aware decoding) smooths the heatmap, takes its logarithm and moves by
# one Newton step of its second-order Taylor expansion around the maximum, an estimate
# of where the peak of a Gaussian really lies. The result is multiplied by the stride
# and mapped back through the crop to image pixels.

# %%
viz.show_source(decode.heatmap_maximum, decode.refine_quarter, decode.refine_dark)

# %%
test_faces = wflw.load_split(root, "test")
network, settings = report.load_model(run / "best.pt")
test_set = loader.WFLWDataset(
    test_faces,
    root / wflw.IMAGE_DIR,
    train=False,
    input_size=settings["input_size"],
    heatmap_size=settings["heatmap_size"],
)
# the test face this run predicts best, and the outer corner of one eye
face = min(results["per_face"], key=lambda record: record["nme"])["index"]
point = 60
sample = test_set[face]
image = torch.from_numpy(sample["image"])[None]
stride = settings["input_size"] / settings["heatmap_size"]
truth = sample["keypoints"][point] / stride
heatmap = decode.predict_heatmaps(network, image, flip=False)[:, point : point + 1]
maximum, score = decode.heatmap_maximum(heatmap)
quarter = decode.refine_quarter(maximum, heatmap)
dark = decode.refine_dark(maximum.numpy(), heatmap.numpy())
decoded = {"argmax": maximum, "quarter-pixel step": quarter, "DARK": dark}
for name, position in decoded.items():
    xy = np.asarray(position).reshape(2)
    error = np.linalg.norm(xy - truth)
    print(f"{name:>18}: ({xy[0]:.3f}, {xy[1]:.3f}), {error:.3f} px from the truth")
viz.show(
    viz.plot_decode(
        heatmap[0, 0].numpy(), {k: np.ravel(v) for k, v in decoded.items()}, truth
    ),
    f"The heatmap this run's best.pt predicts for point {point} (an outer eye corner) "
    f"of test face {face} ({settings['heatmap_size']}x{settings['heatmap_size']}, no "
    "flip test), zoomed to its maximum with each pixel's value: the quarter-pixel "
    "step and DARK's Newton step from the maximum, and the ground truth (x), in "
    "heatmap pixels.",
    trained,
)

# %% [markdown]
# ## The flip test
#
# The model also sees the mirror image of each crop. Its heatmaps are mirrored back,
# each channel is swapped with its flip partner (the left eye's corner becomes the right
# eye's), and the result is shifted one pixel to the right, as mmpose does, before it is
# averaged with the plain heatmaps: two views of the same face, whose errors partly
# cancel. The shift leaves the two views a quarter of a heatmap pixel apart, so the
# average can also cost: the ablation table below measures the net effect.

# %%
viz.show_source(decode.predict_heatmaps, decode.flip_back)

# %%
partner = int(transforms.flip_permutation()[point])
plain = decode.predict_heatmaps(network, image, flip=False)
mirror = decode.predict_heatmaps(network, image.flip(-1), flip=False)
back = decode.flip_back(mirror)
both = decode.predict_heatmaps(network, image, flip=True)
gap = float((both - (plain + back) / 2).abs().max())
print(
    f"predict_heatmaps(flip=True) - (plain + flip_back(mirror)) / 2: at most {gap:.2g}"
)
maps = [plain[0, point], mirror[0, partner], back[0, point], both[0, point]]
titles = [
    f"plain: point {point}",
    f"mirror image: point {partner}",
    "mirrored back, shifted 1 px",
    "average (the flip test)",
]
viz.show(
    viz.plot_maps(
        [m.numpy() for m in maps], titles, [truth, None, truth, truth], radius=4
    ),
    f"The flip test of point {point} of test face {face}: the plain heatmap, the "
    "mirror image's heatmap of its flip partner, that one brought back by flip_back, "
    "and their average; each zoomed to its maximum (square), x the ground truth.",
    trained,
)

# %% [markdown]
# ## The error of a face: NME
#
# A face's error is the mean over its 98 points of the distance between predicted and
# true point, divided by the distance between the two outer eye corners (points 60 and
# 72), so that it does not depend on the size of the face in the photograph.

# %%
viz.show_source(metrics.nme, metrics._point_errors)

# %%
predictions = np.load(report.sidecar_paths(run / "results.json")[1])["predictions"]
face_nme = metrics.nme(predictions[face][None], test_faces[face].landmarks[None])[0]
recorded = next(r["nme"] for r in results["per_face"] if r["index"] == face)
print(
    f"test face {face}: NME {100 * face_nme:.3f}% (results.json: {100 * recorded:.3f}%)"
)
truths = np.stack([test_face.landmarks for test_face in test_faces])
print(
    f"mean over the {len(predictions)} test faces: "
    f"{100 * metrics.nme(predictions, truths).mean():.3f}% "
    f"(results.json: {results['table']['model']['test']['nme']:.3f}%)"
)

# %% [markdown]
# ## The published table beside this run's
#
# The published row is the mmpose model-zoo result of HRNetV2-W18 at 256x256 (trained on
# real WFLW with the published recipe). This run's row comes from the run above. Only a
# run of the published recipe on real WFLW gets a difference row; on synthetic data, or
# with a CPU preset's smaller model, the numbers are not comparable, and the mean-shape
# baseline (every face predicted as the mean training shape in its crop) is the floor
# that shows how much was learnt.


# %%
model, baseline = results["table"]["model"], results["table"]["baseline"]
published = [report.PUBLISHED[column] for column in report.COLUMNS]
ours = report.nme_row("this run", model)
rows = [["published HRNetV2-W18 (mmpose)", *published], ours]
if chapter.comparable(data_kind, preset, run):
    pairs = zip(ours[1:], published, strict=True)
    rows.append(
        ["this run - published", *(None if v is None else v - p for v, p in pairs)]
    )
rows.append(report.nme_row("mean-shape baseline", baseline))
viz.show(
    viz.markdown_table(["NME (%)", *report.COLUMNS], rows),
    "NME (%) on the test set and its six subsets, in the model-zoo table's form; "
    f"published: {report.PUBLISHED_SOURCE}. This run: "
    f"{results['provenance']['checkpoint']} ({chapter.model_line(results)}), flip "
    f"test, standard decoder, crops: {results['provenance']['annotations']}.",
    trained,
    results,
)
scores = [
    [
        column,
        model[column]["faces"],
        model[column]["nme"],
        report.ci_text(model[column], 3),
        model[column]["fr"],
        model[column]["auc"],
    ]
    for column in report.COLUMNS
]
viz.show(
    viz.markdown_table(
        ["subset", "faces", "NME (%)", "NME 95% interval", "FR@10% (%)", "AUC@10%"],
        scores,
        digits=3,
    ),
    "NME, failure rate and AUC of the CED at 10% per subset (empty subsets show '-'). "
    "The interval is a bootstrap over the subset's faces: how far the mean would move "
    "with other faces like these, not with another training run; a subset of tens or "
    "hundreds of faces is far less certain than the full test set.",
    trained,
    results,
)

# %% [markdown]
# ## Cumulative error distributions per subset

# %%
viz.show(
    viz.plot_ced(report.ced_curves(results), threshold=report.FR_THRESHOLD),
    "Share of faces whose NME is below each threshold, for the test set and each "
    "non-empty subset.",
    trained,
    results,
)

# %% [markdown]
# ## Error per landmark on the mean face
#
# The mean over test faces of each point's normalised error, drawn at the point's place
# on the mean test shape (in crop coordinates), and the points with the largest error.

# %%
boxes = [loader.crop_box(test_face) for test_face in test_faces]
shape = metrics.mean_shape(
    np.stack([face.landmarks for face in test_faces]),
    np.stack([center for center, _ in boxes]),
    np.stack([side for _, side in boxes]),
)
per_landmark = np.asarray(results["per_landmark_nme"])
viz.show(
    viz.plot_landmark_error(shape, per_landmark),
    "Mean NME of each landmark over the test faces, on the mean test shape.",
    trained,
    results,
)
worst = np.argsort(per_landmark)[::-1][:5]
print(
    "largest mean errors:",
    ", ".join(f"point {k} {100 * per_landmark[k]:.2f}%" for k in worst),
)

# %% [markdown]
# ## Best and worst faces
#
# Ground truth in green, prediction in red, each point's error as a yellow line.

# %%
order = sorted(results["per_face"], key=lambda face: face["nme"])
count = min(4, len(order) // 2)
chosen = order[:count] + order[-count:]
images = [
    loader.read_image(root / wflw.IMAGE_DIR / face["image"])[..., ::-1]
    for face in chosen
]
titles = [
    f"{'best' if i < count else 'worst'}: NME {100 * face['nme']:.2f}%"
    for i, face in enumerate(chosen)
]
viz.show(
    viz.compare_grid(
        images,
        [test_faces[face["index"]].landmarks for face in chosen],
        [predictions[face["index"]] for face in chosen],
        titles,
        cols=count,
    ),
    f"The {count} best (top) and {count} worst (bottom) test faces of this run.",
    trained,
    results,
)

# %% [markdown]
# ## Ablations: flip test and DARK decoding
#
# The same checkpoint evaluated without the flip test, and with distribution-aware
# (DARK) decoding instead of the quarter-pixel step, beside mmpose's published rows for
# both decoders (its DARK model was also trained with DARK's unbiased targets:
# `unbiased=true` here) and for its Adaptive Wing variant (`loss=awing` here). The flip
# test follows mmpose: the mirrored heatmaps are shifted one heatmap pixel, which leaves
# the two passes a quarter of a heatmap pixel apart (the mirror of the heatmap grid is
# off by 0.75 pixel). That offset is a fixed share of a heatmap, so it weighs 64 / 24 =
# 2.7 times more on a CPU preset's 24x24 heatmaps than on the published 64x64 ones.

# %%
variants = {
    "this run: flip test, standard decoder (published protocol)": results,
    "this run: no flip test": chapter.ensure_results(
        run, root, "results-noflip", ["--no-flip"]
    ),
    "this run: flip test, DARK decoder": chapter.ensure_results(
        run, root, "results-dark", ["--decoder", "dark"]
    ),
}
ablation = [
    ["published (mmpose): flip test, standard decoder", *published],
    [
        "published (mmpose): flip test, DARK decoder",
        *(report.PUBLISHED_DARK[c] for c in report.COLUMNS),
    ],
    [
        "published (mmpose): Adaptive Wing loss",
        *(report.PUBLISHED_AWING[c] for c in report.COLUMNS),
    ],
]
for name, variant in variants.items():
    row = report.nme_row(name, variant["table"]["model"])
    ablation.append(row)
    if variant is not results:
        ablation.append(
            [
                "  difference to the published protocol",
                *(
                    None if a is None or b is None else a - b
                    for a, b in zip(row[1:], ours[1:], strict=True)
                ),
            ]
        )
viz.show(
    viz.markdown_table(["NME (%)", *report.COLUMNS], ablation, digits=3),
    "Flip-test and decoder ablations of this run's checkpoint "
    f"({chapter.model_line(results)}), NME %, beside mmpose's published rows.",
    trained,
    results,
)

# %% [markdown]
# ## The published checkpoint
#
# When mmpose's released checkpoint `hrnetv2_w18_wflw_256x256-2bf032a6_20210125.pth` is
# in `data/` and the data is real WFLW, it is evaluated by the same command
# (`load_weights` reads its mmpose 0.x layout) and its row is set beside the published
# one. mmpose measured the published row on its own crops (centre and scale from its
# json): when that json is in `data/WFLW/mmpose_json` the checkpoint is evaluated on
# those crops (`--annotations`), otherwise on landmark-box crops; the caption says
# which.

# %%
checkpoint = chapter.repo_path(chapter.PUBLISHED_CHECKPOINT)
if checkpoint.is_file() and data_kind == "wflw":
    extra = ["--checkpoint", str(checkpoint)]
    mmpose_json = chapter.repo_path(chapter.MMPOSE_JSON)
    if mmpose_json.is_dir():
        extra += ["--annotations", str(mmpose_json)]
    official = chapter.ensure_results(run, root, "published", extra)
    paired = report.paired_difference(results, official)
    rows = [
        ["published HRNetV2-W18 (mmpose)", *published],
        report.nme_row(
            "published checkpoint, evaluated here", official["table"]["model"]
        ),
        ours,
        [
            "this run - published checkpoint",
            *(paired[c]["difference"] for c in report.COLUMNS),
        ],
    ]
    low, high = paired["test"]["ci95"]
    viz.show(
        viz.markdown_table(["NME (%)", *report.COLUMNS], rows),
        "The released checkpoint evaluated by hrnet_lib beside the published row and "
        f"this run; crops: {official['provenance']['annotations']}. On the same "
        f"{paired['test']['faces']} test faces, this run minus the released checkpoint "
        f"is {paired['test']['difference']:+.3f} NME points (95% paired bootstrap "
        f"interval over faces {low:+.3f} to {high:+.3f}).",
        trained,
        official,
        {"preset": "none (mmpose's released weights, not trained here)"},
    )
else:
    reason = (
        "the data is not real WFLW"
        if checkpoint.is_file()
        else f"{chapter.PUBLISHED_CHECKPOINT} is not present"
    )
    print(f"published checkpoint not evaluated: {reason}")

# %% [markdown]
# ## How much of the number is the crop
#
# The model sees a crop, not the photo, and who draws the crop is part of the
# protocol. The tables of this chapter cropped each face from the box of its
# ground-truth landmarks (mmpose's json, when used, gives crops of the same kind). A
# user has no ground truth; their crop comes from a box: the detection
# rectangle shipped with the annotations, or a face detector run on the photo.
# `python -m hrnet_lib evaluate --crops all` evaluates the same checkpoint with all
# three, every box turned into a crop by one rule (the square of its longer side about
# its centre, padded 1.25). A face the detector misses keeps its rectangle's crop, and
# the table counts them.

# %%
protocols = chapter.ensure_results(run, root, "results-crops", ["--crops", "all"])
crop_rules = "; ".join(
    f"{name}: {record['rule']}" for name, record in protocols["crop_protocols"].items()
)
viz.show(
    viz.markdown_table(
        ["crops", *report.COLUMNS, *report.PROTOCOL_EXTRA],
        report.protocol_rows(protocols),
    ),
    f"NME (%) of this run's checkpoint ({chapter.model_line(protocols)}) with each "
    "crop protocol, flip test, standard decoder; the last NME column compares the "
    f"three crops on the same faces, those the detector found. {crop_rules}.",
    trained,
    protocols,
)

# %%
crop_faces = wflw.load_split(root, "test")
squares = np.load(report.sidecar_paths(run / "results-crops.json")[1])
missed = set(protocols["crop_protocols"]["detector"]["missed_faces"])
shown = next((i for i in range(len(crop_faces)) if i not in missed), 0)
face = crop_faces[shown]
photo = loader.read_image(root / wflw.IMAGE_DIR / face.image)[..., ::-1]
views, truth_in_view = crops.crop_views(
    photo,
    face.landmarks,
    {name: squares[f"crops_{name}"][shown] for name in crops.PROTOCOLS},
)
viz.show(
    viz.face_grid(views, truth_in_view, titles=list(crops.PROTOCOLS), cols=3),
    f"The three crops of test face {shown} ({face.image}) as the network sees them,"
    " with its ground-truth landmarks: landmark box, annotation rectangle,"
    " Haar detection"
    f"{' (missed: its rectangle)' if shown in missed else ''}.",
    trained,
    protocols,
)
