"""98 landmarks on any photo or video.

`python -m hrnet_lib predict PHOTO --checkpoint CKPT [--box x0 y0 x1 y1] --out OUT.png` writes OUT.png
(the photo with each face's box and landmarks drawn) and OUT.json (per face: box, landmarks, scores).

`python -m hrnet_lib predict VIDEO --checkpoint CKPT --out OUT.mp4 [--smooth]` tracks the faces through
the frames (the detector on the first frame and when a face is lost; see `tracking`) and writes OUT.mp4,
OUT.jsonl (one record a frame) and OUT.json (a summary; with ``--truth`` the tracking error and jitter).

Both run `Landmarker`: each face's box (``--box``, or OpenCV's Haar detector) is cropped as at
evaluation (`hrnet_lib.evaluate.boxes`), predicted with the flip test, decoded and mapped to the photo.
CKPT is a checkpoint (this project's or mmpose's) or an .onnx file from `python -m hrnet_lib export`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hrnet_lib.data.video import is_video
from hrnet_lib.device import PRECISIONS
from hrnet_lib.evaluate.boxes import CASCADE, PredictError
from hrnet_lib.evaluate.decode import DECODERS
from hrnet_lib.evaluate.landmarker import BACKENDS, Landmarker, draw_faces, load_image
from hrnet_lib.evaluate.tracking import MIN_SCORE
from hrnet_lib.evaluate.video import predict_video
from hrnet_lib.io import NoSpaceError, atomic_bytes, prepare_output, save_json
from hrnet_lib.model.weights import TRUST_FLAG, TRUST_HELP

# One-Euro defaults for landmarks in pixels at video frame rates (see MEASUREMENTS.md for their effect).
SMOOTHING = {"min_cutoff": 1.0, "beta": 0.05, "d_cutoff": 1.0}


def predict_photo(
    image_path: str | Path, landmarker: Landmarker, out: str | Path, box: list[float] | None = None
) -> dict[str, Any]:
    """Predict the landmarks of every face of a photo; write OUT.png and OUT.json; return the JSON data."""
    image_path, out = Path(image_path), Path(out)
    if out.suffix.lower() != ".png":
        raise PredictError(f"--out {out}: name the PNG to write (OUT.png); the JSON goes beside it")
    prepare_output(out)
    faces = landmarker(image_path, box)
    if not faces:
        raise PredictError(
            f"{image_path}: no face found by the detector; pass the face box with --box x0 y0 x1 y1"
        )
    bgr = np.ascontiguousarray(load_image(image_path)[0][..., ::-1])
    boxes = np.stack([face.box for face in faces])
    ok, png = cv2.imencode(".png", draw_faces(bgr, boxes, [face.landmarks for face in faces]))
    if not ok:
        raise PredictError(f"{out}: cannot encode the PNG")
    result = {
        "image": str(image_path),
        "flip_test": landmarker.flip_test,
        "decoder": landmarker.decoder,
        "precision": landmarker.precision,
        "backend": landmarker.backend,
        "box_source": "--box" if box is not None else f"OpenCV Haar cascade {CASCADE}",
        "faces": [face.to_json() for face in faces],
    }
    atomic_bytes(out, png.tobytes())
    save_json(result, out.with_suffix(".json"), indent=1)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m hrnet_lib predict`."""
    parser = argparse.ArgumentParser(
        prog="python -m hrnet_lib predict", description="Find the 98 landmarks on any photo or video."
    )
    parser.add_argument(
        "input", type=Path, help="a photo OpenCV can read, or a video (.mp4, .avi, .mov, ...)"
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint, mmpose .pth or .onnx")
    parser.add_argument(
        "--box",
        type=float,
        nargs=4,
        metavar=("X0", "Y0", "X1", "Y1"),
        help="face box, pixels (video: frame 0)",
    )
    parser.add_argument("--out", required=True, type=Path, help="OUT.png for a photo, OUT.mp4 for a video")
    parser.add_argument("--no-flip", action="store_true", help="no flip test")
    parser.add_argument("--decoder", choices=DECODERS, default="standard")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None, help="default torch (onnxruntime for .onnx)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): bf16 where the device runs it natively (a GPU, a CPU with AMX or AVX-512 "
        "BF16), else fp32; bf16 or fp32 force it (onnxruntime computes in fp32)",
    )
    video = parser.add_argument_group("video")
    video.add_argument("--smooth", action="store_true", help="One-Euro smoothing of the landmarks")
    for name, value in SMOOTHING.items():
        video.add_argument(f"--{name.replace('_', '-')}", type=float, default=value, help=f"One-Euro {name}")
    video.add_argument("--max-faces", type=int, default=1, help="faces to track (default: %(default)s)")
    video.add_argument(
        "--min-score", type=float, default=MIN_SCORE, help="mean score below which a face is lost"
    )
    video.add_argument(
        "--truth", type=Path, help="landmarks per frame (synth-video's .truth.jsonl) to compare"
    )
    video.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(TRUST_FLAG, action="store_true", help=TRUST_HELP)
    return parser


def run(args: argparse.Namespace) -> str:
    """Run the parsed command; returns the line to print."""
    device = "cpu" if args.backend == "onnxruntime" or args.checkpoint.suffix == ".onnx" else args.device
    landmarker = Landmarker(
        args.checkpoint,
        device=device,
        flip_test=not args.no_flip,
        decoder=args.decoder,
        backend=args.backend,
        precision=args.precision,
        trust=args.trust_checkpoint,
    )
    if not is_video(args.input):
        result = predict_photo(args.input, landmarker, args.out, args.box)
        return f"{len(result['faces'])} face(s): wrote {args.out} and {args.out.with_suffix('.json')}"
    if args.out.suffix.lower() != ".mp4":
        raise PredictError(f"--out {args.out}: name the .mp4 to write for a video")
    prepare_output(args.out)
    tracker: dict[str, Any] = {"max_faces": args.max_faces, "min_score": args.min_score}
    if args.smooth:
        tracker["smoothing"] = {name: getattr(args, name) for name in SMOOTHING}
    if args.box is not None:
        tracker["first_boxes"] = np.array([args.box])
    summary = predict_video(args.input, landmarker, args.out, tracker, args.truth, not args.quiet)
    line = (
        f"{summary['frames']} frames, a face in {summary['frames_with_a_face']}, detector run "
        f"{summary['detector_runs']} time(s): wrote {args.out}, {args.out.with_suffix('.jsonl')} and "
        f"{args.out.with_suffix('.json')}"
    )
    if "metrics" in summary:
        m = summary["metrics"]
        line += (
            f"\nagainst {args.truth}: error {m['error_px']:.2f} px (NME {100 * m['nme']:.2f}%), jitter "
            f"{m['jitter_px']:.2f} px a frame ({100 * m['jitter_nme']:.2f}% of the inter-ocular distance), "
            f"{m['missed_frames']} frame(s) missed"
        )
    return line


def main(argv: list[str]) -> int:
    """Entry point of `python -m hrnet_lib predict`; returns the exit status (0 ok, 1 a clear error)."""
    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except (PredictError, FileNotFoundError, ValueError, ImportError, NoSpaceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
