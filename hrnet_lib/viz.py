"""Figures and tables for the book: faces with landmarks, crops, heatmaps, curves and the architecture.

Every drawing function takes plain numpy arrays (or dicts of them) and returns a matplotlib `Figure`
made without pyplot, so the notebooks only call and show, nothing is drawn twice, and the tests can
look at what was drawn. Image coordinates follow the data: pixel centres at integers, x right, y down.
`provenance` turns a run's records into the line that every results table and figure caption carries.
"""

from __future__ import annotations

import datetime
import inspect
import io
import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Polygon, Rectangle

# WFLW's 98 landmarks by facial part (FACTS.md): indices in drawing order and whether the outline closes.
FACE_PARTS: dict[str, tuple[tuple[int, ...], bool]] = {
    "contour": (tuple(range(0, 33)), False),
    "right brow": (tuple(range(33, 42)), True),
    "left brow": (tuple(range(42, 51)), True),
    "nose bridge": (tuple(range(51, 55)), False),
    "nostrils": (tuple(range(55, 60)), False),
    "right eye": (tuple(range(60, 68)), True),
    "left eye": (tuple(range(68, 76)), True),
    "outer lip": (tuple(range(76, 88)), True),
    "inner lip": (tuple(range(88, 96)), True),
    "pupils": ((96, 97), False),
}
PART_COLORS: dict[str, str] = {
    "contour": "#1f77b4",
    "right brow": "#ff7f0e",
    "left brow": "#ff7f0e",
    "nose bridge": "#2ca02c",
    "nostrils": "#2ca02c",
    "right eye": "#d62728",
    "left eye": "#d62728",
    "outer lip": "#9467bd",
    "inner lip": "#e377c2",
    "pupils": "#17becf",
}
# The repository root: source files are named relative to it.
REPO = Path(__file__).resolve().parents[1]
# The fields of a run's provenance, in the order the caption states them.
PROVENANCE_FIELDS = ("data_kind", "preset", "commit", "data_checksum", "date", "hardware")
# Optional fields stated after them when a source has them: the precision a training run and an
# evaluation ran in.
PRECISION_FIELDS = {"train_precision": "trained in", "precision": "evaluated in"}


# ----------------------------------------------------------------------------- basics


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with constrained layout (not registered anywhere, so shown only when asked)."""
    return Figure(figsize=(width, height), layout="constrained")


def figure_png(fig: Figure, dpi: float = 144.0) -> bytes:
    """The figure as PNG bytes (what the book embeds, at its column width; independent of any notebook
    backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def as_display_image(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) from an RGB image, a grey image or a CHW float tensor in [0, 1] or 0..255."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an image (H, W, 3), (H, W) or (3, H, W); got shape {np.shape(image)}")
    if array.dtype != np.uint8:
        scale = 255.0 if float(np.nanmax(array)) <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    return array


def denormalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo per-channel normalisation of a (3, H, W) network input: uint8 (H, W, 3) RGB for drawing."""
    chw = np.asarray(image, dtype=np.float64)
    rgb = chw.transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return np.clip(rgb, 0, 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------- faces


def plot_face(
    ax: Axes,
    image: np.ndarray | None,
    landmarks: np.ndarray | None = None,
    box: np.ndarray | None = None,
    crop: tuple[np.ndarray, float] | None = None,
    outline: bool = True,
    numbers: bool = False,
    size: float = 6.0,
    color: str | None = None,
) -> None:
    """Draw an image with its 98 landmarks (dots, part outlines), a box (x0 y0 x1 y1) and a crop square.

    `crop` is (centre (2,), side): the square that is warped to the network input.
    """
    if image is not None:
        ax.imshow(as_display_image(image), interpolation="bilinear")
    if landmarks is not None:
        points = np.asarray(landmarks, dtype=np.float64)
        if outline and len(points) == 98:
            for name, (indices, closed) in FACE_PARTS.items():
                if name == "pupils":
                    continue
                path = points[list(indices) + ([indices[0]] if closed else [])]
                ax.plot(path[:, 0], path[:, 1], "-", lw=0.8, color=color or PART_COLORS[name], alpha=0.8)
        ax.scatter(
            points[:, 0], points[:, 1], s=size, c=color or "#ffdd00", edgecolors="black", linewidths=0.3
        )
        if numbers:
            for k, (x, y) in enumerate(points):
                ax.annotate(str(k), (x, y), fontsize=5, xytext=(2, 2), textcoords="offset points")
    if box is not None:
        x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#00e5ff", lw=1.2, label="box"))
    if crop is not None:
        (cx, cy), side = np.asarray(crop[0], dtype=np.float64), float(crop[1])
        ax.add_patch(
            Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False, ec="#ff3355", lw=1.2, ls="--")
        )
    ax.set_axis_off()


def face_grid(
    images: Sequence[np.ndarray],
    landmarks: Sequence[np.ndarray | None] | None = None,
    boxes: Sequence[np.ndarray | None] | None = None,
    titles: Sequence[str] | None = None,
    cols: int = 4,
    size: float = 3.0,
    crops: Sequence[tuple[np.ndarray, float] | None] | None = None,
    zoom: bool = False,
) -> Figure:
    """A grid of faces, each with optional landmarks, box, crop square and title.

    With `zoom`, each panel shows only the region around its landmarks (padded), as in a face crop.
    """
    n = len(images)
    if n == 0:
        raise ValueError("face_grid needs at least one image")
    cols = min(cols, n)
    rows = -(-n // cols)
    fig = new_figure(size * cols, size * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        points = landmarks[i] if landmarks is not None else None
        plot_face(
            ax,
            images[i],
            points,
            box=boxes[i] if boxes is not None else None,
            crop=crops[i] if crops is not None else None,
        )
        if zoom and points is not None:
            lo, hi = np.min(points, axis=0), np.max(points, axis=0)
            centre, half = (lo + hi) / 2, 0.65 * float(np.max(hi - lo))
            ax.set_xlim(centre[0] - half, centre[0] + half)
            ax.set_ylim(centre[1] + half, centre[1] - half)
        if titles is not None:
            ax.set_title(titles[i], fontsize=11)
    return fig


def compare_grid(
    images: Sequence[np.ndarray],
    truth: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    titles: Sequence[str],
    cols: int = 4,
    size: float = 3.0,
) -> Figure:
    """Faces zoomed to their landmarks with ground truth (green), prediction (red) and the error of
    each point as a line between them."""
    fig = face_grid(images, None, titles=titles, cols=cols, size=size)
    for ax, gt, pred in zip(fig.get_axes(), truth, predictions, strict=False):
        gt, pred = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
        ax.add_collection(LineCollection(np.stack([gt, pred], axis=1), colors="yellow", linewidths=0.6))
        ax.scatter(gt[:, 0], gt[:, 1], s=5, c="#00cc44", label="ground truth")
        ax.scatter(pred[:, 0], pred[:, 1], s=5, c="#ff2222", label="prediction")
        lo, hi = gt.min(axis=0), gt.max(axis=0)
        centre, half = (lo + hi) / 2, 0.65 * float(np.max(hi - lo))
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] + half, centre[1] - half)
    return fig


def plot_flip_pairs(
    image: np.ndarray, landmarks: np.ndarray, pairs: Sequence[tuple[int, int]], size: float = 6.0
) -> Figure:
    """The horizontal-flip pair table drawn on a face: a line per pair, self-symmetric points ringed.

    A wrong pair shows at once as a line that does not cross the face symmetrically.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    fig = new_figure(size, size)
    ax = fig.add_subplot()
    plot_face(ax, image, points, outline=False, size=4)
    segments = [[points[a], points[b]] for a, b in pairs]
    colors = [PART_COLORS[_part_of(a)] for a, _ in pairs]
    ax.add_collection(LineCollection(segments, colors=colors, linewidths=1.0, alpha=0.9))
    paired = {k for pair in pairs for k in pair}
    alone = [k for k in range(len(points)) if k not in paired]
    ax.scatter(
        points[alone, 0], points[alone, 1], s=40, facecolors="none", edgecolors="white", linewidths=1.2
    )
    for k in alone:
        ax.annotate(str(k), points[k], fontsize=9, color="white", xytext=(3, -6), textcoords="offset points")
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre, half = (lo + hi) / 2, 0.62 * float(np.max(hi - lo))
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] + half, centre[1] - half)
    ax.set_title(f"{len(pairs)} flip pairs; {len(alone)} self-symmetric points ringed", fontsize=11)
    return fig


def _part_of(index: int) -> str:
    for name, (indices, _) in FACE_PARTS.items():
        if index in indices:
            return name
    raise ValueError(f"landmark index {index} is not one of WFLW's 98")


def plot_steps(
    steps: Sequence[tuple[str, np.ndarray, np.ndarray | None]], size: float = 3.0, cols: int | None = None
) -> Figure:
    """(title, image, landmarks) panels, `cols` a row (all in one by default): e.g. source, crop, flip,
    scale, rotation, network input."""
    return face_grid(
        [image for _, image, _ in steps],
        [points for _, _, points in steps],
        titles=[title for title, _, _ in steps],
        cols=cols or len(steps),
        size=size,
    )


def plot_heatmaps(
    image: np.ndarray,
    heatmaps: np.ndarray,
    indices: Sequence[int],
    keypoints: np.ndarray | None = None,
    size: float = 2.6,
) -> Figure:
    """The heatmap targets of one crop: all K summed over the image, then the chosen single heatmaps.

    `keypoints` are in heatmap pixels; they are drawn as crosses on the single maps.
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    picture = as_display_image(image)
    height, width = picture.shape[:2]
    fig = new_figure(size * (1 + len(indices)), size)
    axes = fig.subplots(1, 1 + len(indices), squeeze=False)[0]
    total = cv2.resize(maps.max(axis=0), (width, height), interpolation=cv2.INTER_LINEAR)
    axes[0].imshow(picture)
    axes[0].imshow(total, cmap="magma", alpha=0.55, vmin=0.0, vmax=1.0)
    axes[0].set_title(f"all {len(maps)} targets (max)", fontsize=11)
    for ax, k in zip(axes[1:], indices, strict=True):
        ax.imshow(maps[k], cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
        if keypoints is not None:
            ax.plot(keypoints[k, 0], keypoints[k, 1], "c+", ms=8)
        ax.set_title(f"point {k} ({_part_of(k)})" if len(maps) == 98 else f"point {k}", fontsize=11)
    for ax in axes:
        ax.set_axis_off()
    return fig


POINT_COLORS = ("#ff3355", "#00c2ff", "#ffd400")  # the three point pairs of a crop's affine


def plot_warp(
    image: np.ndarray,
    src: np.ndarray,
    crop: np.ndarray,
    dst: np.ndarray,
    landmarks: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
    size: float = 5.5,
) -> Figure:
    """The three point pairs that fix a crop's affine: on the photo (zoomed to the square they span, drawn
    dashed) and where they land in the crop. `src`, `dst` (3, 2) in photo and crop pixels."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    half = src[0] - src[1]  # centre minus the middle of the left edge: half a side along the crop's x
    across = np.array([-half[1], half[0]])
    corners = np.stack([src[0] + a * half + b * across for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    fig = new_figure(2 * size, size)
    photo, window = fig.subplots(1, 2)
    plot_face(photo, image, landmarks, outline=False, size=3)
    photo.add_patch(Polygon(corners, closed=True, fill=False, ec="white", lw=1.2, ls="--"))
    plot_face(window, crop, keypoints, outline=False, size=6)
    for ax, points in ((photo, src), (window, dst)):
        ax.plot(*np.vstack([points, points[:1]]).T, "-", color="white", lw=1.0, alpha=0.8)
        for k, (point, color) in enumerate(zip(points, POINT_COLORS, strict=True)):
            ax.scatter(*point, s=80, c=color, edgecolors="black", linewidths=0.8, zorder=3)
            ax.annotate(str(k), point, xytext=(6, 6), textcoords="offset points", color=color, fontsize=12)
    low, high = corners.min(axis=0), corners.max(axis=0)
    margin = 0.15 * float(np.max(high - low))
    photo.set_xlim(low[0] - margin, high[0] + margin)
    photo.set_ylim(high[1] + margin, low[1] - margin)
    photo.set_title("the photo: three points and the crop square they fix", fontsize=11)
    window.set_title("the crop: where the three points land", fontsize=11)
    return fig


def _square_the_maximum(ax: Axes, heatmap: np.ndarray) -> tuple[int, int]:
    """Outline the pixel of `heatmap`'s maximum on `ax`; that pixel's (x, y)."""
    peak_y, peak_x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    ax.add_patch(Rectangle((peak_x - 0.5, peak_y - 0.5), 1, 1, fill=False, ec="#00ff88", lw=1.5))
    return int(peak_x), int(peak_y)


def _whole_and_zoomed(
    heatmap: np.ndarray, radius: int, size: float, vmin: float, vmax: float
) -> tuple[Figure, Axes, Axes, tuple[int, int], range, range]:
    """A heatmap whole (the window `radius` around its maximum outlined) beside the same map zoomed to that
    window, the maximum squared in both: the figure, both axes, the maximum and the window's rows and cols."""
    fig = new_figure(2 * size, size)
    whole, zoom = fig.subplots(1, 2)
    for ax in (whole, zoom):
        ax.imshow(heatmap, cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        peak_x, peak_y = _square_the_maximum(ax, heatmap)
    side = 2 * radius + 1
    whole.add_patch(Rectangle((peak_x - radius - 0.5, peak_y - radius - 0.5), side, side, fill=False, ec="w"))
    whole.set_title(f"the whole {heatmap.shape[1]}x{heatmap.shape[0]} heatmap", fontsize=11)
    rows = range(max(peak_y - radius, 0), min(peak_y + radius + 1, heatmap.shape[0]))
    cols = range(max(peak_x - radius, 0), min(peak_x + radius + 1, heatmap.shape[1]))
    zoom.set_xlim(cols[0] - 0.5, cols[-1] + 0.5)
    zoom.set_ylim(rows[-1] + 0.5, rows[0] - 0.5)
    return fig, whole, zoom, (peak_x, peak_y), rows, cols


def plot_gaussian(heatmap: np.ndarray, keypoint: np.ndarray, radius: int, size: float = 5.5) -> Figure:
    """One landmark's heatmap target, whole and zoomed to the patch around its peak with each pixel's value
    written; + marks the landmark's exact position, the square the pixel the Gaussian is centred on."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    fig, whole, patch, _, rows, cols = _whole_and_zoomed(heatmap, radius, size, 0.0, 1.0)
    fig.set_layout_engine("compressed")  # two square images: constrained layout cut off their titles
    for ax in (whole, patch):
        ax.plot(*np.asarray(keypoint, dtype=np.float64), "c+", ms=14, mew=2)
    for row in rows:
        for col in cols:
            value = heatmap[row, col]
            ax_color = "black" if value > 0.6 else "white"
            patch.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=ax_color)
    patch.set_title(f"zoomed: the patch of radius {radius} around the peak", fontsize=11)
    return fig


# ----------------------------------------------------------------------------- curves and errors


def plot_ced(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], threshold: float = 0.10, title: str = ""
) -> Figure:
    """Cumulative error distributions: for each name, (NME thresholds as fractions, share of faces).

    A curve whose name starts with "test" is drawn bold, one that names a baseline dashed.
    """
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for name, (x, y) in curves.items():
        style = {"ls": "--", "color": "k", "lw": 1.0} if "baseline" in name else {"lw": 1.4}
        if name.startswith("test"):
            style["lw"] = 2.0
        ax.plot(100 * np.asarray(x), 100 * np.asarray(y), label=name, **style)
    ax.set_xlim(0, 100 * threshold)
    ax.set_ylim(0, 100)
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("faces with NME below (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_training(
    iteration: np.ndarray,
    lr: np.ndarray,
    loss: np.ndarray,
    images_per_s: np.ndarray,
    epoch: np.ndarray,
    val_nme: np.ndarray,
) -> Figure:
    """Learning rate, training loss, throughput (per logged iteration) and validation NME (per epoch; a
    note in its place for a run without validation)."""
    fig = new_figure(10.0, 6.0)
    axes = fig.subplots(2, 2)
    panels = [
        (axes[0, 0], iteration, lr, "iteration", "learning rate", "log"),
        (axes[0, 1], iteration, loss, "iteration", "heatmap MSE loss", "log"),
        (axes[1, 0], epoch, 100 * np.asarray(val_nme), "epoch", "validation NME (%)", "linear"),
        (axes[1, 1], iteration, images_per_s, "iteration", "images / s (all processes)", "linear"),
    ]
    for ax, x, y, xlabel, ylabel, scale in panels:
        ax.plot(x, y, "o-" if len(x) < 30 else "-", ms=3, lw=1.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if scale == "log" and np.all(np.asarray(y) > 0):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if len(epoch) == 0:
        note = "no validation\n(val_fraction=0)"
        axes[1, 0].text(0.5, 0.5, note, ha="center", va="center", transform=axes[1, 0].transAxes)
    return fig


def plot_schedules(schedules: Mapping[str, tuple[np.ndarray, np.ndarray]], size: float = 5.0) -> Figure:
    """Learning-rate schedules side by side: for each name, (optimiser steps, learning rate of each)."""
    fig = new_figure(size * len(schedules) + 0.5, 0.72 * size)
    axes = fig.subplots(1, len(schedules), squeeze=False)[0]
    for ax, (name, (steps, lr)) in zip(axes, schedules.items(), strict=True):
        ax.plot(steps, lr, "-", lw=1.8)
        ax.set_yscale("log")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("learning rate")
        ax.set_title(name, fontsize=11)
        ax.grid(alpha=0.3, which="both")
    return fig


def plot_decode(
    heatmap: np.ndarray,
    steps: Mapping[str, np.ndarray],
    truth: np.ndarray | None = None,
    radius: int = 3,
    size: float = 5.5,
) -> Figure:
    """A predicted heatmap, whole and zoomed to its maximum with each pixel's value written, and each
    decoder's sub-pixel step drawn as an arrow from the maximum (`steps`: name -> decoded (x, y)); x marks
    the ground truth (heatmap pixels)."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    low, high = float(heatmap.min()), float(heatmap.max())
    fig, whole, zoom, (peak_x, peak_y), rows, cols = _whole_and_zoomed(heatmap, radius, size, low, high)
    for ax in (whole, zoom):
        if truth is not None:
            ax.plot(
                *np.asarray(truth, dtype=np.float64),
                "x",
                color="#00e5ff",
                ms=12,
                mew=2.5,
                label="ground truth",
            )
    middle = (low + high) / 2
    for row in rows:
        for col in cols:
            value = heatmap[row, col]
            color = "black" if value > middle else "white"
            zoom.text(col, row + 0.32, f"{value:.2g}", ha="center", va="center", fontsize=8, color=color)
    for (name, point), color in zip(steps.items(), ("#ffffff", "#ffd400", "#ff3355"), strict=False):
        x, y = np.asarray(point, dtype=np.float64)
        zoom.annotate("", (x, y), (peak_x, peak_y), arrowprops={"arrowstyle": "-|>", "color": color, "lw": 2})
        zoom.plot(x, y, "o", color=color, ms=7, mec="black", label=f"{name} ({x:.2f}, {y:.2f})")
    zoom.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    zoom.set_title(f"zoomed to the maximum at ({peak_x}, {peak_y}), the square", fontsize=11)
    return fig


def plot_maps(
    maps: Sequence[np.ndarray],
    titles: Sequence[str],
    marks: Sequence[np.ndarray | None] | None = None,
    radius: int | None = None,
    size: float = 2.8,
) -> Figure:
    """Heatmaps side by side on one colour scale, each with its maximum in a square; `marks` are a point
    (x, y) per panel or None (e.g. the ground truth), and `radius` zooms each panel to its maximum."""
    maps = [np.asarray(m, dtype=np.float64) for m in maps]
    low, high = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
    fig = new_figure(size * len(maps), size + 0.4)
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    for k, (ax, heatmap, title) in enumerate(zip(axes, maps, titles, strict=True)):
        ax.imshow(heatmap, cmap="magma", vmin=low, vmax=high, interpolation="nearest")
        peak_x, peak_y = _square_the_maximum(ax, heatmap)
        if marks is not None and marks[k] is not None:
            ax.plot(*np.asarray(marks[k], dtype=np.float64), "x", color="#00e5ff", ms=10, mew=2)
        if radius is not None:
            ax.set_xlim(peak_x - radius - 0.5, peak_x + radius + 0.5)
            ax.set_ylim(peak_y + radius + 0.5, peak_y - radius - 0.5)
        ax.set_title(title, fontsize=11)
        ax.set_axis_off()
    return fig


def plot_landmark_error(
    mean_shape: np.ndarray, per_landmark: np.ndarray, title: str = "", size: float = 5.5
) -> Figure:
    """Per-landmark NME (as fractions) as coloured dots on the mean face shape, parts outlined."""
    shape = np.asarray(mean_shape, dtype=np.float64)
    errors = 100 * np.asarray(per_landmark, dtype=np.float64)
    fig = new_figure(size * 1.15, size)
    ax = fig.add_subplot()
    plot_face(ax, None, shape, color="#bbbbbb", size=0.0)
    dots = ax.scatter(shape[:, 0], shape[:, 1], c=errors, cmap="viridis", s=40, edgecolors="black", lw=0.3)
    fig.colorbar(dots, ax=ax, label="NME (%)", shrink=0.8)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    worst = int(np.argmax(errors))
    ax.annotate(
        f"worst: {worst} ({_part_of(worst)})",
        shape[worst],
        fontsize=8,
        xytext=(6, 6),
        textcoords="offset points",
    )
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------- architecture


def plot_architecture(
    stages: Sequence[tuple[str, Sequence[tuple[int, int, int]]]],
    head: Sequence[tuple[str, tuple[int, int, int]]] = (),
    input_shape: tuple[int, int, int] | None = None,
) -> Figure:
    """The multi-resolution network as measured: one column per stage, one box per branch (C x H x W).

    `stages` is [(name, [(channels, height, width) per branch])...] in order; boxes are drawn with a
    height that shrinks with the branch resolution, and each stage fuses every branch into every branch
    of the next (drawn as arrows). `head` is [(name, (C, H, W))...] drawn after the last stage.
    """
    columns: list[tuple[str, list[tuple[int, int, int]]]] = []
    if input_shape is not None:
        columns.append(("input", [input_shape]))
    columns += [(name, list(branches)) for name, branches in stages]
    columns += [(name, [shape]) for name, shape in head]
    top_height = max(h for _, branches in columns for _, h, _ in branches)
    fig = new_figure(1.55 * len(columns) + 0.5, 5.2)
    ax = fig.add_subplot()
    rows = max(len(branches) for _, branches in columns)
    boxes: list[list[tuple[float, float, float, float]]] = []
    for col, (name, branches) in enumerate(columns):
        column_boxes = []
        for row, (channels, height, width) in enumerate(branches):
            box_h = 0.3 + 0.6 * np.sqrt(height / top_height)
            x, y = col * 1.6, -row * 1.25 - box_h / 2
            ax.add_patch(Rectangle((x, y), 1.1, box_h, fc=_branch_color(row), ec="black", lw=0.8))
            ax.text(
                x + 0.55, y + box_h / 2, f"{channels}\n{height}x{width}", ha="center", va="center", fontsize=9
            )
            column_boxes.append((x, y, 1.1, box_h))
        ax.text(col * 1.6 + 0.55, 0.85, name, ha="center", va="bottom", fontsize=10, rotation=20)
        boxes.append(column_boxes)
    for left, right in zip(boxes[:-1], boxes[1:], strict=True):
        for x0, y0, w0, h0 in left:
            for x1, y1, _, h1 in right:
                arrow = FancyArrowPatch(
                    (x0 + w0, y0 + h0 / 2),
                    (x1, y1 + h1 / 2),
                    arrowstyle="-|>",
                    mutation_scale=6,
                    lw=0.5,
                    color="#555555",
                    alpha=0.7,
                )
                ax.add_patch(arrow)
    ax.set_xlim(-0.2, 1.6 * len(columns))
    ax.set_ylim(-1.25 * rows + 0.2, 1.6)
    ax.set_axis_off()
    return fig


FUSE_COLORS = {"identity": "#888888", "upsample": "#1f77b4", "strided": "#d62728"}


def fuse_label(path: Mapping[str, Any]) -> str:
    """One fusion path in words, e.g. "1x1 conv 36->18, upsample x2" (see `model.inference.fuse_plan`)."""
    c_in, c_out = path["channels"]
    if path["kind"] == "identity":
        return "identity"
    if path["kind"] == "upsample":
        return f"1x1 conv {c_in}->{c_out}\nupsample x{path['factor']}"
    return f"{path['convs']} x 3x3 conv, stride 2\n{c_in}->{c_out}"


def plot_fuse(sizes: Sequence[tuple[int, int]], plan: Sequence[Sequence[Mapping[str, Any]]]) -> Figure:
    """A multi-resolution module's fusion: every input branch (left) feeds every output branch (right),
    upsampled (blue) from a lower resolution, strided (red) from a higher one, or as it is (grey); beside
    it, the matrix of what each path does. `sizes` (H, W) per branch, `plan` from `fuse_plan`."""
    n = len(plan)
    fig = new_figure(12.0, 1.5 * n + 1.2)
    arrows, matrix = fig.subplots(1, 2, width_ratios=(1, 1.6))
    for i in range(n):
        for x in (0.0, 3.0):
            arrows.add_patch(Rectangle((x, -i - 0.3), 1.0, 0.6, fc=_branch_color(i), ec="black", lw=0.8))
            text = f"{plan[i][i]['channels'][1]} x {sizes[i][0]}x{sizes[i][1]}"
            arrows.text(x + 0.5, -i, text, ha="center", va="center", fontsize=10)
        for j in range(n):
            path = plan[i][j]
            arrow = FancyArrowPatch(
                (1.0, -j),
                (3.0, -i),
                arrowstyle="-|>",
                mutation_scale=10,
                lw=1.2,
                color=FUSE_COLORS[path["kind"]],
            )
            arrows.add_patch(arrow)
    arrows.text(0.5, 0.55, "input branches", ha="center", fontsize=10)
    arrows.text(3.5, 0.55, "output = ReLU(sum)", ha="center", fontsize=10)
    arrows.set_xlim(-0.1, 4.1)
    arrows.set_ylim(-n + 0.4, 0.9)
    arrows.set_axis_off()
    for i, row in enumerate(plan):
        for j, path in enumerate(row):
            matrix.add_patch(
                Rectangle((j, -i - 1), 1, 1, fc=FUSE_COLORS[path["kind"]], alpha=0.25, ec="white")
            )
            matrix.text(j + 0.5, -i - 0.5, fuse_label(path), ha="center", va="center", fontsize=10)
    matrix.set_xlim(0, n)
    matrix.set_ylim(-n, 0)
    matrix.set_xticks(np.arange(n) + 0.5, [f"from branch {j}" for j in range(n)], fontsize=11)
    matrix.set_yticks(-np.arange(n) - 0.5, [f"into {i}" for i in range(n)], fontsize=11)
    matrix.xaxis.tick_top()
    matrix.tick_params(length=0)
    for side in matrix.spines.values():
        side.set_visible(False)
    return fig


def _branch_color(row: int) -> str:
    return ("#cfe8ff", "#ffe2c6", "#d7f5d0", "#f5d0ea", "#eeeeee")[min(row, 4)]


def plot_stage_costs(names: Sequence[str], params: Sequence[float], flops: Sequence[float]) -> Figure:
    """Parameters (millions) and FLOPs (G) per part of the network, side by side."""
    fig = new_figure(10.0, 3.4)
    axes = fig.subplots(1, 2)
    positions = np.arange(len(names))
    for ax, values, label in ((axes[0], params, "parameters (M)"), (axes[1], flops, "GFLOPs")):
        scaled = np.asarray(values, dtype=np.float64) / (1e6 if "param" in label else 1e9)
        bars = ax.bar(positions, scaled, color="#4c78a8")
        ax.bar_label(bars, fmt="%.2f", fontsize=9)
        ax.set_xticks(positions, list(names), rotation=30, ha="right", fontsize=10)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- tables and captions


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub/MyST markdown table; floats are printed with `digits` decimals (3 significant digits
    when that would print a non-zero value as 0), None and non-finite values as a dash."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float | np.floating):
            if not np.isfinite(value):
                return "-"
            small = value != 0 and abs(value) < 0.5 * 10.0**-digits
            return f"{value:.3g}" if small else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table row {i} has {len(row)} cells, the header has {len(header)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(*sources: Path | str | Mapping[str, Any]) -> str:
    """One line saying what made a result: data kind, preset, commit, data checksum, date, hardware, and
    the precisions it was trained and evaluated in where the sources say (PRECISION_FIELDS).

    Each source is a dict (e.g. `book.run_provenance` of a training run) or a JSON file (e.g. the
    results.json of `python -m hrnet_lib evaluate`); its fields are read from its "provenance" entry and
    its top level, and a later source overrides an earlier one (the training run, then the evaluation).
    A missing field is an error naming the sources, never a silent blank.
    """
    if not sources:
        raise ValueError("provenance needs at least one source")
    fields: dict[str, Any] = {}
    origins = []
    for source in sources:
        record, origin = _load_record(source)
        nested = record.get("provenance")
        names = (*PROVENANCE_FIELDS, *PRECISION_FIELDS)
        fields.update({k: record[k] for k in names if k in record})
        if isinstance(nested, Mapping):
            fields.update({k: nested[k] for k in names if k in nested})
        origins.append(origin)
    missing = [name for name in PROVENANCE_FIELDS if fields.get(name) in (None, "")]
    if missing:
        raise KeyError(f"{', '.join(origins)}: provenance field(s) {', '.join(missing)} missing")
    precisions = "".join(f", {words} {fields[k]}" for k, words in PRECISION_FIELDS.items() if fields.get(k))
    return (
        f"{fields['data_kind']} data, preset {fields['preset']}, commit {str(fields['commit'])[:12]}, "
        f"data checksum {str(fields['data_checksum'])[:12]}, {_utc(fields['date'])}, {fields['hardware']}"
        f"{precisions}"
    )


def _utc(value: Any) -> str:
    """An ISO date-time as "YYYY-MM-DD HH:MM UTC" (naive ones are taken as UTC); other text as it is."""
    try:
        moment = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _load_record(source: Path | str | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(source, Mapping):
        return source, "record"
    with open(source, encoding="utf-8") as handle:
        return json.load(handle), str(source)


def data_line(data_kind: str, root: Path | str, train: int, test: int, digest: str, commit: str) -> str:
    """What a data figure shows: kind, where, how many faces, the data checksum (of the annotations), and
    the commit of the code that read and drew it."""
    return (
        f"{data_kind} data in {shown_path(root)}, {train} train + {test} test faces, "
        f"data checksum {digest[:12]}, commit {commit[:12]}"
    )


def caption(text: str, *sources: Path | Mapping[str, Any]) -> str:
    """Markdown caption: the text, then the provenance line of the run that made the figure or table."""
    suffix = f" *({provenance(*sources)})*" if sources else ""
    return f"**{text}**{suffix}"


def show(item: Figure | str, text: str | None = None, *sources: Path | Mapping[str, Any]) -> None:
    """Display a figure (or a markdown table) in a notebook, then its caption with the provenance of
    `sources` (run folders, results/config JSON paths or loaded records; see `provenance`). Absolute paths
    in the table and the caption are shown relative to the repository (`shown_paths`)."""
    from IPython.display import Image, Markdown, display

    if any(isinstance(source, str) for source in sources):
        raise TypeError("show() takes Paths or records as sources; put plain text into the caption text")
    display(Markdown(shown_paths(item)) if isinstance(item, str) else Image(data=figure_png(item)))
    if text is not None:
        display(Markdown(shown_paths(caption(text, *sources))))


# ----------------------------------------------------------------------------- source code


def source_markdown(obj: Any) -> str:
    """A function's, class's or method's real source as a markdown code block (highlighted in the book),
    headed by its file relative to the repository and its first line, so the book shows the code it runs."""
    target = inspect.unwrap(obj)
    try:
        lines, first = inspect.getsourcelines(target)
        path = Path(inspect.getsourcefile(target) or "")
    except (OSError, TypeError) as error:
        raise TypeError(f"no source to show for {obj!r}: {error}") from None
    code = textwrap.dedent("".join(lines)).rstrip()
    fence = "```"
    while fence in code:
        fence += "`"
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", "")
    label = f"`{name}` in " if name and not inspect.ismodule(target) else ""
    return f"{label}`{shown_path(path)}`, line {max(first, 1)}:\n\n{fence}python\n{code}\n{fence}"


def shown_path(path: Path | str) -> str:
    """A path as a reader should see it: relative to the repository when inside it, else its last two
    parts after an ellipsis (never the building machine's absolute paths)."""
    path = Path(path)
    resolved = path.resolve() if path.is_absolute() else (REPO / path).resolve()
    if resolved.is_relative_to(REPO):
        return resolved.relative_to(REPO).as_posix() or "."
    return "…/" + "/".join(resolved.parts[-2:])


_ABSOLUTE_PATH = re.compile(r"(?<![\w./~…-])/(?:[\w.+-]+/)*[\w.+-]+")


def shown_paths(text: str) -> str:
    """`text` with every absolute path in it written as `shown_path` writes it."""
    return _ABSOLUTE_PATH.sub(lambda match: shown_path(match.group(0)), text)


def show_source(*objects: Any) -> None:
    """Display the source of each library object in a notebook (see `source_markdown`)."""
    from IPython.display import Markdown, display

    for obj in objects:
        display(Markdown(source_markdown(obj)))
