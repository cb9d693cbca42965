"""HRNetV2 face-landmark detection on WFLW.

The public API is re-exported here and imported lazily, so `import hrnet_lib` stays fast and a
command that only reads data never pays for importing the model code.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Landmarker": "hrnet_lib.evaluate.landmarker",
    "FaceLandmarks": "hrnet_lib.evaluate.landmarker",
    "build_model": "hrnet_lib.model.hrnet",
    "load_weights": "hrnet_lib.model.weights",
    "optimize_for_inference": "hrnet_lib.model.inference",
    "warp_matrix": "hrnet_lib.data.transforms",
    "decode_heatmaps": "hrnet_lib.evaluate.decode",
    "predict_heatmaps": "hrnet_lib.evaluate.decode",
    "nme": "hrnet_lib.evaluate.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hrnet_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
