"""Inference copy (conv+BN fusion, channels_last, precision), model summary, FLOPs and BN calibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hrnet_lib.model.hrnet import build_model
from hrnet_lib.model.inference import (
    STAGES,
    calibrate_batchnorm,
    forward_flops,
    fuse_conv_bn,
    fuse_plan,
    model_summary,
    optimize_for_inference,
    trace_shapes,
)


def randomized(name: str = "hrnetv2_w18", seed: int = 0) -> nn.Module:
    """Random conv weights and random BN affine parameters and running statistics, eval mode."""
    g = torch.Generator().manual_seed(seed)
    model = build_model(name)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.25)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.5)
    return model.eval()


def max_relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("name", ["hrnetv2_w18", "hrnetv2_w18_small_v2"])
def test_optimized_copy_equals_plain_model(name):
    model = randomized(name)
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(1))
    fast = optimize_for_inference(model, precision="fp32")
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert ref.abs().max() > 0.1
    assert out.shape == ref.shape and out.is_contiguous()
    assert max_relative_error(out, ref) < 1e-4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert fast.channels_last and not fast.compiled  # CPU: no compile by default


def conv_dtypes(module: nn.Module) -> set[torch.dtype]:
    """Hooks recording the output dtype of every convolution of `module`, and the set they fill."""
    seen: set[torch.dtype] = set()
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


def test_bf16_copy_computes_in_bf16_and_returns_fp32_heatmaps_close_to_the_model():
    model = randomized("hrnetv2_w18_small_v2")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    fast = optimize_for_inference(model, precision="bf16")
    seen = conv_dtypes(fast)
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert fast.precision == "bf16" and seen == {torch.bfloat16}
    assert out.dtype == torch.float32 and out.is_contiguous()
    # bf16 keeps 8 bits of mantissa: about 0.4% per rounding, a few percent after many layers at most
    assert 1e-4 < max_relative_error(out, ref) < 0.05


def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch):
    """A CPU without bf16 instructions keeps the fp32 copy it always had; one with them gets bf16."""
    from hrnet_lib import device

    model = randomized("hrnetv2_w18_small_v2")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for capabilities, precision in (({"avx512_f": True}, "fp32"), ({"avx512_bf16": True}, "bf16")):
        monkeypatch.setattr(device, "cpu_capabilities", lambda c=capabilities: c)
        fast = optimize_for_inference(model)
        seen = conv_dtypes(fast)
        with torch.no_grad():
            fast(x)
        assert fast.precision == precision
        assert seen == {torch.float32 if precision == "fp32" else torch.bfloat16}


def test_fusion_folds_every_batchnorm_and_leaves_the_original_alone():
    model = randomized()
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = optimize_for_inference(model)
    assert not copy.training
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bns == 306
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    fresh = randomized()
    assert fuse_conv_bn(fresh) == 306
    assert all(p.requires_grad is False for p in copy.parameters())


def test_fusion_of_a_single_pair_is_exact_affine_algebra():
    """conv(x) then BN = conv with weight * g/sqrt(v+eps) and bias (b - m) * g/sqrt(v+eps) + beta."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)).eval()
    bn = seq[1]
    bn.weight.data, bn.bias.data = torch.rand(4) + 0.5, torch.randn(4)
    bn.running_mean, bn.running_var = torch.randn(4), torch.rand(4) + 0.5
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = seq[0].weight * factor.view(4, 1, 1, 1)
    b = bn.bias - bn.running_mean * factor
    assert fuse_conv_bn(seq) == 1
    assert isinstance(seq[1], nn.Identity)
    torch.testing.assert_close(seq[0].weight, w)
    torch.testing.assert_close(seq[0].bias, b)


def test_fusion_needs_eval_mode():
    with pytest.raises(ValueError, match="eval"):
        fuse_conv_bn(build_model().train())


def hand_counted_macs(model: nn.Module, size: int) -> int:
    """Multiply-adds of all convolutions: output elements x (in_channels / groups) x kernel area."""
    total = 0

    def hook(m: nn.Conv2d, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total


def test_model_summary_w18_at_256():
    model = build_model()
    summary = model_summary(model, input_size=256)
    assert model.training  # mode restored
    params, flops, gmacs = summary["params"], summary["flops"], summary["gmacs"]
    assert params["total"] == 9_662_528 == sum(params[s] for s in STAGES)
    assert params["head"] == 270 * 270 + 270 + 2 * 270 + 270 * 98 + 98
    assert params["stem"] == 3 * 64 * 9 + 64 * 64 * 9 + 4 * 64
    macs = hand_counted_macs(model, 256)
    assert flops["total"] == 2 * macs
    assert flops["other"] == 0 and sum(flops[s] for s in STAGES) == flops["total"]
    assert gmacs["total"] == pytest.approx(macs / 1e9)
    assert 4.3 < gmacs["total"] < 4.8  # published range for W18 at 256x256
    assert gmacs["head"] == pytest.approx((270 * 270 + 270 * 98) * 64 * 64 / 1e9)
    assert summary["output_shape"] == (98, 64, 64)
    assert summary["shapes"]["stem"] == [(64, 64, 64)]
    assert summary["shapes"]["stage1"] == [(256, 64, 64)]
    assert summary["shapes"]["stage4"] == [(18, 64, 64), (36, 32, 32), (72, 16, 16), (144, 8, 8)]
    assert summary["shapes"]["concat"] == [(270, 64, 64)]


@pytest.mark.parametrize(("name", "size"), [("hrnetv2_w18", 256), ("hrnetv2_w18_small_v2", 96)])
def test_forward_flops_counted_without_weights_equal_the_real_model(name: str, size: int):
    assert forward_flops(name, size) == 2 * hand_counted_macs(build_model(name), size)


def test_model_summary_scales_with_input_size():
    model = build_model("hrnetv2_w18_small_v2")
    small = model_summary(model, input_size=64)
    assert small["flops"]["total"] == 2 * hand_counted_macs(model, 64)
    assert small["shapes"]["stage3"] == [(18, 16, 16), (36, 8, 8), (72, 4, 4)]
    assert small["params"] == model_summary(model, input_size=96)["params"]


def test_calibrate_batchnorm_sets_statistics_of_the_images():
    model = build_model("hrnetv2_w18_small_v2")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    calibrate_batchnorm(model, images)
    assert not model.training
    with torch.no_grad():
        first = model.conv1(images)
    torch.testing.assert_close(model.bn1.running_mean, first.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(model.bn1.running_var, first.var(dim=(0, 2, 3), unbiased=True))
    assert model.bn1.momentum == 0.1


def test_trace_shapes_follows_one_image_through_w18_in_order() -> None:
    """Hand-computed from the architecture: stride-2 stem twice, 256 bottleneck channels, transitions
    adding a half-resolution branch, 270 concatenated channels, 98 heatmaps at a quarter of the input."""
    model = build_model("hrnetv2_w18")
    branches = [(18, 32, 32), (36, 16, 16), (72, 8, 8), (144, 4, 4)]
    expected = [
        ("input", [(3, 128, 128)]),
        ("conv1", [(64, 64, 64)]),
        ("conv2", [(64, 32, 32)]),
        ("layer1", [(256, 32, 32)]),
        ("transition1", branches[:2]),
        ("stage2", branches[:2]),
        ("transition2", branches[:3]),
        ("stage3", branches[:3]),
        ("transition3", branches),
        ("stage4", branches),
        ("concat", [(270, 32, 32)]),
        ("head", [(98, 32, 32)]),
    ]
    assert trace_shapes(model, 128) == expected
    assert model.training  # the model's mode is restored


def test_fuse_plan_reads_each_path_of_a_four_branch_module() -> None:
    model = build_model("hrnetv2_w18")
    plan = fuse_plan(model.stage4[0])
    widths = (18, 36, 72, 144)
    for i in range(4):
        for j in range(4):
            path = plan[i][j]
            kind = "identity" if i == j else ("upsample" if j > i else "strided")
            convs = 0 if i == j else (1 if j > i else i - j)
            assert path == {
                "kind": kind,
                "factor": 2 ** abs(i - j),
                "convs": convs,
                "channels": (widths[j], widths[i]),
            }
    assert len(fuse_plan(model.stage2[0])) == 2
