"""Training loop: the recipe's schedule and loss, DDP = one process, exact resume after SIGKILL, errors.

Runs the real command (`python -m hrnet_lib train`, under torchrun for DDP) on a tiny synthetic WFLW.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hrnet_lib import device
from hrnet_lib.book import chapter
from hrnet_lib.data.targets import encode_heatmaps
from hrnet_lib.data.wflw import load_split
from hrnet_lib.device import resolve_precision
from hrnet_lib.model.hrnet import build_model
from hrnet_lib.model.inference import forward_flops
from hrnet_lib.train import ddp_check, loop
from hrnet_lib.train.checkpoint import load_checkpoint
from hrnet_lib.train.datasets import build_datasets, validation_batches
from hrnet_lib.train.loop import main
from hrnet_lib.train.presets import apply_overrides, get_preset
from hrnet_lib.train.recipe import adaptive_wing, heatmap_loss, lr_at
from hrnet_lib.train.run_dir import StepMeter, speed_summary
from hrnet_lib.train.runtime import Runtime, out_of_memory_advice
from hrnet_lib.train.sampler import EpochSampler, deal, split_train_val
from hrnet_lib.train.validate import validate

REPO = Path(__file__).resolve().parents[1]
# One compute thread per training process: under a parallel test run, two-thread processes on two cores
# slow each other down many times over (OpenMP threads spin while waiting).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.usefixtures("one_thread")  # the fixture in conftest.py


def run_train(args: list[str], torchrun: int = 0, timeout: float = 240) -> subprocess.CompletedProcess:
    """The training command in a fresh process (under torchrun with `torchrun` processes when > 0)."""
    launcher = [sys.executable, "-m", "hrnet_lib", "train"]
    if torchrun:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={torchrun}",
        ]
        launcher += ["-m", "hrnet_lib", "train"]
    proc = subprocess.run(
        launcher + args, cwd=REPO, env=ONE_THREAD, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------------------
# The recipe


def test_lr_schedule_of_the_published_recipe() -> None:
    """mmpose: base 2e-3, linear warm-up from 0.001x over 500 steps, x0.1 from epochs 40 and 55."""
    cfg = get_preset("wflw-mmpose")
    ipe = 13  # steps per epoch of 7,125 training faces at batch 512
    assert lr_at(0, ipe, cfg) == pytest.approx(2e-6)
    assert lr_at(250, ipe, cfg) == pytest.approx(2e-3 * (0.001 + 0.999 * 250 / 499))
    assert lr_at(498, ipe, cfg) == pytest.approx(2e-3 * (0.001 + 0.999 * 498 / 499))
    assert lr_at(499, ipe, cfg) == pytest.approx(2e-3)  # mmengine's LinearLR is at the full rate here
    assert lr_at(500, ipe, cfg) == pytest.approx(2e-3)
    assert lr_at(40 * ipe - 1, ipe, cfg) == pytest.approx(2e-3)  # last step of epoch 39
    assert lr_at(40 * ipe, ipe, cfg) == pytest.approx(2e-4)  # first step of epoch 40
    assert lr_at(55 * ipe - 1, ipe, cfg) == pytest.approx(2e-4)
    assert lr_at(55 * ipe, ipe, cfg) == pytest.approx(2e-5)
    assert lr_at(60 * ipe - 1, ipe, cfg) == pytest.approx(2e-5)
    warmup = [lr_at(i, ipe, cfg) for i in range(500)]
    assert all(a < b for a, b in zip(warmup, warmup[1:], strict=False))
    # A milestone inside the warm-up: both factors apply (mmcv scales the stepped lr).
    assert lr_at(200, 5, cfg) == pytest.approx(2e-3 * 0.1 * (0.001 + 0.999 * 200 / 499))


@pytest.mark.parametrize("warmup_iters", [1, 2, 7, 500])
def test_warmup_matches_a_replay_of_mmengines_linear_lr(warmup_iters: int) -> None:
    """mmengine's LinearLR(start_factor=r, by_epoch=False, begin=0, end=n) updates the optimiser's lr in
    place: step 0 sets base * r; each later step i < n multiplies by 1 + (1 - r) / (T r + (i - 1)(1 - r))
    with T = n - 1 (its total_iters); from step n on it leaves the lr alone. Replayed here step by step."""
    cfg = dataclasses.replace(get_preset("wflw-mmpose"), warmup_iters=warmup_iters, milestones=())
    ratio, total = cfg.warmup_ratio, warmup_iters - 1
    lr = cfg.lr * ratio
    replay = [lr]
    for i in range(1, warmup_iters + 3):
        if i < warmup_iters:
            lr *= 1 + (1 - ratio) / (total * ratio + (i - 1) * (1 - ratio))
        replay.append(lr)
    ours = [lr_at(i, 1000, cfg) for i in range(warmup_iters + 3)]
    if warmup_iters == 1:  # mmengine stays at base * r after a one-step warm-up; ours goes to the full rate
        assert ours[0] == pytest.approx(replay[0], rel=1e-9) and ours[1:] == [cfg.lr] * (len(ours) - 1)
    else:
        assert ours == pytest.approx(replay, rel=1e-9)


def test_loss_is_mmpose_joints_mse_with_target_weights() -> None:
    """Per-keypoint MSE of (pred * w) against (gt * w), averaged over keypoints (mmpose JointsMSELoss)."""
    gen = torch.Generator().manual_seed(0)
    pred, gt = torch.rand(3, 5, 4, 4, generator=gen), torch.rand(3, 5, 4, 4, generator=gen)
    weight = torch.tensor([[1.0, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 0]])
    per_joint = [
        F.mse_loss(
            pred[:, k].reshape(3, -1) * weight[:, k, None], gt[:, k].reshape(3, -1) * weight[:, k, None]
        )
        for k in range(5)
    ]
    assert heatmap_loss(pred, gt, weight).item() == pytest.approx(
        torch.stack(per_joint).mean().item(), rel=1e-6
    )
    # By hand: prediction 0, target 1 everywhere, half the keypoints weighted -> 0.5.
    assert (
        heatmap_loss(torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3), torch.tensor([[1.0, 0.0]])).item()
        == 0.5
    )


def awing_by_hand(error: float, gt: float) -> float:
    """Adaptive Wing loss of a pixel by the paper's formula (omega 14, theta 0.5, epsilon 1, alpha 2.1)."""
    power = 2.1 - gt
    if error < 0.5:
        return 14 * math.log(1 + error**power)
    slope = 14 / (1 + 0.5**power) * power * 0.5 ** (power - 1)
    return slope * error - (0.5 * slope - 14 * math.log(1 + 0.5**power))


def test_adaptive_wing_loss_by_hand_and_continuous_at_theta() -> None:
    gt = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.3, 0.9])
    pred = torch.tensor([0.2, -0.9, 0.2, 0.95, 1.5, 0.9])
    expected = [awing_by_hand(abs(g - p), g) for g, p in zip(gt.tolist(), pred.tolist(), strict=True)]
    assert adaptive_wing(pred, gt).tolist() == pytest.approx(expected, rel=1e-5)
    assert awing_by_hand(0.2, 0.0) == pytest.approx(14 * math.log(1 + 0.2**2.1))  # the paper's small branch
    # The two branches meet at |error| = theta with the same value and the same slope, for any target.
    for g in (0.0, 0.5, 1.0):
        target = torch.full((3,), g, dtype=torch.float64)
        errors = torch.tensor([0.5 - 1e-6, 0.5, 0.5 + 1e-6], dtype=torch.float64, requires_grad=True)
        values = adaptive_wing(target - errors, target)
        (slopes,) = torch.autograd.grad(values.sum(), errors)
        assert values[0].item() == pytest.approx(values[2].item(), abs=1e-4)
        assert slopes[0].item() == pytest.approx(slopes[2].item(), rel=1e-4)
    # Near a peak a small error keeps a steep gradient, where MSE's vanishes.
    error = torch.tensor([0.01], requires_grad=True)
    (near_peak,) = torch.autograd.grad(adaptive_wing(1 - error, torch.ones(1)).sum(), error)
    assert near_peak.item() > 10 * 2 * 0.01


def test_adaptive_wing_training_loss_weights_keypoints_as_mmpose() -> None:
    """mmpose applies the target weights to both heatmaps, then averages over every pixel."""
    gen = torch.Generator().manual_seed(1)
    pred, gt = torch.rand(2, 3, 4, 4, generator=gen), torch.rand(2, 3, 4, 4, generator=gen)
    weight = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    w = weight[:, :, None, None]
    by_hand = np.mean(
        [
            awing_by_hand(abs(g - p), g)
            for g, p in zip((gt * w).flatten().tolist(), (pred * w).flatten().tolist(), strict=True)
        ]
    )
    assert heatmap_loss(pred, gt, weight, "awing").item() == pytest.approx(by_hand, rel=1e-5)
    assert heatmap_loss(pred, gt, weight, "awing") > heatmap_loss(pred, gt, weight, "mse")


def test_validation_split_is_deterministic_and_keeps_images_whole(data: Path) -> None:
    faces = load_split(data, "train")
    train, val = split_train_val(faces, 0.25, seed=0)
    again, val_again = split_train_val(faces, 0.25, seed=0)
    assert [f.source for f in train] == [f.source for f in again] and [f.source for f in val] == [
        f.source for f in val_again
    ]
    assert len(train) + len(val) == len(faces)
    assert {f.image for f in train}.isdisjoint({f.image for f in val})
    assert 6 <= len(val) <= 8  # whole images: at least the target, at most one image more
    assert {f.source for f in split_train_val(faces, 0.25, seed=1)[1]} != {f.source for f in val}


def test_sampler_gives_every_world_size_the_same_global_batches() -> None:
    """Process r holds the r-th share of each global batch; skip resumes inside an epoch."""
    global_batch = 8
    one = list(EpochSampler(43, global_batch, 1, 0, seed=3))
    shares = [list(EpochSampler(43, global_batch, 4, rank, seed=3)) for rank in range(4)]
    assert len(one) == 48 and all(len(share) == 12 for share in shares)  # ceil(43 / 8) = 6 steps
    for step in range(6):
        single = sorted(one[step * global_batch : (step + 1) * global_batch])
        spread = sorted(i for share in shares for i in share[step * 2 : (step + 1) * 2])
        assert single == spread
    sampler = EpochSampler(43, global_batch, 2, 1, seed=3)
    sampler.set_epoch(5)
    full = list(sampler)
    sampler.set_epoch(5, skip=6)
    assert list(sampler) == full[6:] and len(sampler) == len(full) - 6
    sampler.set_epoch(6)
    assert list(sampler) != full


def test_sampler_pads_each_epoch_with_its_own_first_faces() -> None:
    """Every face is seen each epoch (mmpose keeps the short last batch); the padding repeats the
    epoch's first faces, so all steps have the global batch's shape."""
    for size, global_batch in ((43, 8), (48, 8), (5, 8)):
        sampler = EpochSampler(size, global_batch, 1, 0, seed=1)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            order = list(sampler)
            steps = -(-size // global_batch)
            assert len(order) == steps * global_batch
            assert sorted(order[:size]) == list(range(size))  # a permutation, then the padding
            assert order[size:] == (order[:size] * global_batch)[: len(order) - size]


# --------------------------------------------------------------------------------------------------------
# Learning, distribution, resume


def test_tiny_set_is_overfit(data: Path, tmp_path: Path) -> None:
    """Seven faces, no augmentation, full-batch steps: the heatmap loss falls well below its start
    (the loss of the all-zero output the initialisation gives), and keeps falling."""
    run = tmp_path / "overfit"
    overrides = ["limit=8", "val_fraction=0.1", "epochs=30", "global_batch=7", "lr=1e-3", "warmup_iters=1"]
    overrides += ["milestones=1000", "flip_prob=0", "rot_prob=0", "scale_sigma=0", "log_every=1"]
    code = main(["--preset", "smoke", "--data-root", str(data), "--out", str(run), *overrides])
    assert code == 0
    losses = [r["loss"] for r in read_log(run) if "loss" in r]
    assert len(losses) == 30
    assert losses[-1] < 0.7 * losses[0], losses
    assert np.mean(losses[-5:]) < np.mean(losses[-10:-5]) < np.mean(losses[-15:-10]), losses


def test_two_processes_make_the_same_update_as_one(data: Path, tmp_path: Path) -> None:
    """torchrun, 2 gloo processes x 2 images = 1 process x 4 images = 1 process x 2 x 2 accumulated.

    The book's DDP check (`ddp_check.run_check`) makes the first two runs; its reported differences are
    checked against the checkpoints here. BatchNorm statistics are frozen (freeze_bn) since per-process
    batch statistics differ by design (SyncBatchNorm would share them, but has no CPU kernel). In fp32
    (the check's overrides): bf16 rounds passes of 2 and of 4 images apart by more than 1e-6.
    """
    rows = ddp_check.run_check(data, tmp_path, (1, 2), steps=3)
    overrides = [*ddp_check.CHECK_OVERRIDES, "max_iters=3", *ddp_check.CPU_OVERRIDES, "per_device_batch=2"]
    run_train(["--preset", "smoke", "--data-root", str(data), "--out", str(tmp_path / "accum"), *overrides])
    names = ("1-process", "2-process", "accum")
    one, ddp, accum = (load_checkpoint(tmp_path / name / "last.pt") for name in names)
    assert ddp["world_size"] == 2 and one["world_size"] == 1 and ddp["iteration"] == 3
    torch.manual_seed(0)
    init = build_model("hrnetv2_w18_small_v2").state_dict()
    changed, largest, moved = 0, 0.0, 0.0
    for name, value in one["model"].items():
        if not value.is_floating_point():
            continue
        torch.testing.assert_close(ddp["model"][name], value, rtol=0, atol=1e-6, msg=name)
        torch.testing.assert_close(accum["model"][name], value, rtol=0, atol=1e-6, msg=name)
        changed += not torch.equal(value, init[name])
        largest = max(largest, float((ddp["model"][name].double() - value.double()).abs().max()))
        moved = max(moved, float((value.double() - init[name].double()).abs().max()))
    assert changed > 100  # the three steps really moved the weights
    assert [row["processes"] for row in rows] == [1, 2] and rows[0]["max_difference"] == 0.0
    assert rows[1]["max_difference"] == largest < 1e-5
    assert rows[0]["max_change"] == pytest.approx(moved) and moved > 1e-4
    assert all(row["steps"] == 3 and row["global_batch"] == 4 and row["step_s"] > 0 for row in rows)
    losses = {name: [r["loss"] for r in read_log(tmp_path / name) if "loss" in r] for name in names[:2]}
    np.testing.assert_allclose(losses["2-process"], losses["1-process"], rtol=1e-5)


def test_deal_gives_each_rank_its_share_of_the_permuted_global_batch() -> None:
    """Independent of EpochSampler: batch i is order[i*G:(i+1)*G] of torch.randperm seeded by seed + epoch,
    and rank r of N takes every N-th face of it from the r-th."""
    size, global_batch, seed, epoch, step = 37, 8, 5, 2, 1
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    batch = torch.randperm(size, generator=generator).tolist()[
        step * global_batch : (step + 1) * global_batch
    ]
    for world in (1, 2, 4, 8):
        shares = deal(size, global_batch, world, seed, epoch, step)
        assert shares == [batch[rank::world] for rank in range(world)]
    with pytest.raises(ValueError, match="3 processes cannot share a global batch of 8"):
        deal(size, global_batch, 3, seed)


def test_ddp_check_commands_counts_and_differences() -> None:
    assert ddp_check.train_command(1, ["--preset", "smoke"]) == [
        sys.executable, "-m", "hrnet_lib", "train", "--preset", "smoke"
    ]  # fmt: skip
    two = ddp_check.train_command(2, ["x"])
    assert Path(two[0]) == Path(sys.executable).with_name("torchrun") and Path(two[0]).is_file()
    assert two[1:] == ["--standalone", "--nproc_per_node=2", "-m", "hrnet_lib", "train", "x"]
    counts = [ddp_check.gpu_process_counts(n) for n in (0, 1, 3, 8, 16)]
    assert counts == [(), (1,), (1, 2), (1, 2, 4, 8), (1, 2, 4, 8)]
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([1.0, 2.5]), "n": torch.tensor([9])}
    assert ddp_check.largest_difference(a, b) == 0.5  # integer buffers (BN's batch count) are not weights
    with pytest.raises(ValueError, match="differ in their keys"):
        ddp_check.largest_difference(a, {"w": a["w"]})
    row = {"processes": 2, "device": "cpu", "global_batch": 4, "steps": 3, "step_s": 0.25}
    row |= {"images_per_s": 16.0, "max_difference": 9.313e-10, "max_change": 0.0068}
    lines = ddp_check.table([row]).splitlines()
    assert lines[0] == "| " + " | ".join(ddp_check.COLUMNS) + " |"
    assert lines[2] == "| 2 | cpu | 4 | 3 | 0.250 | 16.000 | 9.3e-10 | 0.0068 |"


DETERMINISTIC = ["--preset", "smoke", "epochs=3", "deterministic=true"]


@pytest.fixture(scope="module")
def uninterrupted(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic smoke run of 3 epochs (15 steps), start to end in one session."""
    full = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_train([*DETERMINISTIC, "--data-root", str(data), "--out", str(full)])
    return full


def start_until(
    args: list[str], log: Path, iteration: int, stderr: Path, new_session: bool = False
) -> subprocess.Popen:
    """Start a training process (one data worker, stderr to a file: a pipe nobody reads would fill up and
    block it) and return once its log holds step `iteration`."""
    command = [sys.executable, "-m", "hrnet_lib", "train", *args, "workers=1"]
    with open(stderr, "w") as errors:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=ONE_THREAD,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=new_session,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        lines = log.read_text().splitlines() if log.exists() else []
        if any(f'"iteration": {iteration},' in line and '"loss"' in line for line in lines):
            break
        time.sleep(0.02)
    return proc


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # a process that ended meanwhile
            continue
    found, level = [], [pid]
    while level:
        level = [child for child, parent in parents.items() if parent in level]
        found += level
    return found


def running(pid: int) -> bool:
    """Whether a process exists and has not ended (a zombie that no one reaped has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_same_run(full: Path, resumed: Path) -> None:
    """Same weights and optimiser state tensor for tensor, same best checkpoint, same log."""
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["iteration"] == b["iteration"] == 15
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for key, state in a["optimizer"]["state"].items():
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[field], b["optimizer"]["state"][key][field]), (key, field)
    best_a, best_b = load_checkpoint(full / "best.pt"), load_checkpoint(resumed / "best.pt")
    assert best_a["val_nme"] == best_b["val_nme"] and best_a["iteration"] == best_b["iteration"]
    # The resumed log has no duplicated steps and the same losses.
    log_a, log_b = read_log(full), read_log(resumed)
    assert [r["iteration"] for r in log_a] == [r["iteration"] for r in log_b]
    assert [r.get("loss") for r in log_a] == [r.get("loss") for r in log_b]


def test_sigkill_then_resume_is_bit_identical(data: Path, tmp_path: Path, uninterrupted: Path) -> None:
    """Deterministic CPU run killed mid-epoch with SIGKILL, resumed: same weights and optimiser state as an
    uninterrupted run, tensor for tensor (the killed run also uses a data worker: order does not matter)."""
    killed = tmp_path / "killed"
    common = [*DETERMINISTIC, "--data-root", str(data), "--out", str(killed), "ckpt_every=1"]
    # step 7 of 15 done (epoch 1, step 2 of 5): the checkpoint of step 6 is written
    proc = start_until(common, killed / "log.jsonl", 7, tmp_path / "stderr.txt")
    family = descendants(proc.pid)  # the data worker, its fork server, multiprocessing's resource tracker
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # They end with it (a worker from the fork server once outlived it, keeping the server alive too).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(map(running, family)):
        time.sleep(0.1)
    assert len(family) >= 2 and not any(map(running, family)), family
    partial = load_checkpoint(killed / "last.pt")
    assert partial["epoch"] == 1 and partial["step_in_epoch"] > 0  # a mid-epoch checkpoint

    run_train([*common, "--resume"])
    assert_same_run(uninterrupted, killed)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_at_the_step_then_resume_is_bit_identical(
    data: Path, tmp_path: Path, uninterrupted: Path, signum: int
) -> None:
    """Ctrl-C (SIGINT to the whole process group, data worker included) or a scheduler's SIGTERM: the run
    stops after its current step with last.pt saved there (no mid-epoch checkpoints otherwise), says how to
    go on, exits 128 + signal; resumed, it ends as the uninterrupted run."""
    stopped = tmp_path / "stopped"
    common = [*DETERMINISTIC, "--data-root", str(data), "--out", str(stopped)]
    proc = start_until(common, stopped / "log.jsonl", 7, tmp_path / "stderr.txt", new_session=True)
    os.killpg(proc.pid, signum)
    proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 128 + signum, stderr
    assert f"stopped: {signal.Signals(signum).name} after iteration" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    partial = load_checkpoint(stopped / "last.pt")
    steps = [r["iteration"] for r in read_log(stopped) if "loss" in r]
    assert partial["iteration"] == steps[-1] >= 7 and partial["iteration"] % 5  # saved at the stop, mid-epoch
    assert not (stopped / "summary.json").exists()

    run_train([*common, "--resume"])
    assert_same_run(uninterrupted, stopped)


def test_sigterm_to_the_process_group_while_workers_start_saves_at_the_step(
    data: Path, tmp_path: Path
) -> None:
    """What a scheduler does: SIGTERM to the whole process group of a run with two data workers, just as
    the workers start. Training stops after its current step with last.pt saved there, exit 143, no
    traceback. (The signal once killed the workers' fork server, and the loader took every worker for
    dead, or hit a worker before it could ignore the signal: exit 1, "DataLoader worker exited
    unexpectedly", and only an epoch-end last.pt.)"""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "hrnet_lib", "train", "--preset", "smoke", "--data-root", str(data)]
    with open(tmp_path / "stderr.txt", "w") as errors:
        proc = subprocess.Popen(
            [*command, "--out", str(run), "workers=2"],
            cwd=REPO,
            env=ONE_THREAD,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while not (run / "log.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)  # the session has started; its workers are starting
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped: SIGTERM after iteration" in stderr and "Traceback" not in stderr
    saved = load_checkpoint(run / "last.pt")
    steps = [r["iteration"] for r in read_log(run) if "loss" in r]
    assert saved["iteration"] == steps[-1] and saved["step_in_epoch"] > 0  # at the step, not an epoch's end


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: the CPU tests above cover resume, but only a GPU run loads CUDA RNG state",
)
def test_resume_on_cuda_goes_on_from_the_saved_step(data: Path, tmp_path: Path) -> None:
    """On a GPU a run stopped mid-epoch resumes to the end: the checkpoint's CUDA generator state is
    restored (a resume once failed there, with the RNG tensors loaded onto the GPU)."""
    run = tmp_path / "cuda"
    common = ["--preset", "smoke", "epochs=3", "device=cuda", "--data-root", str(data), "--out", str(run)]
    run_train([*common, "max_iters=7"])
    partial = load_checkpoint(run / "last.pt")
    assert partial["iteration"] == 7 and "cuda" in partial["rng"][0]
    run_train([*common, "--resume"])
    assert load_checkpoint(run / "last.pt")["iteration"] == 15
    steps = [r["iteration"] for r in read_log(run) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 15


def test_resume_refuses_other_data_and_a_damaged_checkpoint(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exact resume needs the annotations the run started with, and a readable last.pt."""
    run, other = tmp_path / "run", tmp_path / "other"
    args = ["--preset", "smoke", "--out", str(run), "max_iters=2"]
    assert main([*args, "--data-root", str(data)]) == 0
    shutil.copytree(data, other)
    train_list = next((other / "WFLW_annotations").rglob("*_train.txt"))
    lines = train_list.read_text().splitlines(keepends=True)
    first = lines[0].split(" ")
    first[0] = f"{float(first[0]) + 0.5:.3f}"  # one coordinate moved by half a pixel
    train_list.write_text(" ".join(first) + "".join(lines[1:]))
    capsys.readouterr()
    assert main([*args, "--data-root", str(other), "--resume"]) == 1
    assert "differ from those" in capsys.readouterr().err
    assert main([*args, "--data-root", str(data), "--resume"]) == 0  # the same data resumes
    (run / "last.pt").write_bytes(b"junk")
    assert main([*args, "--data-root", str(data), "--resume"]) == 1
    assert f"--resume: cannot read checkpoint {run / 'last.pt'}" in capsys.readouterr().err


def test_run_folder_records_config_commit_and_data(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = ["max_iters=5", "log_every=3"]
    assert main(["--preset", "smoke", "--data-root", str(data), "--out", str(run), *overrides]) == 0
    info = json.loads((run / "config.json").read_text())
    assert info["config"] == apply_overrides(get_preset("smoke"), overrides).to_dict()
    assert info["commit"] and len(info["data_manifest_sha256"]) == 64
    # what ran: the precision this CPU resolves "auto" to, channels_last, and the model FLOPs of an image
    assert info["precision"] == resolve_precision(torch.device("cpu"), "auto")
    assert info["memory_format"] == "channels_last"
    flops = info["train_flops_per_image"]
    assert flops == 3 * forward_flops("hrnetv2_w18_small_v2", 64) and info["dense_bf16_peak_tflops"] is None
    best = load_checkpoint(run / "best.pt")
    for key in ("model", "input_size", "heatmap_size", "num_keypoints"):
        assert key in best["config"]
    model = build_model(best["config"]["model"], best["config"]["num_keypoints"])
    model.load_state_dict(best["model"])  # the checkpoint rebuilds its model
    log = read_log(run)
    step = next(r for r in log if "loss" in r)
    assert {"iteration", "epoch", "loss", "lr", "images_per_s", "data_wait_s", "memory_mb"} <= set(step)
    assert any("val_nme" in r for r in log)
    # the first step (cold start) on its own, then every log_every steps, and the last
    steps = [r for r in log if "loss" in r]
    assert [r["iteration"] for r in steps] == [1, 3, 5]
    # summary.json: the cold first step apart, the steady speed from the windows after it
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 5 and summary["first_step_s"] == steps[0]["step_s"]
    assert summary["steady_images_per_s"] == pytest.approx(
        (steps[1]["images_per_s"] + steps[2]["images_per_s"]) / 2
    )
    assert summary["peak_memory_mb"] == max(r["memory_mb"] for r in steps)
    # model FLOP/s = images/s x FLOPs an image; no MFU without a known peak (a CPU)
    for r in steps:
        assert r["model_tflops_per_s"] == pytest.approx(r["images_per_s"] * flops / 1e12) and "mfu" not in r
    tflops = [r["model_tflops_per_s"] for r in steps[1:]]
    assert summary["steady_model_tflops_per_s"] == pytest.approx(sum(tflops) / 2) and summary["mfu"] is None
    assert summary["validation_s"] == pytest.approx(sum(r["val_s"] for r in log if "val_s" in r))
    # where the session went: its parts, measured apart, add up to no more than the whole
    ends = [r["iteration"] for r in steps]
    windows = zip([0, *ends], ends, steps, strict=False)
    training_s = sum((end - begin) * r["step_s"] for begin, end, r in windows)
    assert summary["setup_s"] > 0 and summary["checkpoint_s"] > 0
    parts = summary["setup_s"] + training_s + summary["validation_s"] + summary["checkpoint_s"]
    assert parts <= summary["seconds_this_session"]
    # every record carries the session's wall clock, in order, within the session's length
    elapsed = [r["elapsed_s"] for r in log]
    assert elapsed == sorted(elapsed) and 0 < elapsed[-1] <= summary["seconds_this_session"]


def test_no_hold_out_trains_on_every_face_and_keeps_the_final_weights(data: Path, tmp_path: Path) -> None:
    """val_fraction=0 (mmpose's data and step count): all 24 faces, ceil(24 / 4) = 6 steps an epoch, no
    validation, and best.pt holds the weights of the final step."""
    run = tmp_path / "all"
    assert main(["--preset", "smoke", "--data-root", str(data), "--out", str(run), "val_fraction=0"]) == 0
    info = json.loads((run / "config.json").read_text())
    assert (info["train_faces"], info["val_faces"], info["iters_per_epoch"]) == (24, 0, 6)
    log = read_log(run)
    assert not any("val_nme" in r for r in log)
    assert max(r["iteration"] for r in log) == 12
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["iteration"] == last["iteration"] == 12 and best["val_nme"] is None
    assert all(torch.equal(best["model"][k], v) for k, v in last["model"].items())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_nme"] is None and summary["best_iteration"] == 12


def test_validation_pads_the_last_batch_and_scores_every_face(data: Path) -> None:
    """Validation feeds the model one batch shape only (GPU cold starts) and still scores each face once."""
    cfg = get_preset("smoke")
    _, val_set = build_datasets(cfg, data, data / "unused-cache", True)
    assert len(val_set) % 4  # a short last batch of 4
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.num_keypoints).eval()
    sizes: list[int] = []

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sizes.append(len(x))
            return self.inner(x)

    cpu = torch.device("cpu")
    cfg = dataclasses.replace(cfg, val_batch=4)
    batches = validation_batches(val_set, cfg)
    assert [len(b["image"]) for b in batches[:-1]] == [4] * (len(batches) - 1) and len(
        batches[-1]["image"]
    ) < 4
    padded = validate(Recorder(), batches, cfg, cpu)
    assert set(sizes) == {4} and len(sizes) == -(-len(val_set) // 4)
    whole = validate(model, DataLoader(val_set, batch_size=len(val_set)), cfg, cpu)
    assert padded == pytest.approx(whole, rel=1e-5)


def zero_stand_in() -> torch.nn.Module:
    """A model that maps a 64 px batch to 98 zero heatmaps of 16 px, so a step's loss is the targets' alone.

    A 4x4 patch convolution, not a strided 1x1 one: PyTorch 2.14's oneDNN crashes in the backward of a
    strided 1x1 convolution of 3 channels_last channels on one thread of an AVX2-only CPU (AMD EPYC).
    """
    model = torch.nn.Conv2d(3, 98, 4, stride=4, bias=False)
    torch.nn.init.zeros_(model.weight)
    return model


@pytest.mark.parametrize("unbiased", [False, True])
def test_training_targets_follow_the_unbiased_switch(data: Path, unbiased: bool) -> None:
    """unbiased=true trains on DARK's targets (an untruncated Gaussian at the exact sub-pixel point): with
    a model that predicts zeros, the step's loss is the mean of (target * weight)^2 of those targets."""
    cfg = dataclasses.replace(get_preset("smoke"), unbiased=unbiased)
    train_set, _ = build_datasets(cfg, data, data / "unused-cache", True)
    batch = DataLoader(train_set, batch_size=4)
    micro = next(iter(batch))
    model = zero_stand_in()
    loss = loop.forward_backward(model, [micro], cfg, torch.device("cpu"))
    stride = cfg.input_size / cfg.heatmap_size
    expected, other = [], []
    for keypoints in micro["keypoints"].numpy().astype(np.float64):
        for switch, into in ((unbiased, expected), (not unbiased, other)):
            heatmaps, weights = encode_heatmaps(keypoints / stride, (16, 16), cfg.sigma, unbiased=switch)
            into.append((heatmaps * weights[:, None, None]) ** 2)
    assert float(loss) == pytest.approx(np.mean(expected), rel=1e-5)
    assert float(loss) != pytest.approx(np.mean(other), rel=1e-3)  # the two encodings differ here


def test_training_loss_follows_the_loss_switch(data: Path) -> None:
    """loss=awing trains on the Adaptive Wing loss: with a model that predicts zeros, the step's loss is the
    mean of the per-pixel loss by hand, with error = target * weight."""
    cfg = dataclasses.replace(get_preset("smoke"), loss="awing")
    train_set, _ = build_datasets(cfg, data, data / "unused-cache", True)
    micro = next(iter(DataLoader(train_set, batch_size=2)))
    model = zero_stand_in()
    loss = loop.forward_backward(model, [micro], cfg, torch.device("cpu"))
    pixels = []
    for keypoints in micro["keypoints"].numpy().astype(np.float64):
        heatmaps, weights = encode_heatmaps(keypoints / 4, (16, 16), cfg.sigma)
        pixels += [awing_by_hand(v, v) for v in (heatmaps * weights[:, None, None]).flatten().tolist()]
    assert float(loss) == pytest.approx(np.mean(pixels), rel=1e-5)


def test_validation_nme_of_an_oracle_is_computed_by_hand(data: Path) -> None:
    """An oracle puts landmark k at heatmap pixel peaks[k] for every face; by hand, that is image point
    centre + (4 peaks - 32) * side / 64 in each face's landmark-box crop (side = 1.25 x its extent), and
    its NME is the mean distance to the true points over the outer-eye-corner distance."""
    from oracle import OracleHeatmaps

    cfg = dataclasses.replace(get_preset("smoke"), val_batch=4)
    _, val_set = build_datasets(cfg, data, data / "unused-cache", True)
    batches = validation_batches(val_set, cfg)
    peaks = np.random.default_rng(5).integers(2, 14, size=(98, 2))
    nme = validate(OracleHeatmaps(peaks, 16), batches, cfg, torch.device("cpu"))
    errors = []
    for batch in batches:
        for truth in batch["landmarks"].numpy().astype(np.float64):
            low, high = truth.min(0), truth.max(0)
            predicted = (low + high) / 2 + (4 * peaks - 32) * (high - low).max() * 1.25 / 64
            distances = np.linalg.norm(predicted - truth, axis=1)
            errors.append(distances.mean() / np.linalg.norm(truth[60] - truth[72]))
    assert len(errors) == len(val_set)
    assert nme == pytest.approx(np.mean(errors), rel=1e-6)


# --------------------------------------------------------------------------------------------------------
# Errors


NO_BF16 = {"avx2": True, "avx512_f": True}  # a CPU without bf16 instructions


@pytest.mark.parametrize(
    ("precision", "capabilities", "dtype"),
    [
        ("auto", NO_BF16, torch.float32),
        ("auto", {"avx512_bf16": True}, torch.bfloat16),
        ("auto", {"amx_bf16": True}, torch.bfloat16),
        ("fp32", {"amx_bf16": True}, torch.float32),
        ("bf16", NO_BF16, torch.bfloat16),
    ],
)
def test_training_step_computes_in_the_precision_resolved(
    data: Path, monkeypatch: pytest.MonkeyPatch, precision: str, capabilities: dict, dtype: torch.dtype
) -> None:
    """Whatever this machine is, the step runs its convolutions in the precision the CPU's features and the
    setting give, and keeps fp32 weights, gradients and loss."""
    monkeypatch.setattr(device, "cpu_capabilities", lambda: capabilities)
    cfg = apply_overrides(get_preset("smoke"), [f"precision={precision}"])
    train_set, _ = build_datasets(cfg, data, data / "unused-cache", True)
    batch = next(iter(DataLoader(train_set, batch_size=4)))
    torch.manual_seed(0)
    model = build_model(cfg.model).to(memory_format=torch.channels_last)
    seen: set[torch.dtype] = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    loss = loop.forward_backward(model, [batch], cfg, torch.device("cpu"))
    assert seen == {dtype}
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)


def test_a_cpu_without_bf16_trains_in_fp32_and_the_run_says_so(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "cpu_capabilities", lambda: NO_BF16)
    for name, overrides, precision in (("auto", [], "fp32"), ("forced", ["precision=bf16"], "bf16")):
        run = tmp_path / name
        assert (
            main(
                ["--preset", "smoke", "--data-root", str(data), "--out", str(run), "max_iters=2", *overrides]
            )
            == 0
        )
        assert json.loads((run / "config.json").read_text())["precision"] == precision
        assert chapter.run_provenance(run, "synthetic", "smoke", data)["train_precision"] == precision


def test_a_run_from_before_precision_resumes_as_it_ran(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """last.pt of the older layout (a `bf16` flag; a CPU run in fp32 and NCHW) resumes when the overrides
    say how it ran, and the refusal without them names those overrides."""
    run = tmp_path / "run"
    args = ["--preset", "smoke", "--data-root", str(data), "--out", str(run)]
    assert main([*args, "max_iters=2", "precision=fp32", "channels_last=false"]) == 0
    state = load_checkpoint(run / "last.pt")
    old = dict(state["config"])
    del old["precision"]
    state["config"] = {**old, "bf16": True, "channels_last": True}  # as the older version wrote it
    torch.save(state, run / "last.pt")
    capsys.readouterr()
    assert main([*args, "--resume", "max_iters=3"]) == 1
    err = capsys.readouterr().err
    assert "['channels_last', 'precision'] differ" in err
    assert "add the overrides channels_last=false precision=fp32" in err
    assert main([*args, "--resume", "max_iters=3", "channels_last=false", "precision=fp32"]) == 0
    assert load_checkpoint(run / "last.pt")["iteration"] == 3


def test_step_meter_gives_the_share_of_a_known_peak() -> None:
    """4 images a step over 2 processes in 2 s at 1 TFLOP an image: 2 TFLOP/s, 1 per device, 1% of 100."""
    meter = StepMeter(flops_per_image=10**12, peak_tflops=100.0)
    meter.add(0.5, 0.0)
    meter.start = time.perf_counter() - 2.0
    record = meter.record(
        apply_overrides(get_preset("smoke"), ["global_batch=4"]), Runtime(0, 2, 0, torch.device("cpu"))
    )
    assert record["images_per_s"] == pytest.approx(2.0, rel=0.1)  # 2 s, and the little time since
    assert record["model_tflops_per_s"] == pytest.approx(record["images_per_s"])
    assert record["mfu"] == pytest.approx(record["images_per_s"] / 2 / 100)
    summary = speed_summary([{**record, "iteration": 1}, {**record, "iteration": 2}])
    assert summary["mfu"] == pytest.approx(record["mfu"])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--preset", "nope"], 2, "unknown preset 'nope'; valid presets: cpu-default, smoke"),
        (["--preset", "smoke", "epochz=3"], 2, "unknown config key 'epochz'"),
        (["--preset", "smoke", "epochs=x"], 2, "bad value 'x' for 'epochs'"),
        (["--preset", "smoke", "model=hrnet_w99"], 1, "unknown model 'hrnet_w99'"),
    ],
)
def test_bad_command_lines_give_clear_errors(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], code: int, message: str
) -> None:
    assert main([*args, "--data-root", str(data), "--out", str(tmp_path / "run")]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_data_root_gives_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["--preset", "smoke", "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
        == 1
    )
    assert f"data root {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert (
        main(["--preset", "smoke", "--data-root", str(tmp_path / "file"), "--out", str(tmp_path / "r")]) == 1
    )
    assert f"--data-root {tmp_path / 'file'} is a file; name the WFLW root folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        main(["--preset", "smoke", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 1
    )
    assert "no WFLW training annotations at" in capsys.readouterr().err


def test_a_crop_cache_that_cannot_be_written_is_a_clear_error(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache folder under a file, one without write permission (a PermissionError once), and a disk too
    full for the cache (a SIGBUS once): each an error naming the folder and the ways out."""
    args = ["--preset", "smoke", "cache=true", "--data-root", str(data), "--out", str(tmp_path / "run")]
    (tmp_path / "file").write_text("")
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *more: object, **options: object) -> None:
        if self.name == "denied":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *more, **options)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "mkdir", mkdir)
    cases = [
        (tmp_path / "file" / "cache", f"cannot write the face-crop cache {tmp_path / 'file' / 'cache'}"),
        (tmp_path / "denied", f"cannot write the face-crop cache {tmp_path / 'denied'}/crops-"),
        (tmp_path / "full", f"no space left on the device of {tmp_path / 'full'}"),
    ]
    for cache_dir, message in cases:
        if cache_dir.name == "full":
            monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
        assert main([*args, "--cache-dir", str(cache_dir)]) == 1
        err = capsys.readouterr().err
        assert (
            message in err
            and "put it elsewhere with --cache-dir DIR, or train without it (cache=false)" in err
        )
        assert "Traceback" not in err


def test_pretrained_weights_that_run_code_are_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--pretrained with a file whose pickle calls a function: refused, naming the opt-in, nothing run."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "imagenet.pth"
    torch.save({"model": RunsCode(marker)}, evil)
    args = ["--preset", "smoke", "--data-root", str(data), "--out", str(tmp_path / "run")]
    assert main([*args, "--pretrained", str(evil)]) == 1
    err = capsys.readouterr().err
    assert f"--pretrained {evil}: refused: it holds objects of" in err and "--trust-checkpoint" in err
    assert not marker.exists() and not (tmp_path / "run" / "last.pt").exists()


class RunsCode:
    """Pickles as a call of Path.touch on `marker` (what a hostile file would do with os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_existing_run_is_not_overwritten(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert (
        main(["--preset", "smoke", "--data-root", str(data), "--out", str(run), "max_iters=1", "--resume"])
        == 0
    )
    assert "no checkpoint at" in capsys.readouterr().out  # --resume with nothing to resume starts a run
    assert main(["--preset", "smoke", "--data-root", str(data), "--out", str(run)]) == 1
    assert "already holds a run" in capsys.readouterr().err
    # Resuming with a changed recipe is refused; with a larger step budget it continues.
    assert main(["--preset", "smoke", "--data-root", str(data), "--out", str(run), "--resume", "lr=1"]) == 1
    assert "['lr'] differ" in capsys.readouterr().err
    assert (
        main(["--preset", "smoke", "--data-root", str(data), "--out", str(run), "--resume", "max_iters=2"])
        == 0
    )
    assert load_checkpoint(run / "last.pt")["iteration"] == 2
    assert json.loads((run / "summary.json").read_text())["iterations"] == 2
    # config.json describes the run as it now is, and keeps every session (the refused one is not one)
    info = json.loads((run / "config.json").read_text())
    assert info["config"]["max_iters"] == 2 and info["total_iters"] == 2
    assert [s["from_iteration"] for s in info["sessions"]] == [0, 1]
    assert "max_iters=1" in info["sessions"][0]["command"] and "max_iters=2" in info["sessions"][1]["command"]
    assert info["command"] == info["sessions"][1]["command"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Step 0 at a normal lr, then a 1e30 lr blows the weights up: the run stops with a message."""
    run = tmp_path / "run"
    overrides = ["lr=1e30", "warmup_ratio=1e-33", "warmup_iters=2", "ckpt_every=1"]
    code = main(["--preset", "smoke", "--data-root", str(data), "--out", str(run), *overrides])
    err = capsys.readouterr().err
    assert code == 1
    assert "training stopped before this update; the last good checkpoint is" in err
    last = load_checkpoint(run / "last.pt")
    assert 1 <= last["iteration"] <= 3
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_out_of_memory_names_the_setting_to_change(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that does not fit (CUDA's out-of-memory error, raised here in the third step) stops the run
    with the per_device_batch that halves the pass, keeping the last good checkpoint."""
    real = loop.forward_backward
    calls = []

    def third_step_runs_out(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "forward_backward", third_step_runs_out)
    run = tmp_path / "run"
    code = main(["--preset", "smoke", "--data-root", str(data), "--out", str(run), "ckpt_every=1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "out of memory in iteration 2: passes of 4 images do not fit on this device" in err
    assert "set per_device_batch=2 (gradient accumulation keeps the global batch at 4)" in err
    assert f"the last good checkpoint is {run / 'last.pt'} (iteration 2)" in err
    assert load_checkpoint(run / "last.pt")["iteration"] == 2
    assert "one image does not fit" in out_of_memory_advice(1, 4, torch.device("cpu"))


def test_pretrained_imagenet_backbone_is_loaded(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """ImageNet weights in the official/timm layout (timm's hrnet_w18, random here) initialise the backbone;
    with lr 0 the saved convolution weights are exactly timm's, the head keeps the seed's initialisation."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    imagenet = timm.create_model("hrnet_w18", pretrained=False).state_dict()
    torch.save(imagenet, tmp_path / "hrnet_w18_imagenet.pth")
    run = tmp_path / "run"
    args = [
        "--preset",
        "smoke",
        "--data-root",
        str(data),
        "--out",
        str(run),
        "model=hrnetv2_w18",
        "max_iters=1",
    ]
    assert main([*args, "--pretrained", str(tmp_path / "hrnet_w18_imagenet.pth"), "lr=0"]) == 0
    weights = load_checkpoint(run / "last.pt")["model"]
    for name in ("conv1.weight", "layer1.0.conv2.weight", "stage4.2.fuse_layers.3.0.0.0.weight"):
        assert torch.equal(weights[name], imagenet[name]), name
    torch.manual_seed(0)
    assert torch.equal(weights["head.3.weight"], build_model("hrnetv2_w18").state_dict()["head.3.weight"])
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    args[5] = str(tmp_path / "r2")
    assert main([*args, "--pretrained", str(wrong)]) == 1
    assert f"--pretrained {wrong}" in capsys.readouterr().err
