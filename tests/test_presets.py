"""Presets and `key=value` overrides: the published recipe's values, typed parsing, clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from hrnet_lib.train.presets import (
    PRESETS,
    ConfigError,
    TrainConfig,
    apply_overrides,
    get_preset,
    legacy_precision,
)
from hrnet_lib.train.runtime import batch_sizes


def test_published_recipe_matches_facts() -> None:
    """wflw-mmpose is the mmpose config of the published 4.06 (FACTS.md), 8 GPUs x 64."""
    cfg = get_preset("wflw-mmpose")
    assert (cfg.model, cfg.input_size, cfg.heatmap_size, cfg.sigma) == ("hrnetv2_w18", 256, 64, 2.0)
    assert (cfg.global_batch, cfg.per_device_batch, cfg.epochs) == (512, 64, 60)
    assert (cfg.lr, cfg.weight_decay, cfg.warmup_iters, cfg.warmup_ratio) == (2e-3, 0.0, 500, 0.001)
    assert (cfg.milestones, cfg.gamma) == ((40, 55), 0.1)
    assert (cfg.flip_prob, cfg.scale_sigma, cfg.scale_range) == (0.5, 0.25, (0.75, 1.25))
    assert (cfg.rot_sigma, cfg.rot_max, cfg.rot_prob) == (30.0, 60.0, 0.6)
    assert cfg.global_batch // cfg.per_device_batch == 8


def test_one_gpu_preset_keeps_the_recipe_and_global_batch() -> None:
    one, eight = get_preset("wflw-1gpu"), get_preset("wflw-mmpose")
    differ = {
        f.name for f in dataclasses.fields(TrainConfig) if getattr(one, f.name) != getattr(eight, f.name)
    }
    assert differ <= {"per_device_batch", "val_batch", "workers"}  # how the work is split, not the recipe
    # One GPU takes the whole global batch in one pass and validates in passes of the same shape.
    assert batch_sizes(one, world=1) == (512, 512, 1) and one.val_batch == 512
    assert batch_sizes(eight, world=8) == (64, 64, 1)
    assert batch_sizes(eight, world=1) == (512, 64, 8)  # mmpose's BN batch of 64 on one GPU
    assert batch_sizes(eight, world=4) == (128, 64, 2)


def test_a_world_size_that_does_not_divide_the_global_batch_says_what_would() -> None:
    with pytest.raises(
        ConfigError, match=r"size 3: .* \(1, 2, 4, 8, 16, \.\.\.\), or override global_batch=510 or 513"
    ):
        batch_sizes(get_preset("wflw-mmpose"), world=3)
    with pytest.raises(ConfigError, match=r"global_batch=6 \(another"):  # never a batch of 0
        batch_sizes(apply_overrides(get_preset("smoke"), ["global_batch=4"]), world=6)
    with pytest.raises(
        ConfigError, match=r"per_device_batch=64 must divide the per-process share 32 .*per_device_batch=none"
    ):
        batch_sizes(get_preset("wflw-mmpose"), world=16)


def test_presets_are_fresh_copies() -> None:
    a = get_preset("smoke")
    a.epochs = 99
    assert get_preset("smoke").epochs != 99
    assert set(PRESETS) == {"wflw-mmpose", "wflw-1gpu", "cpu-default", "smoke"}
    for name in PRESETS:
        cfg = get_preset(name)
        assert cfg.input_size % 32 == 0 and cfg.input_size == 4 * cfg.heatmap_size


def test_overrides_are_parsed_by_field_type() -> None:
    cfg = apply_overrides(
        get_preset("smoke"),
        ["epochs=3", "lr=1e-4", "milestones=2,5", "scale_range=0.8,1.2", "channels_last=false"]
        + ["per_device_batch=none", "model=hrnetv2_w32", "deterministic=1"],
    )
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr == 1e-4
    assert cfg.milestones == (2, 5)
    assert cfg.scale_range == (0.8, 1.2)
    assert cfg.channels_last is False and cfg.deterministic is True
    assert cfg.per_device_batch is None
    assert cfg.model == "hrnetv2_w32"
    assert apply_overrides(cfg, ["per_device_batch=2"]).per_device_batch == 2
    assert apply_overrides(cfg, ["milestones=7"]).milestones == (7,)


def test_config_round_trips_through_a_plain_dict() -> None:
    cfg = apply_overrides(get_preset("cpu-default"), ["milestones=1,2,3"])
    data = cfg.to_dict()
    assert data["milestones"] == [1, 2, 3]
    assert TrainConfig.from_dict(data) == cfg
    with pytest.raises(ConfigError, match="unknown config keys"):
        TrainConfig.from_dict({**data, "nope": 1})


@pytest.mark.parametrize(
    ("device", "bf16", "precision", "channels_last"),
    [
        ("cpu", True, "fp32", False),  # bf16 and channels_last were CUDA only: a CPU run was fp32 and NCHW
        ("cpu", False, "fp32", False),
        ("auto", True, "auto", True),  # bf16 on a GPU, as "auto" still is
        ("cuda", False, "fp32", True),
    ],
)
def test_a_config_from_before_precision_reads_as_it_ran(
    device: str, bf16: bool, precision: str, channels_last: bool
) -> None:
    """Checkpoints written with the old `bf16` flag still load, in the precision and layout they ran."""
    old = get_preset("smoke").to_dict()
    del old["precision"]
    old.update(bf16=bf16, channels_last=True, device=device)
    cfg = TrainConfig.from_dict(old)
    assert (cfg.precision, cfg.channels_last, cfg.device) == (precision, channels_last, device)
    assert legacy_precision(cfg.to_dict()) == cfg.to_dict()  # a current config is left as it is


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nope=1", "unknown config key 'nope'"),
        ("epochs=three", "bad value 'three' for 'epochs'"),
        ("epochs", "not of the form key=value"),
        ("channels_last=maybe", "expected true or false"),
        ("precision=fp16", r"bad precision='fp16': must be auto, bf16 or fp32"),
        ("scale_range=1.0", "expected 2 comma-separated values"),
        ("epochs=0", r"bad epochs=0: must be at least 1"),
        ("lr=-1", r"bad lr=-1.0: must be 0 or more"),
        ("global_batch=0", r"bad global_batch=0"),
        ("input_size=65", r"bad input_size=65: must be a multiple of 32"),
        ("heatmap_size=32", r"bad heatmap_size=32: must be input_size / 4"),
        ("val_fraction=1.5", r"bad val_fraction=1.5"),
        ("val_fraction=1", r"bad val_fraction=1.0"),
        ("val_fraction=-0.1", r"bad val_fraction=-0.1"),
        ("milestones=55,40", r"bad milestones=\(55, 40\)"),
        ("scale_range=1.25,0.75", r"bad scale_range"),
        ("flip_prob=2", r"bad flip_prob=2.0: must be a probability"),
        ("device=cuda:0", r"bad device='cuda:0': must be auto, cpu or cuda"),
        ("device=gpu", r"bad device='gpu'"),
        ("loss=l1", r"bad loss='l1': must be mse or awing"),
        ("lr=inf", r"bad lr=inf: must be a finite number"),  # infinity passed every 'lr >= 0' rule
        ("sigma=inf", r"bad sigma=inf: must be a finite number"),
        ("rot_max=inf", r"bad rot_max=inf: must be a finite number"),
        ("lr=nan", r"bad lr=nan: must be a finite number"),
        ("scale_range=0.75,inf", r"bad scale_range=\(0.75, inf\): must be a finite number"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_preset("smoke"), [override])


def test_every_preset_is_a_valid_config() -> None:
    """The presets pass the same checks as an override (and a run's config read back from its checkpoint)."""
    for name in PRESETS:
        cfg = get_preset(name)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="bad sigma=0"):
        TrainConfig(sigma=0)


def test_unknown_preset_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        get_preset("wflw-9gpu")
    assert "wflw-9gpu" in str(info.value)
    for name in PRESETS:
        assert name in str(info.value)
