"""ONNX export of a landmark model, and an onnxruntime session that stands in for the PyTorch model.

The graph is the network alone: normalised RGB crops ``images`` (B, 3, S, S) float32 -> ``heatmaps``
(B, K, h, w) float32, with a dynamic batch axis. The flip test, decoding and the map back to the photo
stay outside, in the code the PyTorch path uses, so the two backends differ only in what computes the
heatmaps. The model settings (input and heatmap size, keypoints) travel in the file's metadata.

Exported at opset ``OPSET`` with torch's TorchScript-based exporter (``dynamo=False``): it needs only the
``onnx`` package, where the default torch.export-based exporter also needs ``onnxscript``; HRNet has no
data-dependent control flow, which is what the newer exporter is for. Both packages come with the
project's ``onnx`` extra (``pip install -e '.[onnx]'``, which ``make setup`` runs).
"""

from __future__ import annotations

import io
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

OPSET = 17
INPUT, OUTPUT = "images", "heatmaps"
METADATA_KEYS = ("model", "num_keypoints", "input_size", "heatmap_size")


def require_onnxruntime() -> Any:
    """The onnxruntime module, or an ImportError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "onnxruntime is not installed: install the project's onnx extra (pip install -e '.[onnx]', "
            "which make setup runs)"
        ) from None
    return onnxruntime


def export_onnx(model: nn.Module, input_size: int, metadata: dict[str, Any] | None = None) -> bytes:
    """The ONNX file (bytes) of `model` (crops (B, 3, S, S) -> heatmaps), batch axis dynamic, with
    `metadata` (str(value) per key) in the file's metadata_props. The model is left as it was."""
    try:
        import onnx
    except ImportError:
        raise ImportError("onnx is not installed: pip install -e '.[onnx]' (or make setup)") from None
    was_training = model.training
    model = model.eval()
    example = torch.zeros(2, 3, input_size, input_size, device=next(model.parameters()).device)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # the legacy exporter's deprecation notice, and the tracer on the model's input-shape check
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


class OnnxHeatmaps(nn.Module):
    """An onnxruntime session (CPU) behind the model's interface: float crops in, heatmaps out.

    So `predict_heatmaps` and `crops_to_landmarks` run it unchanged (flip test and decoding included);
    torch only carries the arrays in and out, the network runs in onnxruntime. `threads` sets
    onnxruntime's intra-op threads (None: its default, one per physical core).
    """

    def __init__(self, source: bytes | str | Path, threads: int | None = None) -> None:
        super().__init__()
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"ONNX model not found: {path}")
            source = str(path)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for a bad file
            name = source if isinstance(source, str) else "the ONNX bytes"
            raise ValueError(f"{name}: not a readable ONNX model ({error})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def forward(self, images: Tensor) -> Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: array})[0])


def bench_onnxruntime(
    batch_sizes: tuple[int, ...] = (1, 8),
    iters: int = 5,
    input_size: int = 256,
    name: str = "hrnetv2_w18",
    threads: int | None = None,
) -> dict[str, Any]:
    """CPU forward images/s of onnxruntime beside the eager model and `optimize_for_inference`.

    The three run the same calibrated weights on the same input, interleaved (`iters` rounds); images/s
    uses each variant's fastest run, and the median is reported too. onnxruntime gets as many intra-op
    threads as torch (`threads`, default torch.get_num_threads()).
    """
    from hrnet_lib.model.hrnet import build_model
    from hrnet_lib.model.inference import _time_variants, calibrate_batchnorm, optimize_for_inference

    threads = threads or torch.get_num_threads()
    torch.manual_seed(0)
    model = build_model(name)
    calibrate_batchnorm(model, torch.randn(2, 3, input_size, input_size))
    session = OnnxHeatmaps(export_onnx(model, input_size), threads=threads)
    variants = {"eager": model, "fused": optimize_for_inference(model, compile=False), "onnxruntime": session}
    result: dict[str, Any] = {
        "model": name,
        "input_size": input_size,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime_threads": threads,
        "opset": OPSET,
        "iters": iters,
        "images_per_s": {},
        "images_per_s_median": {},
        "onnxruntime_vs_fused": {},
        "onnxruntime_vs_eager": {},
    }
    for batch in batch_sizes:
        x = torch.randn(batch, 3, input_size, input_size)
        times = _time_variants({k: (v, x) for k, v in variants.items()}, iters, sync=False)
        best = {k: batch / min(t) for k, t in times.items()}
        result["images_per_s"][batch] = best
        result["images_per_s_median"][batch] = {k: batch / statistics.median(t) for k, t in times.items()}
        result["onnxruntime_vs_fused"][batch] = best["onnxruntime"] / best["fused"]
        result["onnxruntime_vs_eager"][batch] = best["onnxruntime"] / best["eager"]
    return result


def heatmap_difference(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per face: the largest |difference| of two heatmap batches (B, K, h, w) over the face's peak value."""
    peak = np.abs(reference).reshape(len(reference), -1).max(axis=1)
    return np.abs(reference - other).reshape(len(reference), -1).max(axis=1) / np.maximum(peak, 1e-12)
