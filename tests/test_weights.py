"""load_weights on every supported layout, the mmpose conversion, and every strict-mode error."""

from __future__ import annotations

import collections
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from hrnet_lib.model.hrnet import build_model
from hrnet_lib.model.weights import (
    LoadReport,
    NonFiniteWeightsError,
    UnsafeCheckpointError,
    WeightsMismatchError,
    load_weights,
    read_checkpoint,
    to_mmpose_state_dict,
)

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics (every tensor differs from a fresh model's)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(seed + 1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 4:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1 + (1.0 if name.endswith(".weight") else 0.0))
    return model.eval()


@pytest.fixture(scope="module")
def source() -> nn.Module:
    return randomize_(build_model(), seed=3)


@pytest.fixture(scope="module")
def reference_output(source: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return source(X)


def fresh_output_after(
    weights, strict: bool = True, trust: bool = False, **kwargs
) -> tuple[torch.Tensor, LoadReport]:
    model = build_model(**kwargs)
    report = load_weights(model, weights, strict=strict, trust=trust)
    with torch.no_grad():
        return model.eval()(X), report


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_own_state_dict_round_trip(source, reference_output):
    out, report = fresh_output_after(source.state_dict())
    assert torch.equal(out, reference_output)
    assert report.layout == "own"
    assert report.loaded == len(source.state_dict())
    assert report.missing == report.ignored == report.unexpected == report.mismatched == []


def test_project_checkpoint_file_with_ddp_prefix(source, reference_output, tmp_path):
    ckpt = {
        "model": {"module." + k: v for k, v in source.state_dict().items()},
        "epoch": 3,
        "config": {"lr": 2e-3},
    }
    path = tmp_path / "last.pt"
    torch.save(ckpt, path)
    out, report = fresh_output_after(path)
    assert torch.equal(out, reference_output)
    assert report.layout == "own"
    assert str(path) in str(report) and "project checkpoint" in str(report)
    assert not any("weights_only=False" in n for n in report.notes)  # plain dicts load safely


def test_mmpose_1x_layout(source, reference_output):
    sd1 = to_mmpose_state_dict(source.state_dict(), version=1)
    assert all(
        k.startswith(("backbone.", "head.conv_layers.0.", "head.conv_layers.1.", "head.final_layer."))
        for k in sd1
    )
    assert sd1["head.conv_layers.0.weight"].shape == (270, 270, 1, 1)
    assert sd1["head.final_layer.weight"].shape == (98, 270, 1, 1)
    assert "backbone.stage2.0.fuse_layers.0.1.0.weight" in sd1
    out, report = fresh_output_after({"state_dict": sd1, "meta": {"epoch": 60}})
    assert torch.equal(out, reference_output)
    assert report.layout == "mmpose 1.x"
    assert report.loaded == len(sd1)


def hand_made_mmpose0(sd1: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmpose 0.x keys from 1.x keys, by the two models' module names: TopdownHeatmapSimpleHead's
    final_layer = Sequential(conv, BN, ReLU, conv) vs HeatmapHead's conv_layers + final_layer."""
    rename = {
        "head.conv_layers.0": "keypoint_head.final_layer.0",
        "head.conv_layers.1": "keypoint_head.final_layer.1",
        "head.final_layer": "keypoint_head.final_layer.3",
    }
    out = {}
    for k, v in sd1.items():
        module, _, leaf = k.rpartition(".")
        out[rename.get(module, module) + "." + leaf] = v
    return out


def test_mmpose_0x_checkpoint_file_made_from_1x_layout(source, reference_output, tmp_path):
    sd0 = hand_made_mmpose0(to_mmpose_state_dict(source.state_dict(), version=1))
    assert sd0.keys() == to_mmpose_state_dict(source.state_dict(), version="0.x").keys()
    assert "keypoint_head.final_layer.3.bias" in sd0
    # mmpose's meta holds objects of classes from packages not installed here (mmcv's Config):
    fake = types.ModuleType("fake_mmcv_for_test")

    class Config:
        def __init__(self, text: str):
            self.text = text

    Config.__module__, Config.__qualname__ = "fake_mmcv_for_test", "Config"
    fake.Config = Config
    sys.modules["fake_mmcv_for_test"] = fake
    path = tmp_path / "hrnetv2_w18_wflw_256x256-test.pth"
    try:
        torch.save({"state_dict": sd0, "meta": {"config": Config("model = dict(...)"), "epoch": 60}}, path)
    finally:
        del sys.modules["fake_mmcv_for_test"]
    # Only full unpickling rebuilds such objects, and it runs whatever code a file names: refused by default,
    # naming the type and the opt-in; read when the caller trusts the file.
    with pytest.raises(UnsafeCheckpointError, match="fake_mmcv_for_test.Config.*--trust-checkpoint"):
        load_weights(build_model(), path)
    out, report = fresh_output_after(path, trust=True)
    assert torch.equal(out, reference_output)
    assert report.layout == "mmpose 0.x"
    assert report.loaded == len(sd0)
    text = str(report)
    assert "weights_only=False" in text and "placeholders" in text


def test_mmpose_checkpoint_with_plain_metadata_loads_safely(source, reference_output, tmp_path):
    """What mmcv's save_checkpoint writes around the weights (an OrderedDict state dict; a meta of strings,
    ints, the config as text and numpy scalars such as a best score) loads with weights_only, no opt-in,
    in numpy 2's pickled names and numpy 1's (numpy.core)."""
    sd0 = collections.OrderedDict(to_mmpose_state_dict(source.state_dict(), version=0))
    meta = {
        "mmpose_version": "0.10.0",
        "config": "model = dict(type='TopDown')",
        "epoch": 60,
        "iter": 900,
        "time": "Mon Jan 25 12:00:00 2021",
        "hook_msgs": {"best_score": np.float64(4.06), "last_ckpt": "epoch_60.pth"},
        "seed": np.int64(0),
        "mean": np.array([123.675, 116.28, 103.53], dtype=np.float32),
    }
    path = tmp_path / "mmpose.pth"
    torch.save({"state_dict": sd0, "meta": meta}, path)
    # The same in torch's legacy format (protocol 2 names globals as text) as numpy 1 names them.
    numpy1 = tmp_path / "mmpose-numpy1.pth"
    torch.save({"state_dict": sd0, "meta": meta}, numpy1, _use_new_zipfile_serialization=False)
    data = numpy1.read_bytes()
    assert data.count(b"cnumpy._core.multiarray\n") == 2  # scalar and _reconstruct
    numpy1.write_bytes(data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    for file in (path, numpy1):
        obj, notes = read_checkpoint(file)
        assert notes == [] and obj["meta"]["hook_msgs"]["best_score"] == np.float64(4.06)
        out, report = fresh_output_after(file)
        assert torch.equal(out, reference_output) and report.layout == "mmpose 0.x"


def test_a_pickle_that_runs_code_is_refused_unless_trusted(tmp_path):
    """A checkpoint whose pickle calls a function when loaded (here Path.touch on a marker file; a hostile
    one would call os.system) runs nothing: it is refused, naming what it holds and the opt-in."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"model": RunsCode(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as refused:
        load_weights(build_model(), path)
    assert not marker.exists()
    message = str(refused.value)
    assert str(path) in message and "getattr" in message and "--trust-checkpoint" in message
    assert "weights_only=False" not in message  # no advice to load it unsafely
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(path)
    assert not marker.exists()
    read_checkpoint(path, trust=True)  # what the opt-in means: the file's code runs
    assert marker.exists()


class RunsCode:
    """Pickles as a call of Path.touch on `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_non_finite_weights_are_refused_naming_the_first_bad_tensor(source, tmp_path):
    sd = {k: v.clone() for k, v in source.state_dict().items()}
    sd["conv1.weight"][0, 0, 0, 0] = float("nan")
    sd["head.3.bias"][:2] = float("inf")
    with pytest.raises(
        NonFiniteWeightsError, match=r"a state dict in memory: conv1.weight holds 1 NaN of 1728"
    ):
        load_weights(build_model(), sd)
    path = tmp_path / "best.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(NonFiniteWeightsError, match=f"{path}: conv1.weight holds 1 NaN"):
        load_weights(build_model(), path, strict=False)
    sd["conv1.weight"][0, 0, 0, 0] = 0.0
    with pytest.raises(NonFiniteWeightsError, match="head.3.bias holds 2 infinite of 98 values"):
        load_weights(build_model(), sd)


def test_imagenet_classifier_weights_load_into_backbone():
    timm_model = randomize_(timm.create_model("hrnet_w18", pretrained=False), seed=5)
    timm_sd = timm_model.state_dict()
    model = build_model(upsample="nearest")
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    report = load_weights(model, timm_sd)
    ours = model.state_dict()
    assert report.layout == "imagenet"
    expected_ignored = sorted(k for k in timm_sd if k not in ours)
    assert sorted(report.ignored) == expected_ignored
    assert {k.split(".")[0] for k in report.ignored} == {
        "incre_modules",
        "downsamp_modules",
        "final_layer",
        "classifier",
    }
    assert sorted(report.missing) == sorted(head_before)
    assert report.loaded == len(timm_sd) - len(expected_ignored) == len(ours) - len(head_before)
    for k, v in ours.items():
        expected = head_before[k] if k.startswith("head.") else timm_sd[k]
        assert torch.equal(v, expected), k
    text = str(report)
    assert "incre_modules" in text and "classifier" in text and "kept at initialisation: head" in text


def test_mmpose_checkpoint_without_num_batches_tracked(source, reference_output):
    sd = {
        k: v
        for k, v in to_mmpose_state_dict(source.state_dict(), 0).items()
        if "num_batches_tracked" not in k
    }
    out, report = fresh_output_after({"state_dict": sd, "meta": {}})
    assert torch.equal(out, reference_output)
    assert report.missing == []
    assert any("num_batches_tracked" in n for n in report.notes)


def test_strict_error_lists_missing_unexpected_and_mismatched_together(source):
    sd = dict(source.state_dict())
    del sd["stage3.1.branches.2.3.conv2.weight"]
    del sd["transition1.0.1.running_mean"]
    sd["stage5.0.conv.weight"] = torch.zeros(3)
    target = build_model(num_keypoints=68)  # head.3 has 68 outputs, the weights 98
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as info:
        load_weights(target, sd)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert sorted(err.missing) == ["stage3.1.branches.2.3.conv2.weight", "transition1.0.1.running_mean"]
    assert err.unexpected == ["stage5.0.conv.weight"]
    assert sorted(k for k, _, _ in err.mismatched) == ["head.3.bias", "head.3.weight"]
    message = str(err)
    for key in ("stage3.1.branches.2.3.conv2.weight", "transition1.0.1.running_mean", "stage5.0.conv.weight"):
        assert key in message
    assert "head.3.weight: (98, 270, 1, 1) vs (68, 270, 1, 1)" in message
    assert "layout: own" in message
    # nothing was loaded
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("problem", ["missing", "unexpected", "mismatched"])
def test_each_strict_error_alone_and_non_strict_loading(source, problem):
    sd = to_mmpose_state_dict(source.state_dict(), 1)
    key = "backbone.layer1.0.conv1.weight"
    if problem == "missing":
        del sd[key]
    elif problem == "unexpected":
        sd["backbone.extra.weight"] = torch.zeros(1)
    else:
        sd[key] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(WeightsMismatchError, match="mmpose 1.x") as info:
        load_weights(build_model(), sd)
    found = {
        "missing": info.value.missing,
        "unexpected": info.value.unexpected,
        "mismatched": [k for k, _, _ in info.value.mismatched],
    }
    expected = "extra.weight" if problem == "unexpected" else "layer1.0.conv1.weight"
    assert found == {name: [expected] if name == problem else [] for name in found}
    model = build_model()
    init = model.state_dict()["layer1.0.conv1.weight"].clone()
    report = load_weights(model, sd, strict=False)
    own = model.state_dict()
    assert torch.equal(
        own["stage4.2.fuse_layers.3.0.2.0.weight"], source.state_dict()["stage4.2.fuse_layers.3.0.2.0.weight"]
    )
    if problem == "unexpected":
        assert report.unexpected == ["extra.weight"]
        assert torch.equal(own["layer1.0.conv1.weight"], source.state_dict()["layer1.0.conv1.weight"])
    else:
        assert torch.equal(own["layer1.0.conv1.weight"], init)
        assert (report.missing if problem == "missing" else report.mismatched)[0].startswith(
            "layer1.0.conv1.weight"
        )


def test_backbone_only_weights_keep_the_head(source):
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    model = build_model()
    report = load_weights(model, backbone)
    assert report.layout == "backbone"
    assert report.missing and all(k.startswith("head.") for k in report.missing)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights(build_model(), tmp_path / "nope.pth")
    with pytest.raises(TypeError, match="state_dict"):
        load_weights(build_model(), {"epoch": 3, "optimizer": {}})
    with pytest.raises(ValueError, match="version"):
        to_mmpose_state_dict({}, version=2)
    # Files that are no checkpoint at all: a web page, and a real checkpoint cut short.
    page = tmp_path / "page.pth"
    page.write_text("<html>quota exceeded</html>")
    whole = tmp_path / "whole.pth"
    torch.save(build_model("hrnetv2_w18_small_v2").state_dict(), whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    junk = tmp_path / "junk.pth"
    junk.write_text("junk\n")  # read as a pickle: an unknown opcode (KeyError inside torch.load)
    noise = []  # random bytes whose unpickling once ended in IndexError or MemoryError tracebacks
    for seed in (17, 21, 50):
        noise.append(tmp_path / f"noise{seed}.pth")
        noise[-1].write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for path in (page, cut, junk, *noise):
        with pytest.raises(ValueError, match=f"{path.name}: not a readable PyTorch checkpoint") as error:
            load_weights(build_model(), path)
        assert "weights_only" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="is a folder, not a weights file"):
        load_weights(build_model(), tmp_path)


def test_wrapped_models_and_mmpose_prefixed_imagenet_weights(source, reference_output):
    """DataParallel / torch.compile wrappers are unwrapped; ImageNet weights under mmpose's
    ``backbone.`` prefix (how mmpose configs reference them) are recognised as such."""
    inner = build_model()
    report = load_weights(torch.compile(nn.DataParallel(inner)), source.state_dict())
    assert report.loaded == len(source.state_dict())
    with torch.no_grad():
        assert torch.equal(inner.eval()(X), reference_output)
    backbone = {"backbone." + k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    backbone["backbone.classifier.weight"] = torch.zeros(1000, 2048)
    model = build_model()
    report = load_weights(model, backbone)
    assert report.layout == "imagenet"
    assert report.ignored == ["backbone.classifier.weight"]
    assert torch.equal(
        model.stage4[2].fuse_layers[0][3][0].weight, source.stage4[2].fuse_layers[0][3][0].weight
    )
