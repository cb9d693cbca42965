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
# WFLW (Wider Facial Landmarks in-the-Wild, LAB, CVPR 2018) has 10,000 faces from WIDER
# Face, 7,500 for training and 2,500 for testing, each with 98 landmarks, a detection
# rectangle and six attribute flags (pose, expression, illumination, make-up, occlusion,
# blur). The six test subsets are the test faces whose flag is set.
#
# This chapter walks through the code that turns an annotation line and a photograph
# into what the network is given: it shows each function of `hrnet_lib.data` as it is
# written (its file and first line above it) and runs it at once on one example. The
# functions are the ones training and evaluation call; nothing here is a copy.
#
# Two datasets appear. Four real WFLW faces ship with the repository
# (`tests/data/wflw-mini`, credited in `tests/data/README.md`) for the walk-through;
# the counts and the training figures use the dataset this book was built with.
# Without WFLW on the machine that is the synthetic dataset of
# `hrnet_lib.data.synthetic`, written in exactly the official layout, so every figure
# goes through the real reader.

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
from hrnet_lib.data import loader, targets, transforms, wflw
from hrnet_lib.data.wflw import data_manifest
from hrnet_lib.provenance import git_commit
from hrnet_lib.train.presets import get_preset

np.set_printoptions(precision=4, suppress=True)
root = chapter.ensure_data(data_root, data_kind, synth_train, synth_test)
stats, errors = wflw.check_dataset(root, progress=False)
if errors:
    raise ValueError(f"{root}: {len(errors)} problem(s), first: {errors[0]}")
train_faces = wflw.load_split(root, "train")
test_faces = wflw.load_split(root, "test")
subsets = wflw.load_subsets(root, test_faces)
digest = data_manifest(root)
commit = git_commit()
data_line = viz.data_line(
    data_kind, root, len(train_faces), len(test_faces), digest, commit
)
real_root = chapter.REAL_FACES
real = wflw.load_split(real_root, "test")
real_train = wflw.load_split(real_root, "train")
real_line = viz.data_line(
    "real WFLW", real_root, len(real_train), len(real), data_manifest(real_root), commit
)
print(data_line)
print(real_line)

# %% [markdown]
# ## One annotation line, field by field
#
# `list_98pt_rect_attr_test.txt` holds one face a line: 207 fields separated by spaces.
# The first 196 are the landmarks, `x0 y0 x1 y1 ... x97 y97` in image pixels; then the
# released detection rectangle `x_min y_min x_max y_max`; then the six attribute flags
# (pose, expression, illumination, make-up, occlusion, blur; 0 or 1); last the image
# path under `WFLW_images/`. The table takes the first real line apart, with the name
# the reader gives each field.

# %%
annotation_file = wflw.annotation_path(real_root, "test")
line = annotation_file.read_text().splitlines()[0]
fields = list(zip(wflw.field_names(), line.split(), strict=True))
rows = [[i + 1, name, f"`{value}`"] for i, (name, value) in enumerate(fields)]
viz.show(
    viz.markdown_table(
        ["field", "name", "value"], rows[:4] + [["...", "", ""]] + rows[194:]
    ),
    f"The first line of {viz.shown_path(annotation_file)}: fields 1-4 (landmarks 0 "
    f"and 1), then 195-207: the last landmark, the rectangle, the six flags and the "
    f"image path ({len(fields)} fields in all).",
)

# %% [markdown]
# `parse_line` reads such a line into a `Face`. Every field is checked, and every
# problem is reported with its file, line and field name rather than skipped.

# %%
viz.show_source(wflw.parse_line)

# %%
face, problems = wflw.parse_line(line, annotation_file, 1)
print("landmarks", face.landmarks.shape)
print("landmark 0", face.landmarks[0], "landmark 97", face.landmarks[-1])
print("rectangle", face.box)
print("flags", face.attributes)
print("image", face.image)
print("problems", problems)
tokens = line.split()
tokens[3] = "3O4.1"  # a letter O typed for a zero in field 4
broken, problems = wflw.parse_line(" ".join(tokens), annotation_file, 1)
print("with a typo:", broken)
for problem in problems:
    print(viz.shown_paths(str(problem)))

# %% [markdown]
# ## Counts per split, attribute and subset
#
# `check_dataset` validates every line and image (wrong field counts, non-numbers, flags
# that are not 0/1, missing images, faces outside their image, subset lines not in the
# test list) and counts what it read. Each subset file must hold exactly the test faces
# whose flag is set; `load_subsets` checks both directions.

# %%
split_rows = [
    [split, s["images"], s["faces"], *(s["attributes"][a] for a in wflw.ATTRIBUTES)]
    for split, s in stats["splits"].items()
]
viz.show(
    viz.markdown_table(["split", "images", "faces", *wflw.ATTRIBUTES], split_rows),
    f"Faces and images per split, and faces with each attribute flag. "
    f"Data: {data_line}.",
)
subset_rows = [[a, stats["subsets"][a], len(subsets[a])] for a in wflw.ATTRIBUTES]
viz.show(
    viz.markdown_table(
        ["subset", "lines in its file", "matched test faces"], subset_rows
    ),
    f"Test subsets: lines of each subset file and the test faces they matched "
    f"({stats['test_list']} lines in the full test list). Data: {data_line}.",
)

# %% [markdown]
# ## Faces with their landmarks, boxes and crops
#
# Each face is drawn with its 98 landmarks (outlined by facial part), the released
# detection rectangle (cyan) and the square crop (red, dashed) that is warped to the
# network input. First the four real faces, then faces of this book's dataset.

# %%
real_images = [
    loader.read_image(real_root / wflw.IMAGE_DIR / f.image)[..., ::-1] for f in real
]
real_crops = [(c, float(s[0])) for c, s in (loader.crop_box(f) for f in real)]
viz.show(
    viz.face_grid(
        real_images,
        [f.landmarks for f in real],
        [f.box for f in real],
        [f.source.split("/")[-1] for f in real],
        cols=2,
        crops=real_crops,
        zoom=True,
        size=5.5,
    ),
    f"The four real faces (zoomed to the crop) with their annotation lines. "
    f"Data: {real_line}.",
)
samples = wflw.one_face_per_image(test_faces, 4)
images = [
    loader.read_image(root / wflw.IMAGE_DIR / f.image)[..., ::-1] for f in samples
]
crops = [(c, float(s[0])) for c, s in (loader.crop_box(f) for f in samples)]
flags = [
    ", ".join(a for a, on in f.attributes.items() if on) or "no flags" for f in samples
]
viz.show(
    viz.face_grid(
        images,
        [f.landmarks for f in samples],
        [f.box for f in samples],
        flags,
        cols=4,
        crops=crops,
        zoom=True,
        size=3.2,
    ),
    "Test faces of this book's dataset (zoomed to the crop) with their attribute "
    f"flags. Data: {data_line}.",
)

# %% [markdown]
# ## The crop: `crop_box` and `warp_matrix`
#
# The network sees a square crop around the face. Its centre and side come from the
# landmarks, never from the detector: the box around the landmarks' extent, its larger
# side padded by 1.25 (or the centre and scale of mmpose's json, when a face was read
# from it).

# %%
viz.show_source(loader.crop_box, transforms.face_box)

# %%
center, scale = loader.crop_box(real[0])
print(
    "landmark extent",
    real[0].landmarks.min(axis=0),
    "to",
    real[0].landmarks.max(axis=0),
)
print("crop centre", center, "side", scale[0])

# %% [markdown]
# The crop is one affine warp of the photograph, fixed by three point pairs: the box
# centre goes to the crop's centre, the middle of the box's left edge to the middle of
# the crop's left edge, and a third point, at a right angle to those two, to its place.
# Turning the source points about the centre rotates the crop (the augmentation below
# does this); scaling the box zooms it. This is mmpose 1.x's `get_warp_matrix`, so
# weights trained with mmpose evaluate correctly on these crops.

# %%
viz.show_source(transforms.warp_matrix, transforms.warp_points)

# %%
published = get_preset("wflw-mmpose")  # the published recipe: 256x256 input, 64x64 maps
size = (published.input_size, published.input_size)
rotation = 25.0
src, dst = transforms.warp_points(center, scale, rotation, size)
matrix = transforms.warp_matrix(center, scale, rotation, size)
print("warp_matrix (image -> crop pixels):\n", matrix.round(4))
print(
    "source points mapped by it:\n",
    transforms.transform_points(src, matrix).round(6) + 0.0,
)
print("their places in the crop:\n", dst)
real_set = loader.WFLWDataset(
    real,
    real_root / wflw.IMAGE_DIR,
    train=False,
    input_size=published.input_size,
    heatmap_size=published.heatmap_size,
    sigma=published.sigma,
)
sample = real_set.make_sample(0, False, 1.0, rotation)
crop = viz.denormalize(
    sample["image"], transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
)
viz.show(
    viz.plot_warp(
        real_images[0], src, crop, dst, real[0].landmarks, sample["keypoints"]
    ),
    f"The three point pairs of warp_matrix for the first real face, rotated by "
    f"{rotation:.0f} degrees: on the photograph with the crop square they fix (left), "
    f"and in the {size[0]}x{size[1]} crop that WFLWDataset.make_sample warps (right), "
    f"with the landmarks carried by the same matrix. Data: {real_line}.",
)

# %% [markdown]
# ## One augmentation
#
# Training samples are augmented as in the published recipe (the CPU presets change only
# the crop and heatmap sizes): a horizontal flip with probability 0.5 (landmarks
# mirrored with $x \mapsto w - 1 - x$ and re-paired with the flip table), a scale factor
# $\mathrm{clip}(1 + 0.25\,\mathcal{N}(0,1), 0.75, 1.25)$, and with probability 0.6 a
# rotation $\mathrm{clip}(30^\circ\,\mathcal{N}(0,1), -60^\circ, 60^\circ)$. Each
# sample's draw comes from its own generator, seeded by (seed, epoch, index), so a
# resumed run draws the same augmentations.

# %%
viz.show_source(transforms.random_augment)

# %%
config = get_preset(preset)
augment = config.augment()
for index in range(4):
    draw = transforms.random_augment(loader.sample_rng(config.seed, 0, index), augment)
    print(
        f"face {index}, epoch 0: flip={draw[0]}, scale={draw[1]:.3f}, "
        f"rotation={draw[2]:.1f}"
    )

# %% [markdown]
# The three draws become one affine warp of the source image about the crop centre
# (`make_sample`), then ImageNet normalisation. Below, the steps are switched on one by
# one, and the last panel is a random draw of the recipe.

# %%
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
source = loader.read_image(root / wflw.IMAGE_DIR / train_faces[index].image)[..., ::-1]
settings = [
    ("crop", False, 1.0, 0.0),
    ("+ flip", True, 1.0, 0.0),
    ("+ scale 1.25", True, 1.25, 0.0),
    ("+ rotation 30°", True, 1.25, 30.0),
]
steps = [("source image", source, train_faces[index].landmarks)]
mean, std = transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
for title, flip, factor, angle in settings:
    step = dataset.make_sample(index, flip, factor, angle)
    steps.append((title, viz.denormalize(step["image"], mean, std), step["keypoints"]))
flip, factor, angle = dataset.augmentation(index)
drawn = dataset[index]
title = f"random: flip={flip}, s={factor:.2f}, r={angle:.0f}°"
steps.append((title, viz.denormalize(drawn["image"], mean, std), drawn["keypoints"]))
viz.show(
    viz.plot_steps(steps, size=3.2, cols=3),
    f"The crop and each augmentation step of preset {preset} "
    f"({config.input_size}x{config.input_size} input); landmarks are the sample's "
    f"keypoints, transformed with the image. Data: {data_line}.",
)

# %% [markdown]
# ## Heatmap targets
#
# The network predicts one heatmap per landmark at a quarter of the input resolution.
# Each target is a Gaussian with a peak of 1 ($\sigma$ = 2 heatmap pixels in the
# published recipe) on the heatmap pixel nearest the landmark (its position divided by
# the stride), cut to a square patch of radius $3\sigma$, with a weight of 0 when that
# patch lies fully outside the map. The Gaussian is separable, so it is the product of
# two one-dimensional profiles.

# %%
viz.show_source(targets.encode_heatmaps, targets._axis_profile)

# %%
point = 54  # the tip of the nose: the last point of the nose bridge
stride = published.input_size / published.heatmap_size
keypoint = sample["keypoints"][point] / stride
grid = (published.heatmap_size, published.heatmap_size)
heatmap, weight = targets.encode_heatmaps(keypoint[None], grid, published.sigma)
print(
    f"point {point} at ({keypoint[0]:.2f}, {keypoint[1]:.2f}) heatmap pixels, "
    f"weight {weight}"
)
peak = np.unravel_index(heatmap[0].argmax(), heatmap[0].shape)
print(f"peak {heatmap[0].max():.2f} at (x, y) = ({peak[1]}, {peak[0]})")
viz.show(
    viz.plot_gaussian(heatmap[0], keypoint, int(3 * published.sigma)),
    f"encode_heatmaps for point {point} (the nose tip, where the nose bridge ends) "
    "of the rotated real crop above: the "
    f"{grid[0]}x{grid[1]} target with sigma {published.sigma}, and its patch with each "
    f"pixel's value; + is the exact landmark, the square the pixel it rounds to. "
    f"Data: {real_line}.",
)

# %% [markdown]
# All 98 targets of one crop of this book's preset, with five single ones:

# %%
crop_sample = dataset.make_sample(index, False, 1.0, 0.0)
crop_stride = config.input_size / config.heatmap_size
viz.show(
    viz.plot_heatmaps(
        viz.denormalize(crop_sample["image"], mean, std),
        crop_sample["heatmaps"],
        [16, 54, 60, 72, 96],
        crop_sample["keypoints"] / crop_stride,
        size=3.0,
    ),
    f"Heatmap targets ({config.heatmap_size}x{config.heatmap_size}, sigma "
    f"{config.sigma}) of the plain crop above: all 98 (maximum over points) and five "
    f"single points with their keypoint (+). "
    f"{int(crop_sample['target_weight'].sum())} of 98 targets have weight 1. "
    f"Data: {data_line}.",
)

# %% [markdown]
# ## The flip pairs
#
# A horizontal flip turns the face's left side into its right side, so each landmark
# must take its partner's index: the 44 pairs of the table below. Ten points lie on the
# symmetry axis (chin, nose bridge, nostril centre, lip centres) and keep their index. A
# wrong pair table is the classic reason a WFLW model does not converge; drawn on a
# face, every pair must be a line across the face's symmetry axis, perpendicular to it
# (the face may be turned in the photo).

# %%
viz.show_source(transforms.flip_permutation, transforms.flip_landmarks)

# %%
permutation = transforms.flip_permutation()
print("first twenty entries:", permutation[:20])
print("an involution:", bool(np.array_equal(permutation[permutation], np.arange(98))))
print("self-symmetric points:", [k for k in range(98) if permutation[k] == k])
viz.show(
    viz.plot_flip_pairs(
        real_images[0], real[0].landmarks, transforms.FLIP_PAIRS, size=7
    ),
    "The 44 flip pairs of hrnet_lib.data.transforms.FLIP_PAIRS drawn on a face (one "
    "line per pair, coloured by facial part); the self-symmetric points are ringed "
    f"and numbered. Data: {real_line}.",
)
mirrored = transforms.flip_landmarks(real[0].landmarks, real_images[0].shape[1])
viz.show(
    viz.face_grid(
        [real_images[0], transforms.flip_image(real_images[0])],
        [real[0].landmarks, mirrored],
        titles=["original", "mirrored, landmarks re-paired"],
        cols=2,
        zoom=True,
        size=5.5,
    ),
    f"A face and its mirror image with flip_landmarks: the outlines stay on the same "
    f"facial parts. Data: {real_line}.",
)
