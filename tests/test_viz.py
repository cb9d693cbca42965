"""Tests of hrnet_lib.viz: what is drawn lands where it belongs, tables and captions say what they must."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_rgb
from matplotlib.patches import FancyArrowPatch, Rectangle

from hrnet_lib import viz

PROV = {
    "data_kind": "synthetic",
    "preset": "smoke",
    "commit": "0123456789abcdef0123",
    "data_checksum": "feedbeefcafe00112233",
    "date": "2025-11-26 00:10 UTC",
    "hardware": "CPU x2 (gloo)",
}


def _face_shape() -> np.ndarray:
    """98 distinct points on a 14 x 7 grid, inside a 100 x 80 image."""
    ys, xs = np.mgrid[0:7, 0:14]
    return np.stack([10 + 5 * xs.ravel(), 10 + 8 * ys.ravel()], axis=1).astype(np.float64)


def test_plot_face_draws_each_landmark_at_its_pixel() -> None:
    """x is the column and y the row: render a face panel whose pixels are the image's and find the dots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = 60, 80
    image = np.full((height, width, 3), 255, np.uint8)
    points = np.array([[57.0, 13.0], [12.0, 44.0]])
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    viz.plot_face(ax, image, points, outline=False, size=4, color="red")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rendered = np.asarray(canvas.buffer_rgba())[..., :3]
    assert rendered.shape == (height, width, 3)
    red = (rendered[..., 0] > 150) & (rendered[..., 1] < 100) & (rendered[..., 2] < 100)
    ys, xs = np.nonzero(red)
    accounted = np.zeros(len(xs), dtype=bool)
    for x, y in points:
        near = (np.abs(xs - x) <= 3) & (np.abs(ys - y) <= 3)
        assert near.any(), (x, y)
        assert abs(xs[near].mean() - x) <= 1.0 and abs(ys[near].mean() - y) <= 1.0
        accounted |= near
    assert accounted.all()  # no dot anywhere else (x and y not swapped)


def test_as_display_image_accepts_chw_float_and_grey() -> None:
    chw = np.zeros((3, 4, 5), np.float32)
    chw[0] = 1.0
    rgb = viz.as_display_image(chw)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert np.all(rgb[..., 0] == 255) and np.all(rgb[..., 1:] == 0)
    assert viz.as_display_image(np.full((3, 2), 7, np.uint8)).shape == (3, 2, 3)
    with pytest.raises(ValueError, match="shape"):
        viz.as_display_image(np.zeros((2, 3, 4, 5)))


def test_denormalize_inverts_imagenet_normalisation() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 7, 3)).astype(np.float64)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    chw = ((rgb - mean) / std).transpose(2, 0, 1)
    assert np.array_equal(viz.denormalize(chw, mean, std), rgb.astype(np.uint8))


def test_plot_face_draws_points_box_crop_and_part_outlines() -> None:
    shape = _face_shape()
    fig = viz.new_figure(3, 3)
    ax = fig.add_subplot()
    viz.plot_face(
        ax,
        np.zeros((80, 100, 3), np.uint8),
        shape,
        box=np.array([5, 6, 50, 70]),
        crop=(np.array([40, 40]), 60),
    )
    scatter = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatter) == 1 and np.allclose(scatter[0].get_offsets(), shape)
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rects] == [
        (5, 6, 45, 64),
        (10, 10, 60, 60),
    ]
    assert len(ax.lines) == len(viz.FACE_PARTS) - 1  # every part outlined but the two pupils
    eye = ax.lines[list(viz.FACE_PARTS).index("right eye")]
    assert np.allclose(eye.get_xydata()[[0, -1]], shape[[60, 60]])  # closed outline


def test_face_parts_cover_every_landmark_once() -> None:
    indices = sorted(k for part, _ in viz.FACE_PARTS.values() for k in part)
    assert indices == list(range(98))


def test_face_grid_layout_and_titles() -> None:
    images = [np.zeros((20, 30, 3), np.uint8)] * 5
    fig = viz.face_grid(images, [_face_shape()] * 5, titles=list("abcde"), cols=3)
    axes = fig.get_axes()
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:5]] == list("abcde")
    assert not axes[5].images  # the spare panel stays empty
    with pytest.raises(ValueError):
        viz.face_grid([])


def test_plot_flip_pairs_draws_one_segment_per_pair() -> None:
    pairs = [(i, 32 - i) for i in range(16)] + [(96, 97)]
    fig = viz.plot_flip_pairs(np.zeros((80, 100, 3), np.uint8), _face_shape(), pairs)
    ax = fig.get_axes()[0]
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = lines.get_segments()
    assert len(segments) == len(pairs)
    shape = _face_shape()
    assert np.allclose(segments[3], shape[[3, 29]])
    assert f"{98 - 2 * len(pairs)} self-symmetric" in ax.get_title()


def test_plot_heatmaps_shows_the_chosen_maps() -> None:
    maps = np.zeros((98, 16, 16), np.float32)
    maps[7, 4, 9] = 1.0
    fig = viz.plot_heatmaps(np.zeros((64, 64, 3), np.uint8), maps, [7, 60])
    axes = fig.get_axes()
    assert len(axes) == 3
    assert np.array_equal(axes[1].images[0].get_array(), maps[7])
    assert "60" in axes[2].get_title() and "eye" in axes[2].get_title()


def test_plot_ced_one_line_per_curve_in_percent() -> None:
    x = np.linspace(0, 0.1, 11)
    fig = viz.plot_ced({"test": (x, x * 10), "pose": (x, x * 5)})
    ax = fig.get_axes()[0]
    assert [line.get_label() for line in ax.lines] == ["test", "pose"]
    assert np.allclose(ax.lines[1].get_xdata(), 100 * x) and np.allclose(ax.lines[1].get_ydata(), 500 * x)
    assert ax.get_xlim() == (0.0, 10.0)


def test_plot_training_panels_carry_the_log_values() -> None:
    it = np.arange(1, 11)
    fig = viz.plot_training(it, 1e-3 * it, 1.0 / it, 50.0 + it, np.array([1, 2]), np.array([0.2, 0.1]))
    axes = fig.get_axes()
    assert len(axes) == 4
    assert np.allclose(axes[0].lines[0].get_ydata(), 1e-3 * it)
    assert np.allclose(axes[2].lines[0].get_ydata(), [20.0, 10.0])  # NME shown in percent
    assert axes[0].get_yscale() == "log"
    empty = viz.plot_training(it, 1e-3 * it, 1.0 / it, 50.0 + it, np.array([]), np.array([])).get_axes()[2]
    assert "no validation" in empty.texts[0].get_text()  # a run without a hold-out says so


def test_plot_landmark_error_colours_follow_the_errors() -> None:
    shape = _face_shape()
    errors = np.linspace(0.01, 0.2, 98)
    fig = viz.plot_landmark_error(shape, errors)
    ax = fig.get_axes()[0]
    (dots,) = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_array() is not None]
    assert np.allclose(dots.get_offsets(), shape)
    assert np.allclose(dots.get_array(), 100 * errors)
    assert ax.yaxis_inverted()
    assert any("worst: 97" in t.get_text() for t in ax.texts)


def test_plot_architecture_one_box_per_branch_and_all_to_all_fusion() -> None:
    stages = [
        ("stage2", [(18, 64, 64), (36, 32, 32)]),
        ("stage3", [(18, 64, 64), (36, 32, 32), (72, 16, 16)]),
    ]
    fig = viz.plot_architecture(stages, head=[("head", (98, 64, 64))], input_shape=(3, 256, 256))
    ax = fig.get_axes()[0]
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(boxes) == 1 + 2 + 3 + 1
    assert len(arrows) == 1 * 2 + 2 * 3 + 3 * 1
    texts = {t.get_text() for t in ax.texts}
    assert {"72\n16x16", "98\n64x64", "3\n256x256", "stage3"} <= texts


def test_plot_stage_costs_bars_in_millions_and_giga() -> None:
    fig = viz.plot_stage_costs(["stem", "stage2"], [2.0e6, 5.0e5], [1.5e9, 3e8])
    params_ax, flops_ax = fig.get_axes()
    assert np.allclose([b.get_height() for b in params_ax.patches], [2.0, 0.5])
    assert np.allclose([b.get_height() for b in flops_ax.patches], [1.5, 0.3])


def test_markdown_table_formats_and_checks_widths() -> None:
    table = viz.markdown_table(["name", "NME"], [["a|b", 4.0612], ["c", None], ["lr", 0.002], ["z", 0.0]])
    assert table.splitlines() == [
        "| name | NME |",
        "|---|---|",
        "| a\\|b | 4.06 |",
        "| c | - |",
        "| lr | 0.002 |",
        "| z | 0.00 |",
    ]
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        viz.markdown_table(["a", "b"], [[1]])


def test_provenance_from_dict_and_file(tmp_path: Path) -> None:
    line = viz.provenance(PROV)
    for text in (
        "synthetic data",
        "preset smoke",
        "commit 0123456789",
        "checksum feedbeefcafe",
        "2025-11-26",
        "CPU x2",
    ):
        assert text in line
    (tmp_path / "results.json").write_text(json.dumps({"provenance": PROV}))
    assert viz.provenance(tmp_path / "results.json") == line
    assert viz.caption("CED", PROV).endswith(f"*({line})*")


def test_provenance_states_the_precisions_trained_and_evaluated_in() -> None:
    trained, evaluated = {**PROV, "train_precision": "bf16"}, {"provenance": {"precision": "fp32"}}
    assert viz.provenance(trained).endswith(", CPU x2 (gloo), trained in bf16")
    assert viz.provenance(trained, evaluated).endswith(", CPU x2 (gloo), trained in bf16, evaluated in fp32")
    assert viz.provenance(PROV).endswith(", CPU x2 (gloo)")  # a source without them: nothing is made up


def test_provenance_missing_field_names_it(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"provenance": {"preset": "smoke"}}))
    with pytest.raises(KeyError, match="results.json.*data_kind"):
        viz.provenance(tmp_path / "results.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        viz.provenance(tmp_path / "missing.json")


def test_provenance_later_sources_override_earlier(tmp_path: Path) -> None:
    config = {"provenance": {**PROV, "date": "2025-11-01", "hardware": "training box"}}
    (tmp_path / "trained.json").write_text(json.dumps(config))
    results = {
        "provenance": {"commit": "fedcba9876", "date": "2025-11-02T03:04:05+02:00", "hardware": "eval box"}
    }
    line = viz.provenance(tmp_path / "trained.json", results)
    assert "commit fedcba9876" in line and "2025-11-02 01:04 UTC" in line and "eval box" in line
    assert "preset smoke" in line and "training box" not in line


def test_compare_grid_draws_truth_prediction_and_error_segments() -> None:
    truth = _face_shape()
    prediction = truth + np.array([1.5, -2.0])
    fig = viz.compare_grid([np.zeros((80, 100, 3), np.uint8)], [truth], [prediction], ["best"])
    ax = fig.get_axes()[0]
    (errors,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(errors.get_segments()) == 98
    assert np.allclose(errors.get_segments()[5], [truth[5], prediction[5]])
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [d.get_label() for d in dots] == ["ground truth", "prediction"]
    assert np.allclose(dots[1].get_offsets(), prediction)


# ----------------------------------------------------------------------------- source and paths


def test_source_markdown_is_the_file_text_from_the_function_line() -> None:
    """The block holds exactly the file's lines of the function, headed by its path and first line."""
    from hrnet_lib.data import transforms

    text = viz.source_markdown(transforms.warp_matrix)
    path = viz.REPO / "hrnet_lib" / "data" / "transforms.py"
    lines = path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("def warp_matrix(")) + 1
    head, _, block = text.partition("\n\n")
    assert head == f"`warp_matrix` in `hrnet_lib/data/transforms.py`, line {first}:"
    body = block.removeprefix("```python\n").removesuffix("\n```").splitlines()
    assert body == lines[first - 1 : first - 1 + len(body)]
    assert body[-1] == "    return affine_from_points(*warp_points(center, scale, rotation_deg, output_size))"


def test_source_markdown_dedents_methods_and_outgrows_fences_in_the_code(tmp_path: Path) -> None:
    import importlib.util

    module_path = tmp_path / "fenced.py"
    module_path.write_text(
        "class Box:\n    def show(self):\n        '''```python\n        x\n        ```'''\n        return 1\n"
    )
    spec = importlib.util.spec_from_file_location("fenced", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = viz.source_markdown(module.Box.show)
    assert text.startswith(
        f"`Box.show` in `…/{tmp_path.name}/fenced.py`, line 2:\n\n````python\ndef show(self):"
    )
    assert text.endswith("    return 1\n````")
    with pytest.raises(TypeError, match="no source to show"):
        viz.source_markdown(len)


def test_shown_path_and_shown_paths_hide_the_machine() -> None:
    assert viz.shown_path(viz.REPO / "runs" / "a" / "best.pt") == "runs/a/best.pt"
    assert viz.shown_path("runs/a") == "runs/a"
    assert viz.shown_path("/tmp/hrnet-book-x/work/run") == "…/work/run"
    assert viz.shown_paths("in …/work/data") == "in …/work/data"  # shown once is shown
    text = f"checkpoint {viz.REPO}/runs/a/best.pt, data /tmp/w/data, 3/4 of images / s, a/b"
    assert viz.shown_paths(text) == "checkpoint runs/a/best.pt, data …/w/data, 3/4 of images / s, a/b"


# ----------------------------------------------------------------------------- code walk-through figures


def test_plot_warp_marks_the_three_points_in_photo_and_crop() -> None:
    from hrnet_lib.data.transforms import warp_points

    src, dst = warp_points((50.0, 40.0), (30.0, 30.0), 20.0, (64, 64))
    fig = viz.plot_warp(np.zeros((80, 100, 3), np.uint8), src, np.zeros((64, 64, 3), np.uint8), dst)
    photo, crop = fig.get_axes()
    for ax, points in ((photo, src), (crop, dst)):
        marked = np.array([c.get_offsets()[0] for c in ax.collections if len(c.get_offsets()) == 1])
        np.testing.assert_allclose(marked, points)
        assert [t.get_text() for t in ax.texts] == ["0", "1", "2"]
    corners = next(p for p in photo.patches).get_xy()[:4]
    # the dashed square: centre at src[0], side 30, turned by the rotation
    np.testing.assert_allclose(corners.mean(axis=0), src[0])
    np.testing.assert_allclose(np.linalg.norm(corners[1] - corners[0]), 30.0)


def test_plot_gaussian_writes_each_patch_value_and_marks_peak_and_landmark() -> None:
    from hrnet_lib.data.targets import encode_heatmaps

    keypoint = np.array([7.3, 9.6])
    heatmap = encode_heatmaps(keypoint[None], (16, 16), 1.0)[0][0]
    fig = viz.plot_gaussian(heatmap, keypoint, 3)
    patch = fig.get_axes()[1]
    written = {(int(t.get_position()[0]), int(t.get_position()[1])): t.get_text() for t in patch.texts}
    assert len(written) == 49  # the 7 x 7 patch around the peak at (7, 10)
    assert written[(7, 10)] == "1.00" and written[(8, 10)] == f"{np.exp(-0.5):.2f}"
    assert all(text == f"{heatmap[y, x]:.2f}" for (x, y), text in written.items())
    square = next(p for p in patch.patches if isinstance(p, Rectangle))
    assert square.get_xy() == (6.5, 9.5)
    assert patch.lines[0].get_xydata().tolist() == [[7.3, 9.6]]


def test_plot_gaussian_titles_lie_inside_the_figure() -> None:
    """Constrained layout cut the tops of this figure's two titles off (two square images side by side)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from hrnet_lib.data.targets import encode_heatmaps

    for grid, sigma in ((64, 2.0), (24, 1.0)):
        keypoint = np.array([0.47, 0.32]) * grid
        fig = viz.plot_gaussian(encode_heatmaps(keypoint[None], (grid, grid), sigma)[0][0], keypoint, 6)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        for ax in fig.get_axes():
            box = ax.title.get_window_extent(canvas.get_renderer())
            assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1, (grid, ax.get_title())


def test_plot_fuse_one_arrow_per_path_coloured_by_kind_and_a_label_per_cell() -> None:
    plan = [
        [{"kind": "identity", "factor": 1, "convs": 0, "channels": (8, 8)},
         {"kind": "upsample", "factor": 2, "convs": 1, "channels": (16, 8)}],
        [{"kind": "strided", "factor": 2, "convs": 1, "channels": (8, 16)},
         {"kind": "identity", "factor": 1, "convs": 0, "channels": (16, 16)}],
    ]  # fmt: skip
    fig = viz.plot_fuse([(32, 32), (16, 16)], plan)
    arrows = [p for p in fig.get_axes()[0].patches if isinstance(p, FancyArrowPatch)]
    colours = sorted(a.get_edgecolor()[:3] for a in arrows)
    expected = sorted(to_rgb(viz.FUSE_COLORS[k]) for k in ("identity", "upsample", "strided", "identity"))
    assert colours == expected
    labels = [t.get_text() for t in fig.get_axes()[1].texts]
    assert labels == ["identity", "1x1 conv 16->8\nupsample x2", "1 x 3x3 conv, stride 2\n8->16", "identity"]


def test_plot_decode_draws_each_step_from_the_maximum() -> None:
    heatmap = np.zeros((12, 12))
    heatmap[5, 6], heatmap[5, 7] = 1.0, 0.6
    steps = {"argmax": np.array([6.0, 5.0]), "quarter": np.array([6.25, 5.0]), "dark": np.array([6.4, 5.1])}
    fig = viz.plot_decode(heatmap, steps, truth=np.array([6.5, 5.2]), radius=2)
    zoom = fig.get_axes()[1]
    arrows = [t for t in zoom.texts if getattr(t, "arrow_patch", None) is not None]
    assert [a.xy for a in arrows] == [(6.0, 5.0), (6.25, 5.0), (6.4, 5.1)]
    assert all(a.xyann == (6, 5) for a in arrows)
    assert zoom.get_xlim() == (3.5, 8.5) and zoom.get_ylim() == (7.5, 2.5)
    values = [t.get_text() for t in zoom.texts if t.get_text()]
    assert len(values) == 25 and values.count("1") == 1 and values.count("0.6") == 1


def test_plot_maps_zooms_each_panel_to_its_own_maximum() -> None:
    a, b = np.zeros((10, 10)), np.zeros((10, 10))
    a[2, 3], b[7, 8] = 1.0, 2.0
    fig = viz.plot_maps([a, b], ["a", "b"], [np.array([3.2, 2.1]), None], radius=1)
    left, right = fig.get_axes()
    assert left.get_xlim() == (1.5, 4.5) and right.get_xlim() == (6.5, 9.5)
    assert len(left.lines) == 1 and len(right.lines) == 0
    assert left.images[0].get_clim() == right.images[0].get_clim() == (0.0, 2.0)


def test_plot_schedules_one_panel_per_schedule_with_its_values() -> None:
    fig = viz.plot_schedules({"a": (np.arange(3), [1e-3, 2e-3, 2e-3]), "b": (np.arange(2), [1.0, 0.1])})
    first, second = fig.get_axes()
    np.testing.assert_allclose(first.lines[0].get_ydata(), [1e-3, 2e-3, 2e-3])
    assert second.get_title() == "b" and second.get_yscale() == "log"
