"""`python -m hrnet_lib evaluate`: a checkpoint on the WFLW test set and its six subsets (model-zoo table).

Pipeline per face: crop (the landmark box padded 1.25, or the official mmpose centre/scale with
``--annotations``; ``--crops`` adds or swaps in the detection rectangle's and a face detector's crops,
see `hrnet_lib.evaluate.crops`) -> model heatmaps (flip test by default) -> decode (standard or DARK)
-> times the stride back to input pixels -> inverse crop transform -> image pixels -> inter-ocular NME.

Besides the table it writes a JSON (per-face and per-landmark NME, CED curves, table values, provenance),
a CED figure and the predicted landmarks (``*_predictions.npz``) next to it. The mean-shape baseline
(every face predicted as the mean training shape in its crop) is reported on the same faces.

Reproducing the published row from mmpose's file (on a machine with WFLW in data/WFLW)::

    python -m hrnet_lib evaluate --checkpoint data/hrnetv2_w18_wflw_256x256-2bf032a6_20210125.pth \\
        --data-root data/WFLW --annotations data/WFLW/mmpose_json --out runs/published/results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import io
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hrnet_lib import viz
from hrnet_lib.data.loader import WFLWDataset, build_loader, crop_box
from hrnet_lib.data.wflw import IMAGE_DIR, MATCH_TOLERANCE, load_split, load_subsets, read_mmpose_json
from hrnet_lib.device import PRECISIONS, resolve_device, resolve_precision
from hrnet_lib.evaluate.crops import PROTOCOLS, crop_squares, parse_protocols, protocol_faces
from hrnet_lib.evaluate.decode import DECODERS
from hrnet_lib.evaluate.inference import crops_to_landmarks
from hrnet_lib.evaluate.metrics import bootstrap_ci, ced, fr_auc, mean_shape_baseline, nme, per_landmark_nme
from hrnet_lib.io import NoSpaceError, atomic_bytes, prepare_output
from hrnet_lib.model.hrnet import build_model
from hrnet_lib.model.weights import (
    TRUST_FLAG,
    TRUST_HELP,
    WeightsMismatchError,
    load_weights,
    read_checkpoint,
)
from hrnet_lib.provenance import git_commit, hardware

#: The column order of the mmpose model-zoo table.
COLUMNS = ("test", "pose", "illumination", "occlusion", "blur", "makeup", "expression")
#: Published NME (%) of HRNetV2-W18 at 256x256 (mmpose model zoo, td-hm_hrnetv2-w18_8xb64-60e_wflw-256x256).
PUBLISHED = {
    "test": 4.06,
    "pose": 6.97,
    "illumination": 3.99,
    "occlusion": 4.83,
    "blur": 4.58,
    "makeup": 3.94,
    "expression": 4.33,
}
PUBLISHED_SOURCE = "mmpose model zoo, td-hm_hrnetv2-w18_8xb64-60e_wflw-256x256 (flip test, standard decoder)"
#: Published NME (%) of the same model with DARK decoding (mmpose model zoo; trained with DARK's targets).
PUBLISHED_DARK = {
    "test": 3.98,
    "pose": 6.98,
    "illumination": 3.96,
    "occlusion": 4.78,
    "blur": 4.56,
    "makeup": 3.89,
    "expression": 4.29,
}
#: Published NME (%) of the recipe trained with the Adaptive Wing loss (mmpose model zoo, standard decoder).
PUBLISHED_AWING = {
    "test": 4.02,
    "pose": 6.94,
    "illumination": 3.97,
    "occlusion": 4.78,
    "blur": 4.59,
    "makeup": 3.87,
    "expression": 4.28,
}
#: Model settings of the published checkpoint, used for any checkpoint that does not carry its own config.
PUBLISHED_CONFIG: dict[str, Any] = {
    "model": "hrnetv2_w18",
    "num_keypoints": 98,
    "upsample": "bilinear",
    "input_size": 256,
    "heatmap_size": 64,
}
FR_THRESHOLD = 0.10
TEST_JSON = "face_landmarks_wflw_test.json"


def load_model(path: str | Path, trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint needs and load its weights (strict); returns (model, settings).

    The project's checkpoints ({"model": state_dict, "config": {...}}) give model name, keypoints,
    upsampling, input and heatmap size; any other file (an mmpose checkpoint) gets the published
    settings: hrnetv2_w18, bilinear fusion, 256 -> 64. The settings also name the weights' layout.
    A file without a trained heatmap head (ImageNet or backbone-only weights) or with NaN or infinite
    weights is an error; `trust` lets a file hold more than tensors and plain data (`read_checkpoint`).
    """
    state, _ = read_checkpoint(path, trust)
    config = dict(PUBLISHED_CONFIG)
    if isinstance(state, dict) and "model" in state and isinstance(state.get("config"), dict):
        config.update({key: state["config"][key] for key in PUBLISHED_CONFIG if key in state["config"]})
    model = build_model(config["model"], int(config["num_keypoints"]), config["upsample"])
    try:
        loaded = load_weights(model, state, source=str(path))
    except WeightsMismatchError as error:
        raise ValueError(f"the weights do not fit {config['model']}: {error}") from None
    except TypeError as error:  # no state dict inside
        raise ValueError(f"{path}: {error}") from None
    if loaded.missing:
        raise ValueError(
            f"{path}: {loaded.layout} weights leave {len(loaded.missing)} model tensors at initialisation "
            f"(e.g. {loaded.missing[0]}): not a trained landmark model"
        )
    config["weights_layout"] = loaded.layout
    return model, config


def predict_faces(
    model: nn.Module,
    faces: list,
    image_root: str | Path,
    input_size: int = 256,
    heatmap_size: int = 64,
    flip: bool = True,
    decoder: str = "standard",
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = True,
) -> np.ndarray:
    """Predicted landmarks (N, K, 2) in image pixels of each face, through the test-time crop.

    Batched, in inference mode, channels_last, in `precision` (one of `device.PRECISIONS`; heatmaps are
    averaged and decoded in float32).
    """
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last)
    dataset = WFLWDataset(faces, image_root, train=False, input_size=input_size, heatmap_size=heatmap_size)
    loader = build_loader(dataset, batch_size, train=False, workers=workers)
    out: np.ndarray | None = None
    with tqdm(total=len(faces), desc="evaluating", unit="face", disable=not progress) as bar:
        for batch in loader:
            centers, scales = batch["center"].numpy(), batch["scale"].numpy()
            landmarks, _ = crops_to_landmarks(
                model,
                device,
                batch["image"],
                centers,
                scales,
                input_size,
                heatmap_size,
                flip,
                decoder,
                precision,
            )
            if out is None:
                out = np.zeros((len(faces), landmarks.shape[1], 2))
            out[batch["index"].numpy()] = landmarks
            bar.update(len(landmarks))
    if out is None:
        raise ValueError("no faces to evaluate")
    return out


def with_official_crops(faces: list, json_path: str | Path) -> list:
    """The faces with the official crop centre/scale of mmpose's json, matched by image file name and
    landmarks; every face must have exactly one match (an error names the face's annotation line)."""
    by_name: dict[str, list] = {}
    for entry in read_mmpose_json(json_path):
        by_name.setdefault(Path(entry.image).name, []).append(entry)
    matched = []
    for face in faces:
        close = [
            entry
            for entry in by_name.get(Path(face.image).name, [])
            if np.abs(entry.landmarks - face.landmarks).max() <= MATCH_TOLERANCE
        ]
        if len(close) != 1:
            what = "no face" if not close else f"{len(close)} faces"
            raise ValueError(f"{face.source}: {what} in {json_path} with this image and these landmarks")
        matched.append(dataclasses.replace(face, center=close[0].center, scale=close[0].scale))
    return matched


def subset_scores(per_face: np.ndarray, subsets: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """NME (%) with its 95% bootstrap interval over faces, FR@10% (%), AUC@10% and size for the full test
    set and each subset, in table order."""
    scores: dict[str, dict[str, Any]] = {}
    for name in COLUMNS:
        errors = per_face if name == "test" else per_face[subsets[name]]
        if len(errors) == 0:
            nan = float("nan")
            scores[name] = {"faces": 0, "nme": nan, "nme_ci95": [nan, nan], "fr": nan, "auc": nan}
            continue
        fr, auc = fr_auc(errors, FR_THRESHOLD)
        scores[name] = {
            "faces": len(errors),
            "nme": 100 * float(errors.mean()),
            "nme_ci95": [100 * bound for bound in bootstrap_ci(errors)],
            "fr": 100 * fr,
            "auc": auc,
        }
    return scores


def paired_difference(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """NME difference (percentage points, ours - theirs) per table column between two results of the same
    test faces, with its 95% paired-bootstrap interval over faces (see `bootstrap_ci`); None for an empty
    subset. ValueError when the two results are not of the same faces in the same order."""
    images = [[face["image"] for face in results["per_face"]] for results in (ours, theirs)]
    if images[0] != images[1] or ours["subsets"] != theirs["subsets"]:
        raise ValueError("the two results are not of the same test faces; a paired comparison needs them")
    delta = np.array([face["nme"] for face in ours["per_face"]])
    delta -= np.array([face["nme"] for face in theirs["per_face"]])
    differences: dict[str, dict[str, Any]] = {}
    for name in COLUMNS:
        part = delta if name == "test" else delta[np.asarray(ours["subsets"][name], dtype=int)]
        differences[name] = {
            "faces": len(part),
            "difference": 100 * float(part.mean()) if len(part) else None,
            "ci95": [100 * bound for bound in bootstrap_ci(part)] if len(part) else None,
        }
    return differences


def nme_row(name: str, table: dict[str, Any]) -> list[Any]:
    """A table row: `name`, then the NME (%) of each column in the model-zoo order (None when empty), from
    a results table's "model" or "baseline" entry."""
    return [name, *(table[column]["nme"] for column in COLUMNS)]


def ci_text(scores: dict[str, Any], digits: int = 2) -> str:
    """A column's NME interval as a table cell ("3.95 to 4.12"); "-" when empty (NaN, or None once written
    to JSON) or not recorded."""
    cells = tuple(_cell(bound, digits) for bound in scores.get("nme_ci95") or (None, None))
    return "-" if "-" in cells else " to ".join(cells)


def _cell(value: float | None, digits: int) -> str:
    """A table cell; an empty subset (NaN, or None once written to JSON) prints as "-"."""
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def format_table(results: dict[str, Any]) -> str:
    """The model-zoo table (markdown): NME (%) per column for the model with its bootstrap interval, then
    FR@10% and AUC@10%, the mean-shape baseline on the same faces, the published row, and the number of
    faces per column."""
    model, baseline = results["table"]["model"], results["table"]["baseline"]
    title = results["table"].get("title", "this checkpoint")
    rows = [
        (f"{title}: NME (%)", [_cell(model[c]["nme"], 2) for c in COLUMNS]),
        ("95% interval over faces", [ci_text(model[c]) for c in COLUMNS]),
        ("FR@10% (%)", [_cell(model[c]["fr"], 2) for c in COLUMNS]),
        ("AUC@10%", [_cell(model[c]["auc"], 4) for c in COLUMNS]),
        ("mean-shape baseline: NME (%)", [_cell(baseline[c]["nme"], 2) for c in COLUMNS]),
        ("mean-shape baseline: FR@10% (%)", [_cell(baseline[c]["fr"], 2) for c in COLUMNS]),
        ("mean-shape baseline: AUC@10%", [_cell(baseline[c]["auc"], 4) for c in COLUMNS]),
        ("published HRNetV2-W18 (mmpose): NME (%)", [f"{PUBLISHED[c]:.2f}" for c in COLUMNS]),
        ("faces", [str(model[c]["faces"]) for c in COLUMNS]),
    ]
    lines = ["| WFLW-format test set | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return "\n".join(lines)


#: The header of `protocol_rows` after the crop protocol's name and the table columns.
PROTOCOL_EXTRA = ("test, faces the detector found", "detector missed")


def protocol_rows(results: dict[str, Any]) -> list[list[Any]]:
    """One row per crop protocol of a results file: its name, NME (%) per table column, NME (%) on the
    test faces the detector found (when the detector protocol ran), and how many faces the detector
    missed (its row only); None where a value does not apply or a subset is empty."""
    rows = []
    for name, record in results.get("crop_protocols", {}).items():
        values = [record["table"][column]["nme"] for column in COLUMNS] + [record.get("nme_detected_faces")]
        rows.append([name, *(None if v is None or v != v else v for v in values), record.get("missed")])
    return rows


def format_protocols(results: dict[str, Any]) -> str:
    """The crop-protocol table (markdown), rows of `protocol_rows`."""
    header = ["crops", *COLUMNS, *PROTOCOL_EXTRA]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, *values, missed in protocol_rows(results):
        cells = [_cell(v, 2) for v in values] + ["-" if missed is None else str(missed)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def baseline_landmarks(data_root: Path, test_boxes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The mean-shape baseline's landmarks: the mean training shape placed in each test face's landmark-box
    crop (the training split has no official crops, so both splits use landmark boxes)."""
    train_faces = load_split(data_root, "train", check_images=False)
    train_boxes = [crop_box(face) for face in train_faces]
    return mean_shape_baseline(
        np.stack([face.landmarks for face in train_faces]),
        np.stack([c for c, _ in train_boxes]),
        np.stack([s for _, s in train_boxes]),
        np.stack([c for c, _ in test_boxes]),
        np.stack([s for _, s in test_boxes]),
    )


def ced_record(per_face: np.ndarray, subsets: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """The results file's CED curves: shared thresholds, and the share of faces below each per column."""
    curves = {"thresholds": ced(per_face, FR_THRESHOLD)[0].tolist()}
    for name in COLUMNS:
        errors = per_face if name == "test" else per_face[subsets[name]]
        curves[name] = ced(errors, FR_THRESHOLD)[1].tolist() if len(errors) else []
    return curves


def run_record(device: torch.device) -> dict[str, str]:
    """Where and when a result was computed: commit, UTC date, hardware and torch version."""
    return {
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(device),
        "torch": torch.__version__,
    }


def default_precision(device: torch.device) -> str:
    """Evaluation's precision when none is asked for: bf16 on a GPU, fp32 on a CPU, where the table is set
    against published numbers to two decimals and evaluation is short (`--precision auto` goes faster)."""
    return "auto" if device.type == "cuda" else "fp32"


def evaluate(
    checkpoint: str | Path,
    data_root: str | Path,
    flip: bool = True,
    decoder: str = "standard",
    annotations: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "auto",
    precision: str | None = None,
    progress: bool = True,
    crops: Sequence[str] = ("landmarks",),
    trust: bool = False,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Evaluate a checkpoint on the test set and its subsets; returns (results for the JSON, arrays:
    "predictions", "landmarks" (ground truth) and "baseline", each (N, K, 2) image pixels).

    `crops` names the crop protocols to run (`crops.PROTOCOLS`); the first one fills the table, and
    "crop_protocols" holds every protocol's per-subset scores, with "predictions_<name>" and the crop
    squares "crops_<name>" (N, 3) among the arrays. `precision` None is `default_precision`."""
    data_root = Path(data_root)
    if data_root.is_file():
        raise ValueError(f"--data-root {data_root} is a file; name the WFLW root folder")
    torch_device = resolve_device(device)
    precision = resolve_precision(torch_device, precision or default_precision(torch_device))
    model, config = load_model(checkpoint, trust)
    faces = load_split(data_root, "test")
    subsets = load_subsets(data_root, faces)
    test_boxes = [crop_box(face) for face in faces]
    if annotations is not None:
        json_path = Path(annotations)
        faces = with_official_crops(faces, json_path / TEST_JSON if json_path.is_dir() else json_path)
    truth = np.stack([face.landmarks for face in faces])
    arrays = {"landmarks": truth}
    protocols: dict[str, Any] = {}
    for name in crops:
        cropped, record = protocol_faces(faces, name, data_root / IMAGE_DIR, progress)
        predicted = predict_faces(
            model,
            cropped,
            data_root / IMAGE_DIR,
            config["input_size"],
            config["heatmap_size"],
            flip,
            decoder,
            batch_size,
            workers,
            torch_device,
            precision,
            progress,
        )
        arrays[f"predictions_{name}"], arrays[f"crops_{name}"] = predicted, crop_squares(cropped)
        table = subset_scores(nme(predicted, truth), subsets)
        protocols[name] = {"rule": PROTOCOLS[name], "table": table, **record}
    arrays["predictions"] = predictions = arrays[f"predictions_{crops[0]}"]
    arrays["baseline"] = baseline = baseline_landmarks(data_root, test_boxes)
    results = results_record(checkpoint, data_root, faces, subsets, predictions, truth, baseline)
    results["provenance"] |= {
        "annotations": crops_text(annotations, crops[0]),
        "crops": crops[0],
        "decoder": decoder,
        "flip_test": flip,
        "precision": precision,
        "model": config,
        **run_record(torch_device),
    }
    results["crop_protocols"] = protocols
    if "detector" in protocols:
        found = np.ones(len(faces), bool)
        found[protocols["detector"]["missed_faces"]] = False
        for name in crops:
            errors = nme(arrays[f"predictions_{name}"], truth)[found]
            protocols[name]["nme_detected_faces"] = 100 * float(errors.mean()) if found.any() else None
    return results, arrays


def crops_text(annotations: str | Path | None, protocol: str) -> str:
    """What cropped the table's faces, for the provenance and the book's captions."""
    if protocol == "landmarks":
        return str(annotations) if annotations is not None else "official txt (landmark-box crops)"
    return f"{protocol} crops: {PROTOCOLS[protocol]}"


def results_record(
    checkpoint: str | Path,
    data_root: Path,
    faces: list,
    subsets: dict[str, np.ndarray],
    predictions: np.ndarray,
    truth: np.ndarray,
    baseline: np.ndarray,
) -> dict[str, Any]:
    """The results file's table, per-face and per-landmark errors and CED curves of one set of predictions."""
    per_face = nme(predictions, truth)
    baseline_per_face = nme(baseline, truth)
    checkpoint = Path(checkpoint)
    return {
        "provenance": {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": _sha256(checkpoint)[:16],
            "data_root": str(data_root),
        },
        "table": {
            "title": checkpoint.name,
            "model": subset_scores(per_face, subsets),
            "baseline": subset_scores(baseline_per_face, subsets),
            "published": {"nme": PUBLISHED, "source": PUBLISHED_SOURCE},
            "units": "nme and fr in percent, auc a fraction of 1; threshold 10% of the inter-ocular distance",
        },
        "subsets": {name: subsets[name].tolist() for name in subsets},
        "per_face": [
            {"index": i, "image": face.image, "source": face.source, "nme": float(per_face[i])}
            for i, face in enumerate(faces)
        ],
        "per_landmark_nme": per_landmark_nme(predictions, truth).tolist(),
        "baseline_per_face_nme": baseline_per_face.tolist(),
        "ced": ced_record(per_face, subsets),
    }


def ced_curves(results: dict[str, Any], baseline: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The CED curves of a results file for `viz.plot_ced`: the test set and each non-empty subset,
    labelled with their AUC, and with `baseline` the mean-shape baseline's on the test set."""
    thresholds = np.asarray(results["ced"]["thresholds"])
    model = results["table"]["model"]
    curves = {
        f"{name} (AUC {model[name]['auc']:.3f})": (thresholds, np.asarray(results["ced"][name]))
        for name in COLUMNS
        if results["ced"][name]
    }
    if baseline and results.get("baseline_per_face_nme"):
        floor = ced(np.asarray(results["baseline_per_face_nme"]), FR_THRESHOLD, len(thresholds) - 1)[1]
        curves["mean-shape baseline, test"] = (thresholds, floor)
    return curves


def plot_ced(results: dict[str, Any], path: str | Path) -> None:
    """The CED figure of a results file (test, subsets and the baseline), written as a PNG."""
    curves = ced_curves(results, baseline=True)
    figure = viz.plot_ced(curves, FR_THRESHOLD, f"CED, {results['table']['title']}")
    atomic_bytes(path, viz.figure_png(figure, dpi=120))


def sidecar_paths(out: Path) -> tuple[Path, Path]:
    """Where the CED figure and the predictions go, next to the results JSON."""
    return out.with_name(out.stem + "_ced.png"), out.with_name(out.stem + "_predictions.npz")


def write_results(results: dict[str, Any], arrays: dict[str, np.ndarray], out: str | Path) -> None:
    """Atomically write the CED figure and the predictions, then the results JSON beside them (last, so a
    results file, which `make` takes as the sign of a finished evaluation, always has its sidecars)."""
    out = Path(out)
    figure, npz = sidecar_paths(out)
    plot_ced(results, figure)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_bytes(npz, buffer.getvalue())
    atomic_bytes(out, (json.dumps(results, indent=1, allow_nan=False) + "\n").encode())


def _nan_to_none(value: Any) -> Any:
    """JSON has no NaN: empty subsets store null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m hrnet_lib evaluate`."""
    parser = argparse.ArgumentParser(
        prog="python -m hrnet_lib evaluate",
        description="Evaluate a checkpoint on the WFLW test set and its six subsets (NME, FR@10%, AUC@10%).",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="project checkpoint or mmpose .pth")
    parser.add_argument("--data-root", required=True, type=Path, help="WFLW root (official layout)")
    parser.add_argument("--out", required=True, type=Path, help="results JSON; figure and npz go beside it")
    parser.add_argument("--no-flip", action="store_true", help="no flip test (single pass)")
    parser.add_argument("--decoder", choices=DECODERS, default="standard")
    parser.add_argument(
        "--annotations",
        type=Path,
        default=None,
        help=f"mmpose's {TEST_JSON} (or its folder): use its official crop centre/scale, as published",
    )
    parser.add_argument(
        "--crops",
        default="landmarks",
        help="crop protocols, comma-separated or 'all': landmarks (default; the landmark box, mmpose's), "
        "rect (the annotation's detection rectangle), detector (OpenCV's Haar detection); the first one "
        "fills the table",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="bf16 autocast or fp32; auto: bf16 where the device runs it natively (a GPU, a CPU with AMX or "
        "AVX-512 BF16). Default: bf16 on a GPU, fp32 on a CPU",
    )
    parser.add_argument(
        "--fp32", dest="precision", action="store_const", const="fp32", help="--precision fp32"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(TRUST_FLAG, action="store_true", help=TRUST_HELP)
    return parser


def main(argv: list[str]) -> int:
    """Entry point of `python -m hrnet_lib evaluate`; returns the exit status (0 ok, 1 a clear error)."""
    args = build_parser().parse_args(argv)
    try:
        crops = parse_protocols(args.crops)
        prepare_output(args.out)
        results, arrays = evaluate(
            args.checkpoint,
            args.data_root,
            flip=not args.no_flip,
            decoder=args.decoder,
            annotations=args.annotations,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            precision=args.precision,
            progress=not args.quiet,
            crops=crops,
            trust=args.trust_checkpoint,
        )
        results["provenance"]["command"] = shlex.join(["python", "-m", "hrnet_lib", "evaluate", *argv])
        print(format_table(results))
        if len(crops) > 1:
            print(format_protocols(results))
        write_results(_nan_to_none(results), arrays, args.out)
    except (FileNotFoundError, ValueError, NoSpaceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    figure, npz = sidecar_paths(args.out)
    print(f"wrote {args.out}, {figure} and {npz}")
    return 0
