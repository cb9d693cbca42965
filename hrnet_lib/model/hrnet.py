"""HRNetV2 for heatmap-based face-landmark detection (Wang et al., "Deep High-Resolution Representation
Learning for Visual Recognition", TPAMI 2020).

The network keeps a high-resolution branch through the whole depth and adds lower-resolution branches
stage by stage; after every module the branches exchange information (the multi-resolution fusion).
The HRNetV2 head upsamples all branch outputs to the highest resolution, concatenates them and maps
them to one heatmap per landmark with two 1x1 convolutions.

Parameter names equal those of the official release (and timm's ``hrnet_w18``, mmpose's ``backbone.*``),
so ImageNet and mmpose weights load without renaming: the backbone lives at the top level
(``conv1``, ``bn1``, ``conv2``, ``bn2``, ``layer1``, ``transition1``, ``stage2``, ... ``stage4``) and the
heatmap head is ``head`` = Sequential(conv 1x1, BN, ReLU, conv 1x1), the official facial-landmark layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_MOMENTUM = 0.1
UPSAMPLE_MODES = ("bilinear", "nearest")


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet basic block)."""

    expansion = 1

    def __init__(self, in_ch: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, channels, stride)
        self.bn1 = _bn(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = _bn(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y += shortcut
        return self.relu(y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual connection (ResNet bottleneck block)."""

    expansion = 4

    def __init__(self, in_ch: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        out_ch = channels * self.expansion
        self.conv1 = nn.Conv2d(in_ch, channels, kernel_size=1, bias=False)
        self.bn1 = _bn(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn2 = _bn(channels)
        self.conv3 = nn.Conv2d(channels, out_ch, kernel_size=1, bias=False)
        self.bn3 = _bn(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        y += shortcut
        return self.relu(y)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _make_blocks(
    block: type[BasicBlock] | type[Bottleneck], in_ch: int, channels: int, num_blocks: int
) -> nn.Sequential:
    """A chain of residual blocks; the first gets a 1x1 conv + BN shortcut when the width changes."""
    out_ch = channels * block.expansion
    downsample = None
    if in_ch != out_ch:
        downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False), _bn(out_ch))
    layers = [block(in_ch, channels, 1, downsample)]
    layers += [block(out_ch, channels) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of residual blocks followed by the multi-resolution fusion.

    Fused output i = ReLU(sum_j f_ij(x_j)) with f_ii = identity, f_ij for a lower-resolution j (j > i) =
    1x1 conv + BN + upsampling by 2^(j-i), and for a higher-resolution j (j < i) = (i-j) strided 3x3
    convs (BN, ReLU between them; the last one without ReLU).
    """

    def __init__(
        self,
        in_channels: list[int],
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: tuple[int, ...],
        channels: tuple[int, ...],
        upsample: str = "bilinear",
    ):
        super().__init__()
        if not len(in_channels) == len(num_blocks) == len(channels):
            raise ValueError(
                f"branch count mismatch: in_channels {in_channels}, num_blocks {num_blocks}, "
                f"channels {channels}"
            )
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(
            _make_blocks(block, c_in, c, n)
            for c_in, c, n in zip(in_channels, channels, num_blocks, strict=True)
        )
        self.out_channels = [c * block.expansion for c in channels]
        self.fuse_layers = self._make_fuse_layers(self.out_channels, upsample)
        self.fuse_act = nn.ReLU(inplace=False)

    @staticmethod
    def _make_fuse_layers(chs: list[int], upsample: str) -> nn.ModuleList:
        n = len(chs)
        rows = nn.ModuleList()
        if n == 1:
            return rows
        align = False if upsample == "bilinear" else None
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(chs[j], chs[i], kernel_size=1, bias=False),
                            _bn(chs[i]),
                            nn.Upsample(scale_factor=2 ** (j - i), mode=upsample, align_corners=align),
                        )
                    )
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out = chs[i] if last else chs[j]
                        step = [_conv3x3(chs[j], out, stride=2), _bn(out)]
                        if not last:
                            step.append(nn.ReLU(inplace=True))
                        steps.append(nn.Sequential(*step))
                    row.append(nn.Sequential(*steps))
            rows.append(row)
        return rows

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.num_branches == 1:
            return xs
        fused = []
        for row in self.fuse_layers:
            y = xs[0] if isinstance(row[0], nn.Identity) else row[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + row[j](xs[j])
            fused.append(self.fuse_act(y))
        return fused


@dataclass(frozen=True)
class StageConfig:
    """One stage: `num_modules` HighResolutionModules with one entry per branch in the tuples."""

    num_modules: int
    block: str
    num_blocks: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class HRNetConfig:
    """Widths and depths of an HRNet; stage1 is the single-branch `layer1`."""

    stage1: StageConfig
    stage2: StageConfig
    stage3: StageConfig
    stage4: StageConfig
    stem_width: int = 64


def _standard(width: int) -> HRNetConfig:
    w = (width, 2 * width, 4 * width, 8 * width)
    return HRNetConfig(
        stage1=StageConfig(1, "bottleneck", (4,), (64,)),
        stage2=StageConfig(1, "basic", (4, 4), w[:2]),
        stage3=StageConfig(4, "basic", (4, 4, 4), w[:3]),
        stage4=StageConfig(3, "basic", (4, 4, 4, 4), w),
    )


CONFIGS: dict[str, HRNetConfig] = {
    "hrnetv2_w18": _standard(18),
    "hrnetv2_w32": _standard(32),
    "hrnetv2_w48": _standard(48),
    "hrnetv2_w18_small_v2": HRNetConfig(
        stage1=StageConfig(1, "bottleneck", (2,), (64,)),
        stage2=StageConfig(1, "basic", (2, 2), (18, 36)),
        stage3=StageConfig(3, "basic", (2, 2, 2), (18, 36, 72)),
        stage4=StageConfig(2, "basic", (2, 2, 2, 2), (18, 36, 72, 144)),
    ),
}


def _make_transition(prev: list[int], cur: list[int]) -> nn.ModuleList:
    """Adapt the previous stage's branches to the next: 3x3 conv where a width changes, identity where
    not, and a new branch made from the lowest-resolution one by strided 3x3 convs."""
    layers = nn.ModuleList()
    for i, c in enumerate(cur):
        if i < len(prev):
            if prev[i] == c:
                layers.append(nn.Identity())
            else:
                layers.append(nn.Sequential(_conv3x3(prev[i], c), _bn(c), nn.ReLU(inplace=True)))
        else:
            steps = []
            for k in range(i + 1 - len(prev)):
                out = c if k == i - len(prev) else prev[-1]
                steps.append(
                    nn.Sequential(_conv3x3(prev[-1], out, stride=2), _bn(out), nn.ReLU(inplace=True))
                )
            layers.append(nn.Sequential(*steps))
    return layers


class HRNet(nn.Module):
    """HRNetV2 backbone + heatmap head: (B, 3, S, S) -> (B, K, S/4, S/4), S a multiple of 32."""

    def __init__(self, config: HRNetConfig, num_keypoints: int = 98, upsample: str = "bilinear"):
        super().__init__()
        self.config = config
        self.upsample = upsample
        stem = config.stem_width
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(stem)
        self.conv2 = nn.Conv2d(stem, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(64)
        self.relu = nn.ReLU(inplace=True)

        s1 = config.stage1
        block1 = BLOCKS[s1.block]
        self.layer1 = _make_blocks(block1, 64, s1.channels[0], s1.num_blocks[0])
        chs = [s1.channels[0] * block1.expansion]
        for n, cfg in ((2, config.stage2), (3, config.stage3), (4, config.stage4)):
            block = BLOCKS[cfg.block]
            cur = [c * block.expansion for c in cfg.channels]
            setattr(self, f"transition{n - 1}", _make_transition(chs, cur))
            modules = []
            for _ in range(cfg.num_modules):
                module = HighResolutionModule(cur, block, cfg.num_blocks, cfg.channels, upsample)
                cur = module.out_channels
                modules.append(module)
            setattr(self, f"stage{n}", nn.Sequential(*modules))
            chs = cur
        self.branch_channels = tuple(chs)
        total = sum(chs)
        self.head = nn.Sequential(
            nn.Conv2d(total, total, kernel_size=1),
            _bn(total),
            nn.ReLU(inplace=True),
            nn.Conv2d(total, num_keypoints, kernel_size=1),
        )
        self.num_keypoints = num_keypoints
        self.init_weights()

    def init_weights(self) -> None:
        """HRNet's initialisation: conv weights N(0, 0.001), conv biases 0, BN weight 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _transition(layers: nn.ModuleList, xs: list[Tensor]) -> list[Tensor]:
        out = []
        for i, layer in enumerate(layers):
            x = xs[i] if i < len(xs) else xs[-1]
            out.append(x if isinstance(layer, nn.Identity) else layer(x))
        return out

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The four branch outputs of stage 4, at strides 4, 8, 16 and 32."""
        if x.dim() != 4 or x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(
                f"expected input (B, 3, H, W) with H and W multiples of 32, got {tuple(x.shape)}"
            )
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        xs = self.stage2(self._transition(self.transition1, xs))
        xs = self.stage3(self._transition(self.transition2, xs))
        xs = self.stage4(self._transition(self.transition3, xs))
        return xs

    def concat_branches(self, xs: list[Tensor]) -> Tensor:
        """HRNetV2 representation: every branch upsampled bilinearly to the first one, concatenated."""
        size = xs[0].shape[-2:]
        ups = [xs[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in xs[1:]]
        return torch.cat(ups, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.concat_branches(self.forward_features(x)))


def build_model(name: str = "hrnetv2_w18", num_keypoints: int = 98, upsample: str = "bilinear") -> HRNet:
    """Build an HRNetV2 landmark model by name (see CONFIGS); `upsample` is the fusion upsampling mode:
    "bilinear" (align_corners=False) as in the WFLW recipe, or "nearest" as in the ImageNet classifier."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(CONFIGS)}")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
    return HRNet(CONFIGS[name], num_keypoints=num_keypoints, upsample=upsample)
