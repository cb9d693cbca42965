"""What `make train` would run (a dry run, `make -n`): processes, preset and ImageNet start per data kind."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def planned_training(*variables: str) -> str:
    """The training command of `make -n train VARIABLES`, as one line."""
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "train", *variables],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.replace("\\\n", " ").splitlines()
    return " ".join(next(line for line in lines if " train --preset " in line).split())


def test_wflw_on_eight_gpus_is_the_published_recipe_from_imagenet_weights() -> None:
    command = planned_training("DATA=wflw", "GPUS=8")
    assert "torchrun --standalone --nproc_per_node 8 -m hrnet_lib train --preset wflw-mmpose" in command
    assert command.endswith("--resume --pretrained data/hrnetv2_w18-00eb2006.pth")


def test_wflw_on_one_gpu_and_from_scratch() -> None:
    command = planned_training("DATA=wflw", "GPUS=1", "PRETRAINED=")
    assert "python -m hrnet_lib train --preset wflw-1gpu" in command and "torchrun" not in command
    assert "--pretrained" not in command


def test_synthetic_default_is_one_cpu_process_whatever_the_gpus() -> None:
    command = planned_training("DATA=synthetic", "GPUS=8")
    assert "python -m hrnet_lib train --preset cpu-default --data-root data/synthetic" in command
    assert "torchrun" not in command and "--pretrained" not in command


def test_train_args_reach_the_training_command() -> None:
    command = planned_training("DATA=wflw", "GPUS=8", "TRAIN_ARGS=val_fraction=0 epochs=3", "RUN=runs/all")
    assert "--out runs/all --resume" in command and command.endswith(" val_fraction=0 epochs=3")
