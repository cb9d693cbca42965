"""Load HRNet weights from the layouts they are published in, and convert ours to mmpose's.

Layouts (detected from the keys; the backbone names are the official release's everywhere):
- "own": this package's state dict (also the official HRNet facial-landmark release): backbone at the
  top level, heatmap head as ``head.{0,1,3}``. Project checkpoints are dicts with a "model" entry.
- "mmpose 0.x": ``backbone.*`` and ``keypoint_head.final_layer.{0,1,3}.*`` (conv, BN, conv), inside a
  checkpoint dict with "state_dict" and "meta" (e.g. hrnetv2_w18_wflw_256x256-2bf032a6_20210125.pth).
- "mmpose 1.x": ``backbone.*``, ``head.conv_layers.{0,1}.*`` and ``head.final_layer.*``.
- "imagenet": the official / timm ``hrnet_w18`` classifier; its classification head (incre_modules,
  downsamp_modules, final_layer, classifier) is ignored, our heatmap head keeps its initialisation.
- "backbone": backbone keys only (e.g. timm features_only, or mmpose ``backbone.*`` only): head kept.
DDP ("module.") and torch.compile ("_orig_mod.") prefixes are removed first, and a DDP / compiled
model is unwrapped before loading. Files are unpickled with weights_only=True (tensors, plain values and
numpy data: nothing in a file can run code) unless the caller trusts the file; NaN or infinite weights
are refused.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

IMAGENET_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
_MMPOSE0_HEAD = {"keypoint_head.final_layer.0.": "head.0.", "keypoint_head.final_layer.1.": "head.1.",
                 "keypoint_head.final_layer.3.": "head.3."}  # fmt: skip
_MMPOSE1_HEAD = {
    "head.conv_layers.0.": "head.0.",
    "head.conv_layers.1.": "head.1.",
    "head.final_layer.": "head.3.",
}
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_LIST_LIMIT = 30
TRUST_FLAG = "--trust-checkpoint"
TRUST_HELP = (
    "read a checkpoint that holds more than tensors and plain data by full unpickling, which runs any code "
    "the file names: only for files you trust"
)


class WeightsMismatchError(RuntimeError):
    """Strict loading failed: lists every missing key, unexpected key and shape mismatch at once."""

    def __init__(
        self,
        source: str,
        layout: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ):
        self.source, self.layout = source, layout
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [f"cannot load weights from {source} (detected layout: {layout}) strictly:"]
        lines += _listing(f"{len(missing)} missing key(s) (in the model, not in the weights)", missing)
        lines += _listing(
            f"{len(unexpected)} unexpected key(s) (in the weights, not in the model)", unexpected
        )
        lines += _listing(
            f"{len(mismatched)} shape mismatch(es) (weights vs model)",
            [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in mismatched],
        )
        lines.append("pass strict=False to load the matching tensors and keep the rest at initialisation")
        super().__init__("\n".join(lines))


def _listing(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    shown = [f"    {k}" for k in items[:_LIST_LIMIT]]
    if len(items) > _LIST_LIMIT:
        shown.append(f"    ... and {len(items) - _LIST_LIMIT} more")
    return [f"  {title}:", *shown]


def _group(keys: list[str]) -> str:
    """'incre_modules (120), classifier (2)': top-level module names with key counts."""
    counts: dict[str, int] = {}
    for k in keys:
        top = k.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    return ", ".join(f"{name} ({n})" for name, n in counts.items())


@dataclass
class LoadReport:
    """What load_weights did: the layout it detected, how many tensors it loaded and what it left."""

    source: str
    layout: str
    loaded: int
    ignored: list[str] = field(default_factory=list)  # in the weights, deliberately not used
    missing: list[str] = field(default_factory=list)  # in the model, kept at initialisation
    unexpected: list[str] = field(default_factory=list)  # strict=False only: not in the model
    mismatched: list[str] = field(default_factory=list)  # strict=False only: shape differs, kept at init
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"weights from {self.source} (layout: {self.layout}): loaded {self.loaded} tensors"]
        if self.ignored:
            lines.append(f"  ignored {len(self.ignored)} keys not used by this model: {_group(self.ignored)}")
        if self.missing:
            lines.append(
                f"  missing {len(self.missing)} keys, kept at initialisation: {_group(self.missing)}"
            )
        if self.unexpected:
            lines.append(f"  unexpected {len(self.unexpected)} keys, not loaded: {_group(self.unexpected)}")
        if self.mismatched:
            lines.append(
                f"  {len(self.mismatched)} shape mismatches, kept at initialisation: {self.mismatched}"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class Placeholder(dict):
    """Stands in for an object of a class that is not installed here; accepts and drops its state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _PlaceholderUnpickler(pickle.Unpickler):
    """Unpickler that replaces classes from packages not installed here (mmcv, mmengine) by
    placeholders, so a trusted checkpoint's metadata never blocks reading its tensors."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (Placeholder,), {"__module__": module})


class _PlaceholderPickle:
    Unpickler = _PlaceholderUnpickler
    load = staticmethod(lambda f, **kw: _PlaceholderUnpickler(f, **kw).load())


class UnsafeCheckpointError(ValueError):
    """A checkpoint holding objects that only full unpickling rebuilds, which can run any code the file
    names; refused unless the caller trusts the file. `types` are the offending globals, by name."""

    def __init__(self, path: Path, types: list[str]) -> None:
        self.path, self.types = path, types
        super().__init__(
            f"{path}: refused: it holds objects of {', '.join(types)}, which only full unpickling can "
            "rebuild, and unpickling runs whatever code the file names; if you trust the file, pass "
            f"{TRUST_FLAG} (trust=True in Python)"
        )


class NonFiniteWeightsError(ValueError):
    """Weights holding NaN or infinity (a diverged run, a damaged file): no prediction from them means
    anything, so they are refused, naming the first bad tensor."""


def _numpy_globals() -> list[Any]:
    """numpy scalars, arrays and dtypes, which mmcv and mmengine checkpoints keep in their metadata (a best
    score as numpy.float64). Rebuilding them calls no code of the file's choosing; under both module
    names, numpy 1's (numpy.core) and 2's (numpy._core)."""
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray
    found: list[Any] = [np.ndarray, np.dtype]
    found += sorted({type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDUS"} - {np.dtype}, key=str)
    for function in (multiarray.scalar, multiarray._reconstruct):
        found += [(function, f"numpy.{core}.multiarray.{function.__name__}") for core in ("core", "_core")]
    return found


def _global_name(item: Any) -> str:
    return item[1] if isinstance(item, tuple) else f"{item.__module__}.{item.__qualname__}"


def _reason(error: BaseException) -> str:
    """torch.load's error in one line, without its advice to load with weights_only=False."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    text = text.partition("WeightsUnpickler error:")[2] or text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].split(" Please use", 1)[0] if lines else ""
    return first if len(first) > 3 else f"{type(error).__name__} {first}".strip()


def _unsafe_globals(path: Path, error: BaseException) -> list[str]:
    """The globals a checkpoint names beyond torch's safe set and ours (all of them where torch can list
    them, else the one its error names)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # the legacy (non-zip) format, or a damaged archive: the error names the first one
        pattern = r"GLOBAL (\S+) was not an allowed global|but got <class '([^']+)'>"
        names = [a or b for a, b in re.findall(pattern, str(error))]
    allowed = {_global_name(item) for item in _numpy_globals()}
    return [name for name in dict.fromkeys(names) if name not in allowed]


def _unreadable(path: Path, error: BaseException) -> ValueError:
    return ValueError(f"{path}: not a readable PyTorch checkpoint ({_reason(error)})")


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[Any, list[str]]:
    """torch.load on CPU with weights_only=True: tensors, plain Python values and numpy data only, so a
    file cannot run code. One that needs other objects is an UnsafeCheckpointError naming them, unless
    `trust`, which unpickles it in full. A file that is no PyTorch checkpoint is a ValueError naming it."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a folder, not a weights file")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_globals(path, error)
        if not unsafe:
            raise _unreadable(path, error) from None
    except Exception as error:  # torch raises many types for damaged or foreign files
        raise _unreadable(path, error) from None
    if not trust:
        raise UnsafeCheckpointError(path, unsafe)
    note = f"{path.name} holds {', '.join(unsafe)}: read with weights_only=False, as {TRUST_FLAG} asked"
    try:
        return torch.load(path, map_location="cpu", weights_only=False), [note]
    except (ImportError, AttributeError) as missing:  # classes of packages not installed here (mmcv's)
        placeholders = f"classes from packages not installed here were replaced by placeholders ({missing})"
    except Exception as error:
        raise _unreadable(path, error) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PlaceholderPickle)
    except Exception as error:
        raise _unreadable(path, error) from None
    return obj, [note, placeholders]


def non_finite(tree: Any, prefix: str = "") -> str | None:
    """The first floating-point tensor holding NaN or infinity in nested dicts and lists, described by its
    dotted name and counts ("conv1.weight holds 1 NaN of 432 values"), or None when all are finite."""
    if isinstance(tree, Tensor):
        if not tree.is_floating_point() or bool(torch.isfinite(tree).all()):
            return None
        nan, inf = int(torch.isnan(tree).sum()), int(torch.isinf(tree).sum())
        counts = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "infinite")) if n)
        return f"{prefix or 'tensor'} holds {counts} of {tree.numel()} values"
    if isinstance(tree, Mapping):
        items: Any = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return None
    for key, value in items:
        found = non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None


def _extract_state_dict(obj: Any) -> tuple[dict[str, Tensor], str]:
    """The tensor dict inside a checkpoint, and what kind of container it came in."""
    if isinstance(obj, nn.Module):
        return obj.state_dict(), "module"
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict or checkpoint dict, got {type(obj).__name__}")
    for key, kind in (("state_dict", "mmpose checkpoint"), ("model", "project checkpoint")):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            return dict(inner), kind
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj), "state dict"
    raise TypeError(
        "no state dict found: expected a dict of tensors, or a checkpoint dict with a 'state_dict' (mmpose) "
        f"or 'model' (this project) entry; top-level keys are {sorted(map(str, obj))[:20]}"
    )


def _strip_wrappers(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if k.startswith(prefix):
                    k, changed = k[len(prefix) :], True
        out[k] = v
    return out


def _rename(key: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def to_own_layout(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str, list[str]]:
    """Rename any supported layout to ours: returns (state dict, layout name, ignored keys)."""
    sd = _strip_wrappers(dict(state_dict))
    keys = list(sd)
    if any(k.startswith("keypoint_head.") for k in keys):
        layout, table = "mmpose 0.x", {**_MMPOSE0_HEAD, "backbone.": ""}
    elif any(k.startswith(("head.conv_layers.", "head.final_layer.")) for k in keys):
        layout, table = "mmpose 1.x", {**_MMPOSE1_HEAD, "backbone.": ""}
    elif any(k.startswith("backbone.") for k in keys):
        layout, table = "mmpose backbone", {"backbone.": ""}  # becomes "backbone" or "imagenet" below
    else:
        layout, table = "own", {}
    out: dict[str, Tensor] = {}
    ignored: list[str] = []
    for k, v in sd.items():
        new = _rename(k, table)
        if new.startswith(IMAGENET_HEAD_PREFIXES):
            ignored.append(k)
        else:
            out[new] = v
    if ignored:
        layout = "imagenet"
    elif layout in ("own", "mmpose backbone") and not any(k.startswith("head.") for k in out):
        layout = "backbone"
    return out, layout, ignored


def to_mmpose_state_dict(state_dict: Mapping[str, Tensor], version: int | str = 1) -> dict[str, Tensor]:
    """Our state dict in mmpose's key layout: version 0 ("0.x", TopdownHeatmapSimpleHead) or 1 ("1.x",
    HeatmapHead). Wrap the result as {"state_dict": ..., "meta": {...}} for an mmpose checkpoint file."""
    major = str(version).split(".")[0]
    if major not in ("0", "1"):
        raise ValueError(f"mmpose version must be 0 or 1 (or '0.x' / '1.x'), got {version!r}")
    inverse = {new: old for old, new in (_MMPOSE0_HEAD if major == "0" else _MMPOSE1_HEAD).items()}
    out = {}
    for k, v in _strip_wrappers(dict(state_dict)).items():
        out[_rename(k, inverse) if k.startswith("head.") else "backbone." + k] = v
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def load_weights(
    model: nn.Module,
    path_or_state_dict: str | Path | Mapping[str, Any],
    strict: bool = True,
    trust: bool = False,
    source: str | None = None,
) -> LoadReport:
    """Load weights in any supported layout (see module docstring) into `model`.

    Strict (default): every model key must be present with the right shape and no weight may be left
    unused, except what the layout explains (ImageNet / backbone-only weights leave the head at its
    initialisation; the ImageNet classification head is ignored); otherwise one WeightsMismatchError
    lists all problems. strict=False loads the matching tensors and reports the rest. Weights holding NaN
    or infinity are a NonFiniteWeightsError; a file is read as `read_checkpoint(path, trust)` reads it.
    `source` names the weights in messages (default: the path, or "a state dict in memory").
    """
    notes: list[str] = []
    if isinstance(path_or_state_dict, (str, Path)):
        source = source or str(path_or_state_dict)
        obj, notes = read_checkpoint(path_or_state_dict, trust)
    else:
        source, obj = source or "a state dict in memory", path_or_state_dict
    raw, container = _extract_state_dict(obj)
    sd, layout, ignored = to_own_layout(raw)

    model = _unwrap(model)
    target = model.state_dict()
    head_optional = layout in ("imagenet", "backbone")
    missing, kept, benign = [], [], []
    for k in target:
        if k in sd:
            continue
        if head_optional and k.startswith("head."):
            kept.append(k)
        elif k.endswith("num_batches_tracked"):
            benign.append(k)  # absent from old checkpoints; not used in eval, left as it is
        else:
            missing.append(k)
    unexpected = [k for k in sd if k not in target]
    mismatched = [
        (k, tuple(v.shape), tuple(target[k].shape))
        for k, v in sd.items()
        if k in target and v.shape != target[k].shape
    ]
    if strict and (missing or unexpected or mismatched):
        raise WeightsMismatchError(f"{source} ({container})", layout, missing, unexpected, mismatched)

    bad = {k for k, _, _ in mismatched}
    usable = {k: v for k, v in sd.items() if k in target and k not in bad}
    broken = non_finite(usable)
    if broken:
        raise NonFiniteWeightsError(
            f"{source}: {broken}: these weights are broken (a diverged run, or a damaged file) and are "
            "not used"
        )
    model.load_state_dict(usable, strict=False)
    if benign:
        notes.append(f"{len(benign)} BN num_batches_tracked counters absent from the weights, left unchanged")
    if container != "state dict":
        notes.append(f"read from a {container}")
    return LoadReport(
        source=source,
        layout=layout,
        loaded=len(usable),
        ignored=ignored,
        missing=kept + missing,
        unexpected=unexpected,
        mismatched=[f"{k}: {a} vs {b}" for k, a, b in mismatched],
        notes=notes,
    )
