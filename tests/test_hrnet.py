"""HRNetV2 architecture: size, names, shapes, initialisation, and agreement with timm's hrnet_w18."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from hrnet_lib.model.hrnet import CONFIGS, HighResolutionModule, build_model

CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
TIMM_NAMES = {
    "hrnetv2_w18": "hrnet_w18",
    "hrnetv2_w32": "hrnet_w32",
    "hrnetv2_w48": "hrnet_w48",
    "hrnetv2_w18_small_v2": "hrnet_w18_small_v2",
}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights, and BN statistics measured on random images (one train-mode pass, as
    BN calibration does) so that activations stay of order 1; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for m in bns:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.momentum = None
        model.train()(torch.randn(2, 3, 64, 64, generator=g))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def test_w18_has_exactly_the_published_parameter_count():
    model = build_model("hrnetv2_w18", num_keypoints=98)
    assert sum(p.numel() for p in model.parameters()) == 9_662_528


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_backbone_names_and_shapes_equal_timm(name):
    with torch.device("meta"):  # names and shapes only: skip allocating and initialising the weights
        ours = {k: v.shape for k, v in build_model(name).state_dict().items()}
        theirs = {
            k: v.shape for k, v in timm.create_model(TIMM_NAMES[name], pretrained=False).state_dict().items()
        }
    backbone = {k: s for k, s in theirs.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    assert {k: s for k, s in ours.items() if not k.startswith("head.")} == backbone
    # some official names spelled out (issue / contract)
    assert "stage2.0.branches.0.0.conv1.weight" in ours and "stage2.0.fuse_layers.0.1.0.weight" in ours


def test_head_is_the_official_facial_landmark_layout():
    model = build_model("hrnetv2_w18", num_keypoints=68)
    head = model.head
    assert isinstance(head, nn.Sequential) and len(head) == 4
    assert (head[0].in_channels, head[0].out_channels, head[0].kernel_size) == (270, 270, (1, 1))
    assert isinstance(head[1], nn.BatchNorm2d) and head[1].num_features == 270
    assert isinstance(head[2], nn.ReLU)
    assert (head[3].in_channels, head[3].out_channels, head[3].kernel_size) == (270, 68, (1, 1))


def test_output_shape_at_256():
    model = build_model().eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 256, 256)).shape == (1, 98, 64, 64)


@pytest.mark.parametrize(
    ("name", "size"), [(name, 64) for name in sorted(CONFIGS)] + [("hrnetv2_w18", 128), ("hrnetv2_w18", 96)]
)
def test_shapes_at_smaller_inputs(name, size):
    model = build_model(name, num_keypoints=5).train()  # eval mode on fresh weights hits slow denormals
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    width = CONFIGS[name].stage2.channels[0]
    assert [tuple(f.shape) for f in feats] == [
        (2, width * 2**i, size // 2 ** (i + 2), size // 2 ** (i + 2)) for i in range(4)
    ]
    assert out.shape == (2, 5, size // 4, size // 4)


def test_input_size_not_multiple_of_32_is_a_clear_error():
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model()(torch.zeros(1, 3, 100, 96))


def test_unknown_name_and_mode_are_clear_errors():
    with pytest.raises(ValueError, match="hrnetv2_w18"):
        build_model("hrnet_w99")
    with pytest.raises(ValueError, match="bilinear"):
        build_model(upsample="bicubic")


def test_channels_last_input_gives_the_same_output():
    model = randomize_(build_model())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = model(x.contiguous(memory_format=torch.channels_last))
        out_cl_model = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)
        )
    scale = ref.abs().max().item()
    assert scale > 0.1
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(out_cl_model, ref, rtol=0, atol=1e-4 * scale)


def test_initialisation_statistics():
    model = build_model()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 307 and len(bns) == 306
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert abs(weights.mean().item()) < 2e-6
    assert weights.std().item() == pytest.approx(0.001, rel=0.01)
    big = max(convs, key=lambda c: c.weight.numel())
    assert big.weight.std().item() == pytest.approx(0.001, rel=0.02)
    assert all(torch.all(c.bias == 0) for c in convs if c.bias is not None)
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)


def test_four_branch_outputs_equal_timm_hrnet_w18_with_nearest_fusion():
    ours = randomize_(build_model("hrnetv2_w18", upsample="nearest"), seed=1)
    theirs = timm.create_model(
        "hrnet_w18", pretrained=False, features_only=True, feature_location="", out_indices=(1, 2, 3, 4)
    ).eval()
    theirs.load_state_dict(
        {k: v for k, v in ours.state_dict().items() if not k.startswith("head.")}, strict=True
    )
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = ours.forward_features(x), theirs(x)
    assert len(a) == len(b) == 4
    for fa, fb in zip(a, b, strict=True):
        assert fa.shape == fb.shape
        assert fb.abs().max() > 0.1  # non-trivial activations
        torch.testing.assert_close(fa, fb, rtol=1e-5, atol=1e-5 * fb.abs().max().item())
    # the bilinear fusion of the WFLW recipe is a different network function on the same weights
    bilinear = build_model("hrnetv2_w18", upsample="bilinear").eval()
    bilinear.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert not torch.allclose(bilinear.forward_features(x)[0], a[0], atol=1e-3)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_fuse_upsampling_matches_hand_computed_values(mode):
    """Upsampling x2 of f(y, x) = 2y + x on a 2x2 grid. Bilinear with align_corners=False samples at
    source coordinates (i + 0.5) / 2 - 0.5 clamped to [0, 1] = 0, .25, .75, 1, where the linear f is
    reproduced exactly; nearest repeats each pixel."""
    module = HighResolutionModule._make_fuse_layers([4, 4], mode)
    upsample = module[0][1][2]
    grid = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    coords = (
        torch.tensor([0.0, 0.25, 0.75, 1.0]) if mode == "bilinear" else torch.tensor([0.0, 0.0, 1.0, 1.0])
    )
    expected = 2 * coords.view(4, 1) + coords.view(1, 4)
    torch.testing.assert_close(upsample(grid)[0, 0], expected)


def test_hrnetv2_representation_is_every_branch_upsampled_bilinearly_and_concatenated_in_order():
    """Branch i (1..3) carries 100 i + its column index, a ramp that bilinear upsampling (align_corners
    False) reproduces exactly at source column (X + 0.5) / factor - 0.5, clamped to the map; nearest
    would give steps, and a wrong order or offset would put the hundreds in the wrong channels."""
    model = build_model("hrnetv2_w18")
    high = 16
    xs = [torch.full((1, 18, high, high), -1.0)]
    for i, channels in enumerate((36, 72, 144), start=1):
        side = high >> i
        ramp = 100.0 * i + torch.arange(side, dtype=torch.float32)
        xs.append(ramp.expand(1, channels, side, side).clone())
    out = model.concat_branches(xs)
    assert out.shape == (1, 270, high, high)
    assert torch.equal(out[:, :18], xs[0])
    start = 18
    for i, channels in enumerate((36, 72, 144), start=1):
        side = high >> i
        source = ((torch.arange(high) + 0.5) * side / high - 0.5).clamp(0, side - 1)
        expected = (100.0 * i + source).expand(1, channels, high, high)
        torch.testing.assert_close(out[:, start : start + channels], expected)
        start += channels


def test_all_parameters_receive_gradients():
    """No unused parameters (DDP would need find_unused_parameters otherwise)."""
    model = build_model("hrnetv2_w18_small_v2", num_keypoints=3).train()
    model(torch.randn(2, 3, 64, 64)).square().sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
