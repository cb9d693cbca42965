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
# The trained model is evaluated with the published protocol: the network sees each test face's crop
# and its mirror image (flip test), the heatmaps are decoded by argmax plus a quarter-pixel step toward
# the larger neighbour, and the points are mapped back to the image. The crop is the box of the face's
# ground-truth landmarks padded by 1.25; mmpose's published number used the crops of its own json
# (centre and scale per face), which `--annotations` reads when you have it. The captions say which
# crops each table used. The error of a face is the inter-ocular normalised mean error
#
# $$\mathrm{NME} = \frac{1}{98} \sum_{k=0}^{97} \frac{\lVert \hat p_k - p_k \rVert_2}{\lVert p_{60} - p_{72} \rVert_2},$$
#
# with $p_{60}$ and $p_{72}$ the outer eye corners. FR@10% is the share of faces with an NME above 0.10
# and AUC@10% the area under the cumulative error distribution (CED) from 0 to 0.10, normalised to 1.
# Everything here comes from `python -m hrnet_lib evaluate`, whose JSON output this notebook reads;
# it is run now when the run's results are missing or older than its checkpoint.

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

from hrnet_lib import viz
from hrnet_lib.book import chapter
from hrnet_lib.data import loader, wflw
from hrnet_lib.evaluate import metrics, report

root = chapter.ensure_data(data_root, data_kind, synth_train, synth_test)
run = chapter.repo_path(run_dir)
if not chapter.run_finished(run):
    raise FileNotFoundError(
        f"{run}: no finished training run; execute 03-multi-gpu-training (or `make train`)"
    )
results = chapter.ensure_results(run, root)
trained = chapter.run_provenance(run, data_kind, preset, root)
print(viz.provenance(trained, results))

# %% [markdown]
# ## The published table beside this run's
#
# The published row is the mmpose model-zoo result of HRNetV2-W18 at 256x256 (trained on real WFLW with
# the published recipe). This run's row comes from the run above. Only a run of the published recipe on
# real WFLW gets a difference row; on synthetic data, or with a CPU preset's smaller model, the numbers
# are not comparable, and the mean-shape baseline (every face predicted as the mean training shape in
# its crop) is the floor that shows how much was learnt.


# %%
def nme_row(name: str, table: dict) -> list:
    """A row of NME (%) values in the model-zoo column order (None for an empty subset)."""
    return [name, *(table[column]["nme"] for column in report.COLUMNS)]


model, baseline = results["table"]["model"], results["table"]["baseline"]
published = [report.PUBLISHED[column] for column in report.COLUMNS]
ours = nme_row("this run", model)
rows = [["published HRNetV2-W18 (mmpose)", *published], ours]
if chapter.comparable(data_kind, preset, run):
    pairs = zip(ours[1:], published, strict=True)
    rows.append(["this run - published", *(None if v is None else v - p for v, p in pairs)])
rows.append(nme_row("mean-shape baseline", baseline))
viz.show(
    viz.markdown_table(["NME (%)", *report.COLUMNS], rows),
    f"NME (%) on the test set and its six subsets, in the model-zoo table's form; published: "
    f"{report.PUBLISHED_SOURCE}. This run: {results['provenance']['checkpoint']} "
    f"({chapter.model_line(results)}), flip test, standard decoder, crops: {results['provenance']['annotations']}.",
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
        ["subset", "faces", "NME (%)", "NME 95% interval", "FR@10% (%)", "AUC@10%"], scores, digits=3
    ),
    "NME, failure rate and AUC of the CED at 10% per subset (empty subsets show '-'). The interval is a "
    "bootstrap over the subset's faces: how far the mean would move with other faces like these, not with "
    "another training run; a subset of 200-300 faces is far less certain than the full test set.",
    trained,
    results,
)

# %% [markdown]
# ## Cumulative error distributions per subset

# %%
viz.show(
    viz.plot_ced(report.ced_curves(results), threshold=report.FR_THRESHOLD),
    "Share of faces whose NME is below each threshold, for the test set and each non-empty subset.",
    trained,
    results,
)

# %% [markdown]
# ## Error per landmark on the mean face
#
# The mean over test faces of each point's normalised error, drawn at the point's place on the mean
# test shape (in crop coordinates), and the points with the largest error.

# %%
test_faces = wflw.load_split(root, "test")
boxes = [loader.crop_box(face) for face in test_faces]
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
print("largest mean errors:", ", ".join(f"point {k} {100 * per_landmark[k]:.2f}%" for k in worst))

# %% [markdown]
# ## Best and worst faces
#
# Ground truth in green, prediction in red, each point's error as a yellow line.

# %%
predictions = np.load(report.sidecar_paths(run / "results.json")[1])["predictions"]
order = sorted(results["per_face"], key=lambda face: face["nme"])
count = min(4, len(order) // 2)
chosen = order[:count] + order[-count:]
images = [loader.read_image(root / wflw.IMAGE_DIR / face["image"])[..., ::-1] for face in chosen]
titles = [
    f"{'best' if i < count else 'worst'}: NME {100 * face['nme']:.2f}%" for i, face in enumerate(chosen)
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
# The same checkpoint evaluated without the flip test, and with distribution-aware (DARK) decoding
# instead of the quarter-pixel step, beside mmpose's published rows for both decoders (its DARK model
# was also trained with DARK's unbiased targets: `unbiased=true` here) and for its Adaptive Wing variant
# (`loss=awing` here). The flip test follows mmpose: the mirrored heatmaps are shifted one heatmap
# pixel, which leaves the two passes a quarter of a heatmap pixel apart (the mirror of the heatmap grid
# is off by 0.75 pixel). That offset is a fixed share of a heatmap, so it weighs 64 / 24 = 2.7 times
# more on a CPU preset's 24x24 heatmaps than on the published 64x64 ones.

# %%
variants = {
    "this run: flip test, standard decoder (published protocol)": results,
    "this run: no flip test": chapter.ensure_results(run, root, "results-noflip", ["--no-flip"]),
    "this run: flip test, DARK decoder": chapter.ensure_results(
        run, root, "results-dark", ["--decoder", "dark"]
    ),
}
ablation = [
    ["published (mmpose): flip test, standard decoder", *published],
    ["published (mmpose): flip test, DARK decoder", *(report.PUBLISHED_DARK[c] for c in report.COLUMNS)],
    ["published (mmpose): Adaptive Wing loss", *(report.PUBLISHED_AWING[c] for c in report.COLUMNS)],
]
for name, variant in variants.items():
    row = nme_row(name, variant["table"]["model"])
    ablation.append(row)
    if variant is not results:
        ablation.append(
            [
                "  difference to the published protocol",
                *(None if a is None or b is None else a - b for a, b in zip(row[1:], ours[1:], strict=True)),
            ]
        )
viz.show(
    viz.markdown_table(["NME (%)", *report.COLUMNS], ablation, digits=3),
    f"Flip-test and decoder ablations of this run's checkpoint ({chapter.model_line(results)}), NME %, "
    f"beside mmpose's published rows.",
    trained,
    results,
)

# %% [markdown]
# ## The published checkpoint
#
# When mmpose's released checkpoint `hrnetv2_w18_wflw_256x256-2bf032a6_20210125.pth` is in `data/` and
# the data is real WFLW, it is evaluated by the same command (`load_weights` reads its mmpose 0.x layout)
# and its row is set beside the published one. mmpose measured the published row on its own crops
# (centre and scale from its json): when that json is in `data/WFLW/mmpose_json` the checkpoint is
# evaluated on those crops (`--annotations`), otherwise on landmark-box crops; the caption says which.

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
        nme_row("published checkpoint, evaluated here", official["table"]["model"]),
        ours,
        ["this run - published checkpoint", *(paired[c]["difference"] for c in report.COLUMNS)],
    ]
    low, high = paired["test"]["ci95"]
    viz.show(
        viz.markdown_table(["NME (%)", *report.COLUMNS], rows),
        f"The released checkpoint evaluated by hrnet_lib beside the published row and this run; crops: "
        f"{official['provenance']['annotations']}. On the same {paired['test']['faces']} test faces, this run "
        f"minus the released checkpoint is {paired['test']['difference']:+.3f} NME points (95% paired "
        f"bootstrap interval over faces {low:+.3f} to {high:+.3f}).",
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
# The model sees a crop, not the photo, and who draws the crop is part of the protocol. The table above
# used mmpose's: the box of the face's ground-truth landmarks. A user has no ground truth; their crop
# comes from a box: the detection rectangle shipped with the annotations, or a face detector run on the
# photo. `python -m hrnet_lib evaluate --crops all` evaluates the same checkpoint with all three, every box
# turned into a crop by one rule (the square of its longer side about its centre, padded 1.25). A face the
# detector misses keeps its rectangle's crop, and the table counts them.

# %%
import numpy as np

from hrnet_lib import viz
from hrnet_lib.book import chapter
from hrnet_lib.data import loader, wflw
from hrnet_lib.evaluate import crops, report

crop_root = chapter.ensure_data(data_root, data_kind, synth_train, synth_test)
crop_run = chapter.repo_path(run_dir)
protocols = chapter.ensure_results(crop_run, crop_root, "results-crops", ["--crops", "all"])
crop_rules = "; ".join(f"{name}: {record['rule']}" for name, record in protocols["crop_protocols"].items())
viz.show(
    viz.markdown_table(["crops", *report.COLUMNS, *report.PROTOCOL_EXTRA], report.protocol_rows(protocols)),
    f"NME (%) of this run's checkpoint ({chapter.model_line(protocols)}) with each crop protocol, flip test, "
    f"standard decoder; the last NME column compares the three crops on the same faces, those the detector "
    f"found. {crop_rules}.",
    chapter.run_provenance(crop_run, data_kind, preset, crop_root),
    protocols,
)

# %%
crop_faces = wflw.load_split(crop_root, "test")
squares = np.load(report.sidecar_paths(crop_run / "results-crops.json")[1])
missed = set(protocols["crop_protocols"]["detector"]["missed_faces"])
shown = next((i for i in range(len(crop_faces)) if i not in missed), 0)
face = crop_faces[shown]
photo = loader.read_image(crop_root / wflw.IMAGE_DIR / face.image)[..., ::-1]
views, truth_in_view = crops.crop_views(
    photo, face.landmarks, {name: squares[f"crops_{name}"][shown] for name in crops.PROTOCOLS}
)
viz.show(
    viz.face_grid(views, truth_in_view, titles=list(crops.PROTOCOLS), cols=3),
    f"The three crops of test face {shown} ({face.image}) as the network sees them, with its ground-truth "
    f"landmarks: landmark box, annotation rectangle, Haar detection"
    f"{' (missed: its rectangle)' if shown in missed else ''}.",
    chapter.run_provenance(crop_run, data_kind, preset, crop_root),
    protocols,
)
