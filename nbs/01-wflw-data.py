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
# # The WFLW data
#
# WFLW (Wider Facial Landmarks in-the-Wild, LAB, CVPR 2018) has 10,000 faces from WIDER Face, 7,500 for
# training and 2,500 for testing, each with 98 landmarks, a detection rectangle and six attribute flags
# (pose, expression, illumination, make-up, occlusion, blur). The six test subsets are the test faces
# whose flag is set. This chapter reads a dataset root with `hrnet_lib.data.wflw`, the same reader the
# training and the evaluation use, and draws what the network is given: the crop, each augmentation
# step, the heatmap targets and the flip-pair table.
#
# Without WFLW on the machine, the book runs on the synthetic dataset of `hrnet_lib.data.synthetic`,
# which is written in exactly the official layout, so every figure below goes through the real reader.

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
from hrnet_lib.data import loader, transforms, wflw
from hrnet_lib.data.wflw import data_manifest
from hrnet_lib.provenance import git_commit
from hrnet_lib.train.presets import get_preset

root = chapter.ensure_data(data_root, data_kind, synth_train, synth_test)
stats, errors = wflw.check_dataset(root, progress=False)
if errors:
    raise ValueError(f"{root}: {len(errors)} problem(s), first: {errors[0]}")
train_faces = wflw.load_split(root, "train")
test_faces = wflw.load_split(root, "test")
subsets = wflw.load_subsets(root, test_faces)
digest = data_manifest(root)
data_line = viz.data_line(data_kind, root, len(train_faces), len(test_faces), digest, git_commit())
print(data_line)

# %% [markdown]
# ## Counts per split, attribute and subset
#
# `check_dataset` validates every line and image (wrong field counts, non-numbers, flags that are not
# 0/1, missing images, faces outside their image, subset lines not in the test list) and counts what it
# read. Each subset file must hold exactly the test faces whose flag is set; `load_subsets` checks both
# directions.

# %%
split_rows = [
    [split, s["images"], s["faces"], *(s["attributes"][name] for name in wflw.ATTRIBUTES)]
    for split, s in stats["splits"].items()
]
viz.show(
    viz.markdown_table(["split", "images", "faces", *wflw.ATTRIBUTES], split_rows),
    f"Faces and images per split, and faces with each attribute flag. Data: {data_line}.",
)
subset_rows = [[name, stats["subsets"][name], len(subsets[name])] for name in wflw.ATTRIBUTES]
viz.show(
    viz.markdown_table(["subset", "lines in its file", "matched test faces"], subset_rows),
    f"Test subsets: lines of each subset file and the test faces they matched "
    f"({stats['test_list']} lines in the full test list). Data: {data_line}.",
)

# %% [markdown]
# ## Faces with their landmarks, boxes and crops
#
# Each face is drawn with its 98 landmarks (outlined by facial part), the released detection rectangle
# (cyan) and the square crop (red, dashed) that is warped to the network input: the box around the
# landmarks' extent, padded by 1.25. The crop comes from the landmarks, never from the detector.


# %%
def first_faces(faces: list[wflw.Face], count: int) -> list[wflw.Face]:
    """Up to `count` faces from distinct images, in file order."""
    seen: dict[str, wflw.Face] = {}
    for face in faces:
        seen.setdefault(face.image, face)
    return list(seen.values())[:count]


samples = first_faces(test_faces, 4)
images = [loader.read_image(root / wflw.IMAGE_DIR / f.image)[..., ::-1] for f in samples]
crops = [(c, float(s[0])) for c, s in (loader.crop_box(f) for f in samples)]
flags = [", ".join(name for name, on in f.attributes.items() if on) or "no flags" for f in samples]
fig = viz.face_grid(
    images, [f.landmarks for f in samples], [f.box for f in samples], flags, cols=4, crops=crops, size=3.2
)
viz.show(fig, f"Test faces of this dataset with their attribute flags. Data: {data_line}.")

# %% [markdown]
# When the real WFLW fixture is beside the repository (`../shared/fixtures/wflw-mini`: four real faces,
# read in place), the same drawing is made on real photographs.

# %%
fixture = chapter.REPO.parent / "shared" / "fixtures" / "wflw-mini"
if (fixture / wflw.ANNOTATION_DIR).is_dir():
    real = wflw.load_split(fixture, "test")
    real_images = [loader.read_image(fixture / wflw.IMAGE_DIR / f.image)[..., ::-1] for f in real]
    real_crops = [(c, float(s[0])) for c, s in (loader.crop_box(f) for f in real)]
    fig = viz.face_grid(
        real_images,
        [f.landmarks for f in real],
        [f.box for f in real],
        [f.source.split("/")[-1] for f in real],
        cols=4,
        crops=real_crops,
        zoom=True,
    )
    viz.show(fig, f"Real WFLW faces from {fixture.name} (zoomed to the crop), drawn by the same code.")
else:
    print(f"real WFLW fixture not found at {fixture}; skipping the real faces")

# %% [markdown]
# ## The crop and each augmentation step
#
# Training samples are augmented as in the published recipe (every preset keeps its augmentation; the CPU
# presets change only the crop and heatmap sizes): a horizontal flip with probability 0.5 (landmarks
# mirrored with $x \mapsto w - 1 - x$ and re-paired with the flip table), a scale factor
# $\mathrm{clip}(1 + 0.25\,\mathcal{N}(0,1), 0.75, 1.25)$, and with probability 0.6 a rotation
# $\mathrm{clip}(30^\circ\,\mathcal{N}(0,1), -60^\circ, 60^\circ)$, all applied as one affine warp of the
# source image about the crop centre (mmpose's `get_warp_matrix` convention), then ImageNet
# normalisation. Below, the steps are switched on one by one with `WFLWDataset.make_sample`, and the
# last panel is a random draw of the recipe.

# %%
config = get_preset(preset)
augment = config.augment()
dataset = loader.WFLWDataset(
    train_faces,
    root / wflw.IMAGE_DIR,
    train=True,
    input_size=config.input_size,
    heatmap_size=config.heatmap_size,
    sigma=config.sigma,
    augment=augment,
)
index = 0
face = train_faces[index]
source = loader.read_image(root / wflw.IMAGE_DIR / face.image)[..., ::-1]
settings = [
    ("crop", False, 1.0, 0.0),
    ("+ flip", True, 1.0, 0.0),
    ("+ scale 1.25", True, 1.25, 0.0),
    ("+ rotation 30°", True, 1.25, 30.0),
]
steps = [("source image", source, face.landmarks)]
for title, flip, scale, rotation in settings:
    sample = dataset.make_sample(index, flip, scale, rotation)
    image = viz.denormalize(sample["image"], transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
    steps.append((title, image, sample["keypoints"]))
flip, scale, rotation = dataset.augmentation(index)
random_sample = dataset[index]
image = viz.denormalize(random_sample["image"], transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
steps.append((f"random: flip={flip}, s={scale:.2f}, r={rotation:.0f}°", image, random_sample["keypoints"]))
viz.show(
    viz.plot_steps(steps, size=2.6),
    f"The crop and each augmentation step of preset {preset} ({config.input_size}x{config.input_size} input); "
    f"landmarks are the sample's keypoints, transformed with the image. Data: {data_line}.",
)

# %% [markdown]
# ## Heatmap targets
#
# The network predicts one heatmap per landmark at a quarter of the input resolution. Each target is a
# Gaussian ($\sigma$ = 2 heatmap pixels at the published 64x64 heatmaps; the caption gives this
# preset's size and sigma) centred at the landmark's position divided by the stride, with a weight of 0
# when the Gaussian patch lies fully outside the map.

# %%
sample = dataset.make_sample(index, False, 1.0, 0.0)
stride = config.input_size / config.heatmap_size
crop_image = viz.denormalize(sample["image"], transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
fig = viz.plot_heatmaps(crop_image, sample["heatmaps"], [16, 54, 60, 72, 96], sample["keypoints"] / stride)
viz.show(
    fig,
    f"Heatmap targets ({config.heatmap_size}x{config.heatmap_size}, sigma {config.sigma}) of the crop above: "
    f"all 98 (maximum over points) and five single points with their keypoint (+). "
    f"{int(sample['target_weight'].sum())} of 98 targets have weight 1. Data: {data_line}.",
)

# %% [markdown]
# ## The flip pairs
#
# A horizontal flip turns the face's left side into its right side, so each landmark must take its
# partner's index: the 44 pairs of the table below. Ten points lie on the symmetry axis (chin, nose
# bridge, nostril centre, lip centres) and keep their index. A wrong pair table is the classic reason a
# WFLW model does not converge; drawn on a face, every pair must be a line across the face's symmetry
# axis, perpendicular to it (the face may be turned in the photo).

# %%
real_face = (fixture / wflw.ANNOTATION_DIR).is_dir()
pair_face = real[0] if real_face else samples[0]
pair_image = real_images[0] if real_face else images[0]
pair_source = f"real WFLW from {fixture.name}" if real_face else data_line
permutation = transforms.flip_permutation()
print("flip table is an involution:", bool(np.array_equal(permutation[permutation], np.arange(98))))
print("self-symmetric points:", [k for k in range(98) if permutation[k] == k])
viz.show(
    viz.plot_flip_pairs(pair_image, pair_face.landmarks, transforms.FLIP_PAIRS),
    "The 44 flip pairs of hrnet_lib.data.transforms.FLIP_PAIRS drawn on a face (one line per pair, "
    f"coloured by facial part); the self-symmetric points are ringed and numbered. Face: {pair_source}.",
)
mirrored = transforms.flip_landmarks(pair_face.landmarks, pair_image.shape[1])
viz.show(
    viz.face_grid(
        [pair_image, transforms.flip_image(pair_image)],
        [pair_face.landmarks, mirrored],
        titles=["original", "mirrored, landmarks re-paired"],
        cols=2,
        zoom=True,
    ),
    f"A face and its mirror image with flip_landmarks: the outlines stay on the same facial parts. "
    f"Face: {pair_source}.",
)
