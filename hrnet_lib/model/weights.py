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
model is unwrapped before loading.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    placeholders, so a checkpoint's metadata never blocks reading its tensors."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (Placeholder,), {"__module__": module})


class _PlaceholderPickle:
    Unpickler = _PlaceholderUnpickler
    load = staticmethod(lambda f, **kw: _PlaceholderUnpickler(f, **kw).load())


def read_checkpoint(path: str | Path) -> tuple[Any, list[str]]:
    """torch.load on CPU: safe (weights_only) first; files whose metadata holds other objects (mmpose's
    "meta", mmengine's "message_hub") need full unpickling, which only trusted files should get.
    A file that is no PyTorch checkpoint at all (damaged, truncated, a web page) is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    # what torch.load raises for files that are no checkpoint (KeyError: a text file read as a pickle)
    unreadable = (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, ValueError)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError as safe_error:
        reason = str(safe_error).strip().splitlines()[0]
    except unreadable as error:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error})") from None
    note = (
        f"{path.name} holds non-tensor objects ({reason}); it was read with weights_only=False, "
        "which runs pickled code: only load files you trust"
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=False), [note]
    except unreadable as error:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error})") from None
    except (ImportError, AttributeError) as missing:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PlaceholderPickle)
        return obj, [
            note,
            f"classes from packages not installed here were replaced by placeholders ({missing})",
        ]


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
    model: nn.Module, path_or_state_dict: str | Path | Mapping[str, Any], strict: bool = True
) -> LoadReport:
    """Load weights in any supported layout (see module docstring) into `model`.

    Strict (default): every model key must be present with the right shape and no weight may be left
    unused, except what the layout explains (ImageNet / backbone-only weights leave the head at its
    initialisation; the ImageNet classification head is ignored); otherwise one WeightsMismatchError
    lists all problems. strict=False loads the matching tensors and reports the rest.
    """
    notes: list[str] = []
    if isinstance(path_or_state_dict, (str, Path)):
        source = str(path_or_state_dict)
        obj, notes = read_checkpoint(path_or_state_dict)
    else:
        source, obj = "a state dict in memory", path_or_state_dict
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
