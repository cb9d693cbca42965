"""Synthetic WFLW: procedurally drawn faces with 98 meaningful landmarks, written in the official layout.

Why: the project must run end to end (train, evaluate, book) on a machine without WFLW or a GPU, through
the same reader and pipeline as the real data. Every landmark lies on drawn structure (contour of the
skin polygon, brow outlines, bridge line, nostril line, eyelids, lip outlines, pupils), so a CNN can learn
them, and each of the six attribute flags is 1 exactly when its effect was drawn.

Geometry lives in a normalised face frame: x to the image right, y down, origin between the outer eye
corners, 1 unit = the inter-ocular distance of the average face. Each point also has a depth, so a
yaw-like turn foreshortens one side and shifts the nose and mouth. Rendering is deterministic given a
`FaceSpec`; all random choices (the effect parameters included) are drawn in `sample_face` whatever the
flags, so turning one effect on or off (`dataclasses.replace(spec, effects=...)`) changes only that effect.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hrnet_lib.data.wflw import (
    ANNOTATION_DIR,
    ATTRIBUTES,
    IMAGE_DIR,
    NUM_KEYPOINTS,
    SPLIT_DIR,
    SUBSET_DIR,
    SUBSET_FILES,
    TEST_LIST_FILE,
)
from hrnet_lib.io import atomic_bytes, prepare_output

# Per-face probability of each effect, about the share of WFLW test faces with that flag.
EFFECT_RATES: dict[str, float] = {
    "pose": 0.13,
    "expression": 0.13,
    "illumination": 0.28,
    "makeup": 0.08,
    "occlusion": 0.29,
    "blur": 0.31,
}
JPEG_QUALITY = 90
LONG_SIDE = 1024  # WIDER Face images are 1024 px wide
EVENTS = (
    "0--Parade", "1--Handshaking", "2--Demonstration", "4--Dancing", "7--Cheering", "9--Press_Conference",
    "12--Group", "13--Interview", "20--Family_Group", "21--Festival", "22--Picnic", "26--Soldier_Drilling",
    "29--Students_Schoolkids", "36--Football", "37--Soccer", "43--Row_Boat", "49--Greeting", "51--Dresses",
    "54--Rescue", "61--Street_Battle",
)  # fmt: skip
_SPLIT_CODE = {"train": 1, "test": 2}
_SHIFT = 4  # cv2 fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT


# ----------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Identity:
    """Shape and colour of one person (all lengths in normalised face units)."""

    face_w: float = 0.84  # contour half-width at the temples (point 0)
    contour_top: float = -0.15  # y of contour points 0 and 32
    chin: float = 1.32  # y of the chin (point 16)
    jaw: float = 2.3  # superellipse exponent of the jaw: 2 round, larger square
    eye_cx: float = 0.35  # |x| of each eye centre
    eye_hw: float = 0.15  # eye half-width
    eye_up: float = 0.065  # upper-lid height above the corner line
    eye_lo: float = 0.045  # lower-lid depth below the corner line
    eye_tilt: float = -0.01  # y of the outer corners relative to the inner ones
    iris_r: float = 0.075
    brow_y: float = -0.22  # lower edge of the brow at its middle
    brow_arch: float = 0.04
    brow_thick: float = 0.06
    brow_inner: float = 0.13  # |x| of the inner brow end
    brow_outer: float = 0.62  # |x| of the outer brow end
    brow_slant: float = 0.03  # outer end lower (+) or higher (-) than the inner end
    nose_len: float = 0.42  # y of the nose tip (54)
    nose_w: float = 0.16  # |x| of the nose wings (55, 59)
    mouth_frac: float = 0.36  # mouth corners between nose base (0) and chin (1)
    mouth_hw: float = 0.28
    lip_up: float = 0.08
    lip_lo: float = 0.1
    cupid: float = 0.015  # dip of the upper lip's middle (79)
    skin: tuple[float, float, float] = (140.0, 165.0, 210.0)  # BGR
    hair: tuple[float, float, float] = (40.0, 45.0, 60.0)
    brow: tuple[float, float, float] = (45.0, 50.0, 65.0)
    iris: tuple[float, float, float] = (40.0, 70.0, 110.0)
    clothes: tuple[float, float, float] = (120.0, 80.0, 60.0)
    hair_style: int = 1  # 0 none, 1 short, 2 long, 3 big
    hairline: float = -0.78  # y of the hairline's middle


@dataclass(frozen=True)
class Expression:
    """Deformation of the neutral face: mouth opening, smile, brow raise and frown (normalised units)."""

    gap: float = 0.0  # opening between the inner lips at the middle
    smile: float = 0.0  # lift of the mouth corners (negative: corners down)
    widen: float = 1.0  # mouth width factor
    brow_raise: float = 0.0
    frown: float = 0.0  # inner brow ends down and together


NEUTRAL = Expression()


@dataclass(frozen=True)
class FaceSpec:
    """Everything needed to draw one face deterministically.

    `effects` says which of the six attribute effects are drawn; the parameters of every effect are
    present either way, so flipping a flag with `dataclasses.replace` changes only that effect.
    """

    identity: Identity
    expression: Expression  # used only when effects["expression"]
    neutral: Expression  # the small everyday variation used otherwise
    yaw: float  # degrees, everyday small value
    pitch: float
    roll: float
    pose_yaw: float  # degrees, used instead of yaw/roll when effects["pose"]
    pose_roll: float
    gaze: tuple[float, float]
    center: tuple[float, float] = (0.0, 0.0)  # canvas pixels of the normalised origin
    scale: float = 100.0  # pixels per normalised unit
    lip_makeup: tuple[float, float, float] = (40.0, 30.0, 190.0)
    shadow_makeup: tuple[float, float, float] = (140.0, 60.0, 110.0)
    shadow_alpha: float = 0.6
    occluder: dict = field(default_factory=dict)
    light: dict = field(default_factory=dict)
    blur: dict = field(default_factory=dict)
    effects: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(ATTRIBUTES, False))

    def angles(self) -> tuple[float, float, float]:
        """(yaw, pitch, roll) in degrees as drawn."""
        if self.effects["pose"]:
            return self.pose_yaw, self.pitch, self.pose_roll
        return self.yaw, self.pitch, self.roll


@dataclass
class RenderedFace:
    """What `render_face` drew, so tests can check each effect against its flag."""

    landmarks: np.ndarray  # (98, 2) canvas pixels
    covered: np.ndarray  # (98,) bool: landmarks under the occluder
    region: tuple[int, int, int, int]  # x0 y0 x1 y1 of the light and blur effects (empty when neither)


# ------------------------------------------------------------------------------------------- sampling


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _colour(rng: np.random.Generator, base: Sequence[float], jitter: float) -> tuple[float, float, float]:
    values = np.clip(np.asarray(base, dtype=np.float64) + rng.uniform(-jitter, jitter, 3), 0, 255)
    return tuple(float(v) for v in values)  # type: ignore[return-value]


_HAIR = (
    (20, 20, 25),
    (30, 40, 60),
    (40, 60, 100),
    (70, 110, 160),
    (150, 150, 150),
    (40, 60, 150),
    (110, 50, 120),
)
_IRIS = ((30, 50, 90), (40, 70, 110), (150, 110, 60), (90, 120, 70), (110, 110, 100), (20, 30, 40))
_LIPSTICK = ((40, 30, 200), (40, 20, 140), (150, 90, 235), (95, 40, 125), (80, 110, 245), (50, 30, 30))
_SHADOW = ((150, 60, 120), (170, 110, 40), (60, 110, 150), (60, 140, 70), (40, 170, 210), (30, 30, 30))


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random person: face proportions, feature shapes and colours."""
    tone = rng.uniform()
    light, dark = np.array([175.0, 200.0, 240.0]), np.array([45.0, 65.0, 110.0])
    skin = _colour(rng, light + (dark - light) * tone, 12)
    hair = _colour(rng, _HAIR[rng.integers(len(_HAIR))], 15)
    brow = _colour(rng, np.minimum(hair, np.array(skin) * 0.55), 8)
    return Identity(
        face_w=_uniform(rng, 0.76, 0.94),
        contour_top=_uniform(rng, -0.24, -0.06),
        chin=_uniform(rng, 1.15, 1.45),
        jaw=_uniform(rng, 2.0, 3.0),
        eye_cx=_uniform(rng, 0.32, 0.38),
        eye_hw=_uniform(rng, 0.125, 0.165),
        eye_up=_uniform(rng, 0.05, 0.08),
        eye_lo=_uniform(rng, 0.032, 0.055),
        eye_tilt=_uniform(rng, -0.03, 0.02),
        iris_r=_uniform(rng, 0.065, 0.085),
        brow_y=_uniform(rng, -0.27, -0.18),
        brow_arch=_uniform(rng, 0.0, 0.07),
        brow_thick=_uniform(rng, 0.035, 0.08),
        brow_inner=_uniform(rng, 0.1, 0.17),
        brow_outer=_uniform(rng, 0.56, 0.68),
        brow_slant=_uniform(rng, -0.03, 0.06),
        nose_len=_uniform(rng, 0.36, 0.5),
        nose_w=_uniform(rng, 0.12, 0.2),
        mouth_frac=_uniform(rng, 0.3, 0.42),
        mouth_hw=_uniform(rng, 0.22, 0.33),
        lip_up=_uniform(rng, 0.05, 0.1),
        lip_lo=_uniform(rng, 0.07, 0.13),
        cupid=_uniform(rng, 0.0, 0.03),
        skin=skin,
        hair=hair,
        brow=brow,
        iris=_colour(rng, _IRIS[rng.integers(len(_IRIS))], 15),
        clothes=_colour(rng, rng.uniform(20, 235, 3), 0),
        hair_style=int(rng.choice(4, p=(0.1, 0.45, 0.3, 0.15))),
        hairline=_uniform(rng, -0.95, -0.7),
    )


def sample_expression(rng: np.random.Generator) -> Expression:
    """A clear expression: open mouth, smile, surprise (open mouth and raised brows) or frown."""
    kind = int(rng.integers(4))
    a, b, c = rng.uniform(size=3)
    if kind == 0:
        return Expression(gap=0.12 + 0.22 * a, brow_raise=0.03 * b)
    if kind == 1:
        return Expression(gap=0.03 + 0.08 * a, smile=0.06 + 0.06 * b, widen=1.1 + 0.15 * c)
    if kind == 2:
        return Expression(gap=0.1 + 0.2 * a, brow_raise=0.08 + 0.04 * b, widen=0.85 + 0.1 * c)
    return Expression(frown=0.05 + 0.04 * a, smile=-0.02 - 0.03 * b, brow_raise=-0.02 * c)


def sample_face(rng: np.random.Generator, effects: Mapping[str, bool] | None = None) -> FaceSpec:
    """Draw every parameter of a face; `effects` (default: drawn at `EFFECT_RATES`) only selects which apply.

    The random stream consumed does not depend on `effects`, so the same rng state gives the same face
    whatever flags are asked for.
    """
    identity = sample_identity(rng)
    expression = sample_expression(rng)
    neutral = Expression(gap=_uniform(rng, 0.0, 0.015), smile=_uniform(rng, -0.01, 0.02))
    yaw, pitch, roll = rng.uniform(-10, 10), rng.uniform(-8, 8), rng.uniform(-10, 10)
    mode = int(rng.integers(3))  # large roll, large yaw, or both
    sign_yaw, sign_roll = rng.choice((-1.0, 1.0), size=2)
    pose_yaw = sign_yaw * rng.uniform(28, 42) if mode != 0 else yaw
    pose_roll = sign_roll * rng.uniform(25, 50) if mode != 1 else roll
    gaze = (_uniform(rng, -0.3, 0.3), _uniform(rng, -0.15, 0.15))
    lip = _colour(rng, _LIPSTICK[rng.integers(len(_LIPSTICK))], 15)
    shadow = _colour(rng, _SHADOW[rng.integers(len(_SHADOW))], 15)
    occluder = {
        "kind": int(rng.integers(4)),  # 0 blob (hand), 1 band (glasses, scarf), 2 mask, 3 polygon
        "anchor": int(rng.integers(NUM_KEYPOINTS)),
        "size": _uniform(rng, 0.25, 0.45),
        "angle": _uniform(rng, 0, 180),
        "colour": _colour(rng, rng.uniform(15, 240, 3), 0),
        "stripes": bool(rng.uniform() < 0.4),
        "shape": rng.uniform(0.6, 1.0, 7),
    }
    light = {
        "kind": int(rng.integers(3)),  # 0 dim, 1 and 2 directional
        "dim": _uniform(rng, 0.25, 0.45),
        "low": _uniform(rng, 0.15, 0.4),
        "high": _uniform(rng, 1.05, 1.35),
        "direction": _uniform(rng, 0, 2 * math.pi),
        "tint": tuple(float(v) for v in rng.uniform(0.85, 1.1, 3)),
    }
    blur = {
        "kind": int(rng.integers(2)),
        "amount": _uniform(rng, 0.02, 0.045),
        "angle": _uniform(rng, 0, 180),
    }
    flags = {name: bool(rng.uniform() < EFFECT_RATES[name]) for name in ATTRIBUTES}
    if effects is not None:
        flags = {name: bool(effects.get(name, False)) for name in ATTRIBUTES}
    return FaceSpec(
        identity=identity,
        expression=expression,
        neutral=neutral,
        yaw=float(yaw),
        pitch=float(pitch),
        roll=float(roll),
        pose_yaw=float(pose_yaw),
        pose_roll=float(pose_roll),
        gaze=gaze,
        lip_makeup=lip,
        shadow_makeup=shadow,
        shadow_alpha=_uniform(rng, 0.45, 0.75),
        occluder=occluder,
        light=light,
        blur=blur,
        effects=flags,
    )


# ------------------------------------------------------------------------------------------- geometry


def _resample(curve: np.ndarray, count: int) -> np.ndarray:
    """`count` points evenly spaced by arc length along a polyline (N, 2)."""
    steps = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    at = np.linspace(0.0, arc[-1], count)
    return np.stack([np.interp(at, arc, curve[:, 0]), np.interp(at, arc, curve[:, 1])], axis=1)


def _half_contour(idn: Identity) -> np.ndarray:
    """Contour points 0..16 (image-left temple down to the chin), frontal."""
    centre = idn.contour_top - 0.1
    height = idn.chin - centre
    start = math.asin(min(0.1 / height, 0.9))
    phi = np.linspace(start, math.pi / 2, 120)
    power = 2.0 / idn.jaw
    x = -idn.face_w / math.cos(start) ** power * np.cos(phi) ** power
    y = centre + height * np.sin(phi) ** power
    curve = np.stack([x, y], axis=1)
    curve[-1] = (0.0, idn.chin)
    return _resample(curve, 17)


def _mirror(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0])


def _brow(idn: Identity, exp: Expression, side: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower brow edges at u = 0 (outer end) .. 1 (inner end), 5 samples each, for one side."""
    u = np.linspace(0.0, 1.0, 5)
    inner = idn.brow_inner - 0.5 * exp.frown
    x = side * (idn.brow_outer + (inner - idn.brow_outer) * u)
    base = (
        idn.brow_y
        - exp.brow_raise
        + idn.brow_slant * (0.5 - u)
        - (idn.brow_arch + 0.5 * max(exp.brow_raise, 0.0)) * np.sin(math.pi * u) ** 0.8
        + exp.frown * u**2
    )
    lower = np.stack([x, base], axis=1)
    upper = np.stack([x, base - idn.brow_thick * (0.45 + 0.55 * u)], axis=1)
    return upper, lower


def _eye(idn: Identity, side: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid at u = 0 (outer corner) .. 1 (inner corner), 5 samples each, for one side."""
    u = np.linspace(0.0, 1.0, 5)
    x = side * (idn.eye_cx + idn.eye_hw * (1.0 - 2.0 * u))
    line = idn.eye_tilt * (1.0 - u)
    bump = np.sin(math.pi * u)
    upper = np.stack([x, line - idn.eye_up * bump**0.85], axis=1)
    lower = np.stack([x, line + idn.eye_lo * bump], axis=1)
    return upper, lower


def _mouth(idn: Identity, exp: Expression) -> dict[str, np.ndarray]:
    """Outer and inner lip curves of the mouth, each as x, y arrays at fixed positions t in [-1, 1]."""
    nose_base = idn.nose_len + 0.07
    mouth_y = nose_base + idn.mouth_frac * (idn.chin - nose_base)
    half = idn.mouth_hw * exp.widen
    gap = exp.gap

    def baseline(t: np.ndarray) -> np.ndarray:
        return mouth_y - exp.smile * t**2

    t_up = np.array([-1.0, -0.64, -0.22, 0.0, 0.22, 0.64, 1.0])
    outer_up = baseline(t_up) - gap * 0.1 - idn.lip_up * (1 - t_up**2) ** 0.5
    outer_up = outer_up + idn.cupid * np.exp(-((t_up / 0.18) ** 2))
    t_in = np.array([-0.92, -0.5, 0.0, 0.5, 0.92])
    open_in = np.sqrt(np.clip(1 - (t_in / 0.92) ** 2, 0, 1))
    inner_up = baseline(t_in) - 0.1 * gap * open_in
    t_lo = np.array([0.68, 0.34, 0.0, -0.34, -0.68])  # 83..87 run from the image-right corner back
    open_lo = np.sqrt(np.clip(1 - (t_lo / 0.92) ** 2, 0, 1))
    inner_lo_at = baseline(t_lo) + 0.9 * gap * open_lo
    outer_lo = inner_lo_at + idn.lip_lo * (1 - t_lo**2) ** 0.6
    t_inlo = np.array([0.5, 0.0, -0.5])  # 93..95
    inner_lo = baseline(t_inlo) + 0.9 * gap * np.sqrt(1 - (t_inlo / 0.92) ** 2)
    return {
        "outer_up": np.stack([half * t_up, outer_up], axis=1),
        "outer_lo": np.stack([half * t_lo, outer_lo], axis=1),
        "inner_up": np.stack([half * t_in, inner_up], axis=1),
        "inner_lo": np.stack([half * t_inlo, inner_lo], axis=1),
        "mouth_y": np.array([mouth_y]),
    }


def _face_shape(idn: Identity, exp: Expression, gaze: tuple[float, float]) -> np.ndarray:
    """The 98 landmarks (98, 3) of a frontal face in normalised units, with a depth per point."""
    pts = np.zeros((NUM_KEYPOINTS, 3))
    half = _half_contour(idn)
    contour = np.concatenate([half, _mirror(half[:16])[::-1]])
    nose_base = idn.nose_len + 0.07
    jaw_drop = np.clip((contour[:, 1] - nose_base) / (idn.chin - nose_base), 0, 1) ** 1.5
    contour[:, 1] += 0.7 * exp.gap * jaw_drop
    pts[0:33, :2] = contour
    progress = 1.0 - np.abs(np.arange(33) - 16) / 16.0
    pts[0:33, 2] = -0.15 + 0.25 * progress**1.5

    for side, first in ((-1.0, 33), (1.0, 42)):
        upper, lower = _brow(idn, exp, side)
        if side < 0:  # 33 outer tip, 34-37 upper edge outer->inner, 38-41 lower edge inner->outer
            brow = np.concatenate([(upper[:1] + lower[:1]) / 2, upper[1:], lower[:0:-1]])
        else:  # 42-45 upper edge inner->outer, 46 outer tip, 47-50 lower edge outer->inner
            brow = np.concatenate([upper[:0:-1], (upper[:1] + lower[:1]) / 2, lower[1:]])
        pts[first : first + 9, :2] = brow
        pts[first : first + 9, 2] = 0.02 - 0.12 * np.abs(brow[:, 0])

    bridge_y = np.linspace(0.0, idn.nose_len, 4)
    pts[51:55, 1] = bridge_y
    pts[51:55, 2] = 0.05 + 0.3 * (bridge_y / idn.nose_len) ** 1.3
    w = idn.nose_w
    pts[55:60, :2] = [(-w, nose_base - 0.03), (-w / 2, nose_base), (0, nose_base + 0.01)] + [
        (w / 2, nose_base),
        (w, nose_base - 0.03),
    ]
    pts[55:60, 2] = [0.12, 0.22, 0.27, 0.22, 0.12]

    for side, first in ((-1.0, 60), (1.0, 68)):
        upper, lower = _eye(idn, side)
        if side < 0:  # 60 outer corner, 61-63 upper outer->inner, 64 inner corner, 65-67 lower inner->outer
            eye = np.concatenate([upper[:4], upper[4:], lower[3:0:-1]])
        else:  # 68 inner corner, 69-71 upper inner->outer, 72 outer corner, 73-75 lower outer->inner
            eye = np.concatenate([upper[::-1][:4], upper[:1], lower[1:4]])
        pts[first : first + 8, :2] = eye
        pts[first : first + 8, 2] = -0.02 - 0.15 * np.abs(np.abs(eye[:, 0]) - 0.2)
    eye_r = (pts[68, :2] + pts[72, :2]) / 2
    eye_l = (pts[60, :2] + pts[64, :2]) / 2
    for index, centre in ((96, eye_l), (97, eye_r)):
        pts[index, :2] = centre + (gaze[0] * idn.eye_hw, gaze[1] * idn.eye_up)
        pts[index, 2] = 0.0

    mouth = _mouth(idn, exp)
    pts[76:83, :2] = mouth["outer_up"]
    pts[83:88, :2] = mouth["outer_lo"]
    pts[88:93, :2] = mouth["inner_up"]
    pts[93:96, :2] = mouth["inner_lo"]
    half_mouth = idn.mouth_hw * exp.widen
    pts[76:96, 2] = 0.02 + 0.14 * (1 - np.clip(np.abs(pts[76:96, 0]) / half_mouth, 0, 1) ** 2)
    return pts


def template_landmarks(identity: Identity | None = None) -> np.ndarray:
    """Frontal, neutral 98 landmarks (98, 2) in normalised units (origin between the outer eye corners)."""
    return _face_shape(identity or Identity(), NEUTRAL, (0.0, 0.0))[:, :2].copy()


def _points3(x: np.ndarray, y: np.ndarray, depth: float) -> np.ndarray:
    return np.stack([x, y, np.full_like(x, depth)], axis=1)


def _aux_shape(idn: Identity, exp: Expression) -> dict[str, np.ndarray]:
    """Unlabelled structure (N, 3) drawn with the face: skull, hair, ears, neck, body.

    The hair stops 0.12 units above contour points 0 and 32 and well above the brows, so it never
    covers a landmark (that would be an occlusion without its flag).
    """
    a = np.linspace(0.0, math.pi, 25)  # right temple, over the top, left temple
    top = idn.contour_top
    skull_h = top + 1.2  # the crown sits 1.2 units above the eye line
    skull = _points3(idn.face_w * np.cos(a), top - skull_h * np.sin(a), -0.15)
    temple = top - 0.12
    hair_w, hair_h = idn.face_w * 1.1, skull_h * 1.1 + 0.17
    front = _points3(hair_w * np.cos(a), temple - hair_h * np.sin(a), -0.15)
    back = front
    x = np.linspace(-idn.face_w, idn.face_w, 15)
    hairline = _points3(x, idn.hairline + (temple - idn.hairline) * np.abs(x / idn.face_w) ** 3, -0.05)
    if idn.hair_style == 2:  # long: down to the shoulders behind the face
        width, low = hair_w * 1.05, idn.chin + 0.3
    elif idn.hair_style == 3:  # big: wider and higher
        back = _points3(hair_w * 1.25 * np.cos(a), temple - hair_h * 1.15 * np.sin(a), -0.15)
        width, low = hair_w * 1.2, top + 0.5
    else:
        width, low = hair_w, temple + 0.35
    ear_y = top + 0.28
    neck_w = 0.5 * idn.face_w
    chin = idn.chin + 0.7 * exp.gap
    return {
        "skull": skull,
        "fringe": np.concatenate([front, hairline]),
        "hair_back": np.concatenate([back, [[-width, low, -0.3], [width, low, -0.3]]]),
        "ears": np.array([[-idn.face_w - 0.02, ear_y, -0.35], [idn.face_w + 0.02, ear_y, -0.35]]),
        "neck": np.array(
            [
                [-neck_w, 0.6, -0.3],
                [neck_w, 0.6, -0.3],
                [neck_w * 1.05, chin + 0.9, -0.3],
                [-neck_w * 1.05, chin + 0.9, -0.3],
            ]
        ),
        "body": np.array(
            [
                [-neck_w * 1.1, chin + 0.55, -0.3],
                [neck_w * 1.1, chin + 0.55, -0.3],
                [2.3, chin + 1.0, -0.3],
                [2.6, chin + 5.0, -0.3],
                [-2.6, chin + 5.0, -0.3],
                [-2.3, chin + 1.0, -0.3],
            ]
        ),
    }


# ------------------------------------------------------------------------------------------ rendering


def _project(points: np.ndarray, spec: FaceSpec, unit: bool = False) -> np.ndarray:
    """Normalised 3-D points (N, 3) -> canvas pixels (N, 2): yaw, pitch, roll, then scale and shift."""
    yaw, pitch, roll = (math.radians(v) for v in spec.angles())
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    x1 = x * math.cos(yaw) + z * math.sin(yaw)
    z1 = -x * math.sin(yaw) + z * math.cos(yaw)
    y1 = y * math.cos(pitch) - z1 * math.sin(pitch)
    xr = x1 * math.cos(roll) - y1 * math.sin(roll)
    yr = x1 * math.sin(roll) + y1 * math.cos(roll)
    out = np.stack([xr, yr], axis=1)
    return out if unit else out * spec.scale + np.asarray(spec.center)


def _expression(spec: FaceSpec) -> Expression:
    return spec.expression if spec.effects["expression"] else spec.neutral


def face_extent(spec: FaceSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bounds at scale 1 around the origin: (landmark low, landmark high, head low, head high), each (2,).

    The head (skull, hair, ears) is what must stay inside its canvas strip.
    """
    exp = _expression(spec)
    marks = _project(_face_shape(spec.identity, exp, spec.gaze), spec, unit=True)
    aux = _aux_shape(spec.identity, exp)
    head = _project(
        np.concatenate([aux["hair_back"], aux["fringe"], aux["ears"], aux["skull"]]), spec, unit=True
    )
    head = np.concatenate([head, marks])
    return marks.min(0), marks.max(0), head.min(0), head.max(0)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _fill(img: np.ndarray, points: np.ndarray, colour: Sequence[float]) -> None:
    cv2.fillPoly(img, [_fixed(points)], tuple(colour), cv2.LINE_AA, _SHIFT)


def _line(
    img: np.ndarray, points: np.ndarray, colour: Sequence[float], thickness: int, closed: bool = False
) -> None:
    cv2.polylines(img, [_fixed(points)], closed, tuple(colour), max(1, int(thickness)), cv2.LINE_AA, _SHIFT)


def _ellipse(
    img: np.ndarray,
    centre: np.ndarray,
    axes: tuple[float, float],
    angle: float,
    colour: Sequence[float],
    thickness: int = -1,
) -> None:
    c = tuple(int(v) for v in np.round(np.asarray(centre) * _ONE))
    ax = tuple(max(1, int(round(v * _ONE))) for v in axes)
    cv2.ellipse(img, c, ax, angle, 0, 360, tuple(colour), thickness, cv2.LINE_AA, _SHIFT)


def _box(points: np.ndarray, shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int] | None:
    """Integer bounding box (x0, y0, x1, y1) of points plus a margin, clipped to the image; None if empty."""
    lo = np.floor(points.min(0) - margin).astype(int)
    hi = np.ceil(points.max(0) + margin).astype(int) + 1
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), shape[1]), min(int(hi[1]), shape[0])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _composite(img: np.ndarray, box: tuple[int, int, int, int], layer: np.ndarray, mask: np.ndarray) -> None:
    """img[box] = layer where mask (uint8 0..255 coverage), blending the anti-aliased edge."""
    x0, y0, x1, y1 = box
    roi = img[y0:y1, x0:x1]
    alpha = (mask.astype(np.float32) * (1.0 / 255.0))[..., None]
    roi[:] = (layer.astype(np.float32) * alpha + roi.astype(np.float32) * (1.0 - alpha) + 0.5).astype(
        np.uint8
    )


def _blend_shape(img: np.ndarray, points: np.ndarray, colour, alpha: float, thickness: int = 0) -> None:
    """Draw a filled polygon (thickness 0) or a polyline with opacity `alpha`."""
    box = _box(points, img.shape, thickness + 2)
    if box is None:
        return
    x0, y0, x1, y1 = box
    roi = img[y0:y1, x0:x1]
    layer = roi.copy()
    local = points - (x0, y0)
    if thickness:
        _line(layer, local, colour, thickness)
    else:
        _fill(layer, local, colour)
    cv2.addWeighted(layer, alpha, roi, 1.0 - alpha, 0.0, dst=roi)


def _shade(colour: Sequence[float], factor: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, c * factor)) for c in colour)  # type: ignore[return-value]


def _effect_window(
    shape: tuple[int, ...], marks: np.ndarray
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Region of light and blur effects around a face and its weight (H, W) float32: 1 over every landmark,
    falling smoothly to 0 further out, so the effect has no visible edge."""
    centre = (marks.min(0) + marks.max(0)) / 2
    size = float((marks.max(0) - marks.min(0)).max())
    inner, outer = 0.75 * size, 1.05 * size
    box = _box(np.array([centre - outer, centre + outer]), shape, 0)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    ys, xs = np.ogrid[y0:y1, x0:x1]
    r = np.sqrt((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2)
    t = np.clip((outer - r) / (outer - inner), 0, 1)
    return box, (t * t * (3 - 2 * t)).astype(np.float32)


def _draw_eye(img: np.ndarray, ring: np.ndarray, pupil: np.ndarray, spec: FaceSpec, thickness: int) -> None:
    """Sclera, iris and pupil clipped to the lids, then the lid lines (eye liner when made up)."""
    idn = spec.identity
    box = _box(ring, img.shape, 2)
    if box is not None:
        x0, y0, x1, y1 = box
        local = ring - (x0, y0)
        layer = img[y0:y1, x0:x1].copy()
        _fill(layer, local, _shade((228, 232, 236), 0.75 + 0.25 * idn.skin[2] / 255))
        yaw, _, roll = spec.angles()
        radius = idn.iris_r * spec.scale
        axes = (radius * max(math.cos(math.radians(yaw)), 0.5), radius)
        centre = pupil - (x0, y0)
        _ellipse(layer, centre, axes, roll, idn.iris)
        _ellipse(layer, centre, axes, roll, _shade(idn.iris, 0.6), max(1, thickness))
        _ellipse(layer, centre, (axes[0] * 0.42, axes[1] * 0.42), roll, (15, 15, 15))
        _ellipse(layer, centre - radius * 0.3, (radius * 0.15, radius * 0.15), 0, (245, 245, 245))
        mask = np.zeros(layer.shape[:2], np.uint8)
        _fill(mask, local, (255,))
        _composite(img, box, layer, mask)
    liner = thickness * 2 + 1 if spec.effects["makeup"] else thickness + 1
    _line(img, ring[:5], (25, 25, 30), liner)
    _line(img, np.concatenate([ring[4:], ring[:1]]), _shade(idn.skin, 0.55), thickness)


def _draw_mouth(img: np.ndarray, marks: np.ndarray, spec: FaceSpec, exp: Expression, thickness: int) -> None:
    """Mouth opening, teeth, then the lower and upper lips (lipstick when made up)."""
    idn = spec.identity
    if spec.effects["makeup"]:
        lip = spec.lip_makeup
    else:
        lip = (idn.skin[0] * 0.72, idn.skin[1] * 0.66, min(255.0, idn.skin[2] * 0.97))
    inner = marks[88:96]
    _fill(img, inner, (35, 25, 55))
    if exp.gap > 0.035:
        drop = min(0.45 * exp.gap, 0.06) * spec.scale
        roll = spec.angles()[2]
        down = np.array([-math.sin(math.radians(roll)), math.cos(math.radians(roll))]) * drop
        teeth = np.concatenate([marks[88:93], marks[92:87:-1] + down])
        _fill(img, teeth, (215, 225, 232))
    lower = np.concatenate([marks[82:88], marks[76:77], marks[88:89], marks[95:92:-1], marks[92:93]])
    upper = np.concatenate([marks[76:83], marks[92:87:-1]])
    _fill(img, lower, _shade(lip, 1.05))
    _fill(img, upper, _shade(lip, 0.9))
    _line(img, marks[88:93], _shade(lip, 0.45), thickness)
    _line(img, np.concatenate([marks[92:96], marks[88:89]]), _shade(lip, 0.6), max(1, thickness - 1))


def _draw_nose(img: np.ndarray, marks: np.ndarray, spec: FaceSpec, thickness: int) -> None:
    """Bridge highlight with side shading, nose wings, nostrils and the base line (55-59)."""
    idn = spec.identity
    bridge = marks[51:55]
    base = idn.nose_len + 0.07
    sides = []
    for side in (-1.0, 1.0):
        side_line = np.array([[side * 0.07, 0.05, 0.0], [side * 0.08, base - 0.12, 0.2]])
        sides.append(_project(side_line, spec))
    for side_line in sides:
        _blend_shape(img, side_line, _shade(idn.skin, 0.7), 0.45, thickness * 2 + 1)
    highlight = tuple(min(255.0, c * 1.1 + 30.0) for c in idn.skin)
    _blend_shape(img, bridge, highlight, 0.7, thickness * 2 + 1)
    w = idn.nose_w
    for side, index in ((-1.0, 55), (1.0, 59)):
        wing = _project(
            np.array([[side * (w - 0.02), base - 0.13, 0.15], [side * (w + 0.02), base - 0.08, 0.12]]), spec
        )
        _line(img, np.concatenate([wing, marks[index : index + 1]]), _shade(idn.skin, 0.62), thickness)
    for a, b in ((55, 56), (58, 59)):
        centre = (marks[a] + marks[b]) / 2 + (marks[51] - marks[54]) * 0.04
        size = 0.3 * float(np.linalg.norm(marks[b] - marks[a]))
        _ellipse(
            img,
            centre,
            (size * 1.1, size * 0.55),
            math.degrees(math.atan2(*(marks[b] - marks[a])[::-1])),
            (30, 30, 45),
        )
    _line(img, marks[55:60], _shade(idn.skin, 0.55), thickness)


def _occluder_polygon(spec: FaceSpec, marks: np.ndarray) -> np.ndarray:
    """Outline (N, 2) of the occluder, centred on its anchor landmark (masks: over the lower face)."""
    occ = spec.occluder
    radius = occ["size"] * spec.scale
    centre = marks[occ["anchor"]]
    angle = math.radians(occ["angle"])
    if occ["kind"] == 2:  # face mask from the middle of the nose bridge over mouth and chin
        return np.concatenate([marks[4:29], marks[53:54]])
    if occ["kind"] == 1:  # band
        rx, ry, t = radius * 1.8, radius * 0.4, np.linspace(0, 2 * math.pi, 4, endpoint=False) + math.pi / 4
        local = np.stack([rx * np.sign(np.cos(t)), ry * np.sign(np.sin(t))], 1)
    elif occ["kind"] == 0:  # rounded blob
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        local = np.stack([radius * np.cos(t), radius * 0.7 * np.sin(t)], 1)
    else:  # irregular polygon
        t = np.linspace(0, 2 * math.pi, 7, endpoint=False)
        local = np.stack([np.cos(t), np.sin(t)], 1) * (radius * occ["shape"])[:, None]
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return local @ rot.T + centre


def _occlude(img: np.ndarray, spec: FaceSpec, marks: np.ndarray) -> np.ndarray:
    """Paint the opaque occluder; return which landmarks it covers (98,) bool."""
    occ = spec.occluder
    covered = np.zeros(NUM_KEYPOINTS, bool)
    polygon = _occluder_polygon(spec, marks)
    box = _box(polygon, img.shape, 2)
    if box is None:
        return covered
    x0, y0, x1, y1 = box
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _fill(mask, polygon - (x0, y0), (255,))
    colour = (
        occ["colour"]
        if occ["kind"] != 2
        else _shade(occ["colour"], 0.4)
        if occ["stripes"]
        else (235, 230, 215)
    )
    layer = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    layer[:] = np.round(colour).astype(np.uint8)
    if occ["stripes"]:
        step = max(4, int(spec.scale * 0.08))
        for k in range(-layer.shape[0], layer.shape[1], step * 2):
            cv2.line(layer, (k, 0), (k + layer.shape[0], layer.shape[0]), _shade(colour, 0.55), step // 2 + 1)
    _composite(img, box, layer, mask)
    pix = np.round(marks).astype(int)
    inside = (pix[:, 0] >= x0) & (pix[:, 0] < x1) & (pix[:, 1] >= y0) & (pix[:, 1] < y1)
    covered[inside] = mask[pix[inside, 1] - y0, pix[inside, 0] - x0] >= 128
    return covered


def _relight(img: np.ndarray, spec: FaceSpec, box: tuple[int, int, int, int], weight: np.ndarray) -> None:
    """Strong directional light (one side bright, the other in shadow) or dim light over the face region."""
    light = spec.light
    x0, y0, x1, y1 = box
    roi = img[y0:y1, x0:x1]
    h, w = roi.shape[:2]
    if light["kind"] == 0:
        factor = np.full((h, w), light["dim"], np.float32)
    else:
        d = light["direction"]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        u = ((xs - w / 2) * math.cos(d) + (ys - h / 2) * math.sin(d)) / (0.5 * math.hypot(w, h))
        u = np.clip((u + 1) / 2, 0, 1) ** (1 if light["kind"] == 1 else 2)
        factor = light["low"] + (light["high"] - light["low"]) * u
    feather = weight
    factor = 1.0 + (factor - 1.0) * feather
    tint = np.asarray(light["tint"], np.float32)
    scale = factor[..., None] * (1.0 + (tint - 1.0) * feather[..., None])
    roi[:] = np.clip(roi.astype(np.float32) * scale, 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, spec: FaceSpec, box: tuple[int, int, int, int], weight: np.ndarray) -> None:
    """Gaussian (defocus) or motion blur of the face region, feathered into the surroundings."""
    blur = spec.blur
    x0, y0, x1, y1 = box
    roi = img[y0:y1, x0:x1]
    amount = blur["amount"] * spec.scale
    if blur["kind"] == 0:
        sigma = max(1.6, amount)
        blurred = cv2.GaussianBlur(roi, (0, 0), sigma)
    else:
        length = max(5, int(round(2.5 * amount)) | 1)
        kernel = np.zeros((length, length), np.float32)
        half = length // 2
        a = math.radians(blur["angle"])
        dx, dy = half * math.cos(a), half * math.sin(a)
        cv2.line(
            kernel,
            (int(round(half - dx)), int(round(half - dy))),
            (int(round(half + dx)), int(round(half + dy))),
            1.0,
            1,
        )
        blurred = cv2.filter2D(roi, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
    feather = weight[..., None]
    roi[:] = (blurred.astype(np.float32) * feather + roi.astype(np.float32) * (1 - feather) + 0.5).astype(
        np.uint8
    )


def render_face(canvas: np.ndarray, spec: FaceSpec) -> RenderedFace:
    """Draw one placed face onto `canvas` (H, W, 3 uint8 BGR, in place) with exactly the effects in `spec`."""
    idn = spec.identity
    exp = _expression(spec)
    shape3 = _face_shape(idn, exp, spec.gaze)
    marks = _project(shape3, spec)
    aux = {name: _project(points, spec) for name, points in _aux_shape(idn, exp).items()}
    th = max(1, int(round(spec.scale * 0.013)))
    roll = spec.angles()[2]

    _fill(canvas, aux["body"], idn.clothes)
    _fill(canvas, aux["neck"], _shade(idn.skin, 0.78))
    if idn.hair_style:
        _fill(canvas, aux["hair_back"], _shade(idn.hair, 0.85))
    for centre in aux["ears"]:
        _ellipse(canvas, centre, (0.1 * spec.scale, 0.2 * spec.scale), roll, _shade(idn.skin, 0.9))
    _fill(canvas, np.concatenate([marks[0:33], aux["skull"]]), idn.skin)
    glow = _project(np.array([[0.0, 0.3, 0.2]]), spec)[0]  # soft highlight down the middle of the face
    glow_outline = cv2.ellipse2Poly((0, 0), (55, 80), int(roll), 0, 360, 15) * spec.scale / 100 + glow
    _blend_shape(canvas, glow_outline, _shade(idn.skin, 1.1), 0.2)
    _line(canvas, marks[0:33], _shade(idn.skin, 0.68), th)
    if idn.hair_style:
        _fill(canvas, aux["fringe"], idn.hair)

    for first in (33, 42):
        _fill(canvas, marks[first : first + 9], idn.brow)
        _line(canvas, marks[first : first + 9], idn.brow, 1, closed=True)
    for first, pupil in ((60, 96), (68, 97)):
        ring = marks[first : first + 8]
        lid3 = shape3[first : first + 5] if first == 60 else shape3[[72, 71, 70, 69, 68]]
        crease = _project(lid3 - [0.0, 0.04, 0.0], spec)
        if spec.effects["makeup"]:
            upper_lid = marks[first : first + 5] if first == 60 else marks[[72, 71, 70, 69, 68]]
            shadow = np.concatenate([upper_lid, _project(lid3 - [0.0, 0.12, 0.0], spec)[::-1]])
            _blend_shape(canvas, shadow, spec.shadow_makeup, spec.shadow_alpha)
        _blend_shape(canvas, crease, _shade(idn.skin, 0.55), 0.5, th)
        _draw_eye(canvas, ring, marks[pupil], spec, th)
    _draw_nose(canvas, marks, spec, th)
    _draw_mouth(canvas, marks, spec, exp, th)

    covered = np.zeros(NUM_KEYPOINTS, bool)
    if spec.effects["occlusion"]:
        covered = _occlude(canvas, spec, marks)
    window = None
    if spec.effects["illumination"] or spec.effects["blur"]:
        window = _effect_window(canvas.shape, marks)
    if window is not None and spec.effects["illumination"]:
        _relight(canvas, spec, *window)
    if window is not None and spec.effects["blur"]:
        _blur(canvas, spec, *window)
    return RenderedFace(landmarks=marks, covered=covered, region=window[0] if window else (0, 0, 0, 0))


# ------------------------------------------------------------------------------------- whole images


def _scene_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A random colour, mostly muted, as in photographs."""
    rgb = rng.uniform(0, 255, 3)
    grey = rgb.mean()
    return tuple(float(v) for v in grey + (rgb - grey) * rng.uniform(0.1, 1.0))  # type: ignore[return-value]


def draw_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A cluttered scene (H, W, 3) uint8: colour field, shapes, lines, stripes, text, skin-like blobs."""
    coarse = rng.uniform(0, 255, (int(rng.integers(2, 8)), int(rng.integers(2, 8)), 3))
    grey = coarse.mean(axis=2, keepdims=True)
    coarse = (grey + (coarse - grey) * rng.uniform(0.15, 0.7)).astype(np.float32)
    small = cv2.resize(coarse, (width // 8, height // 8), interpolation=cv2.INTER_CUBIC)
    small = np.clip(small, 0, 255).astype(np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    scale = max(height, width)
    for _ in range(int(rng.integers(15, 40))):
        kind = int(rng.integers(6))
        colour = _scene_colour(rng)
        x, y = rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height
        size = scale * rng.uniform(0.02, 0.25)
        if kind == 0:
            _fill(
                img,
                np.array([[x, y], [x + size * rng.uniform(0.3, 2), y], [x + size, y + size], [x, y + size]]),
                colour,
            )
        elif kind == 1:
            _ellipse(img, np.array([x, y]), (size, size * rng.uniform(0.3, 1)), rng.uniform(0, 180), colour)
        elif kind == 2:
            pts = np.array([x, y]) + rng.normal(0, size, (int(rng.integers(3, 7)), 2))
            _fill(img, pts, colour)
        elif kind == 3:
            pts = np.array([x, y]) + np.cumsum(rng.normal(0, size * 0.5, (int(rng.integers(2, 6)), 2)), 0)
            _line(img, pts, colour, int(rng.integers(1, 8)))
        elif kind == 4:  # stripes texture in a box
            box = _box(np.array([[x, y], [x + size, y + size]]), img.shape, 0)
            if box is not None:
                x0, y0, x1, y1 = box
                roi = img[y0:y1, x0:x1]
                step = int(rng.integers(4, 20))
                for k in range(-roi.shape[0], roi.shape[1], step):
                    cv2.line(roi, (k, 0), (k + roi.shape[0], roi.shape[0]), colour, max(1, step // 3))
        else:
            text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 8))))
            org = (int(x), int(y))
            cv2.putText(
                img,
                text,
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                size / 40,
                colour,
                max(1, int(size / 25)),
                cv2.LINE_AA,
            )
    for _ in range(int(rng.integers(0, 3))):  # skin-coloured distractors that are not faces
        skin = _colour(rng, (120, 150, 200), 60)
        centre = rng.uniform(0, 1, 2) * (width, height)
        _ellipse(
            img,
            centre,
            (scale * rng.uniform(0.02, 0.08), scale * rng.uniform(0.02, 0.1)),
            rng.uniform(0, 180),
            skin,
        )
    return img


def _add_noise(rng: np.random.Generator, img: np.ndarray) -> None:
    """Sensor-like noise: a random 128 px tile repeated over the image, added with saturation, in place."""
    tile = rng.normal(0.0, rng.uniform(1.0, 6.0), (128, 128, 3))
    reps_y, reps_x = img.shape[0] // 128 + 1, img.shape[1] // 128 + 1
    for part, sign in ((np.clip(tile, 0, 255), 1), (np.clip(-tile, 0, 255), -1)):
        layer = cv2.repeat(part.astype(np.uint8), reps_y, reps_x)[: img.shape[0], : img.shape[1]]
        (cv2.add if sign > 0 else cv2.subtract)(img, layer, dst=img)


def place_face(
    spec: FaceSpec, rng: np.random.Generator, area: tuple[int, int, int, int], height: float
) -> FaceSpec:
    """Place a face in `area` (x0, y0, x1, y1): landmark box about `height` px tall, whole head inside."""
    lm_lo, lm_hi, head_lo, head_hi = face_extent(spec)
    x0, y0, x1, y1 = area
    head = head_hi - head_lo
    scale = min(height / (lm_hi[1] - lm_lo[1]), 0.98 * (x1 - x0) / head[0], 0.98 * (y1 - y0) / head[1])
    cx = rng.uniform(x0 - head_lo[0] * scale, x1 - head_hi[0] * scale)
    cy = rng.uniform(y0 - head_lo[1] * scale, y1 - head_hi[1] * scale)
    return replace(spec, scale=float(scale), center=(float(cx), float(cy)))


def detector_box(rng: np.random.Generator, landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """A detector-like rectangle x_min y_min x_max y_max (integers, inside the image) around the landmarks."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    side = float((hi - lo).max()) * rng.uniform(0.9, 1.1)
    centre = (lo + hi) / 2 + rng.normal(0, 0.04 * side, 2)
    half = np.array([side * rng.uniform(0.45, 0.55), side * rng.uniform(0.45, 0.55)])
    box = np.round(np.concatenate([centre - half, centre + half]))
    return np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1])


def face_rng(seed: int, split: str, face_index: int) -> np.random.Generator:
    """The generator of one face, a function of (seed, split, index) only: any order gives the same face."""
    return np.random.default_rng([seed, _SPLIT_CODE[split], 1, face_index])


def _image_rng(seed: int, split: str, image_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODE[split], 0, image_index])


def _faces_in_image(rng: np.random.Generator) -> int:
    return int(rng.choice((1, 2, 3), p=(0.7, 0.2, 0.1)))


def plan_images(seed: int, split: str, n_faces: int) -> list[list[int]]:
    """Face indices per image: each image holds 1-3 faces, in order, `n_faces` in all."""
    images: list[list[int]] = []
    start = 0
    while start < n_faces:
        count = min(_faces_in_image(_image_rng(seed, split, len(images))), n_faces - start)
        images.append(list(range(start, start + count)))
        start += count
    return images


def forced_effects(face_index: int) -> set[str]:
    """Effects forced on whatever the draw: face i < 6 of a split shows attribute i, so no subset is empty."""
    return {ATTRIBUTES[face_index]} if face_index < len(ATTRIBUTES) else set()


@dataclass
class SyntheticFace:
    """One annotated face of a synthetic image."""

    landmarks: np.ndarray  # (98, 2) image pixels
    box: np.ndarray  # (4,) x_min y_min x_max y_max
    effects: dict[str, bool]
    covered: np.ndarray  # (98,) bool, landmarks under the occluder


def render_image(
    seed: int, split: str, image_index: int, face_indices: Sequence[int]
) -> tuple[np.ndarray, list[SyntheticFace]]:
    """Draw one image of the dataset with the given faces (one vertical strip each); deterministic."""
    rng = _image_rng(seed, split, image_index)
    _faces_in_image(rng)  # the count was drawn when planning; keep the stream aligned
    if rng.uniform() < 0.75:
        width, height = LONG_SIDE, int(rng.integers(576, 1025))
    else:
        width, height = int(rng.integers(640, 901)), LONG_SIDE
    image = draw_background(rng, height, width)
    count = len(face_indices)
    edges = np.linspace(0, width, count + 1).astype(int)
    faces = []
    for slot, face_index in enumerate(face_indices):
        frng = face_rng(seed, split, face_index)
        spec = sample_face(frng)
        forced = forced_effects(face_index)
        spec = replace(spec, effects={name: spec.effects[name] or name in forced for name in ATTRIBUTES})
        target = math.exp(frng.uniform(math.log(80), math.log(420 if count == 1 else 300)))
        spec = place_face(spec, frng, (0, 0, int(edges[slot + 1] - edges[slot]), height), target)
        strip = image[:, edges[slot] : edges[slot + 1]]
        drawn = render_face(strip, spec)
        landmarks = drawn.landmarks + (edges[slot], 0)
        faces.append(
            SyntheticFace(
                landmarks, detector_box(frng, landmarks, width, height), dict(spec.effects), drawn.covered
            )
        )
    _add_noise(rng, image)
    return image, faces


def draw_face(
    seed: int,
    effects: Mapping[str, bool] | None = None,
    size: tuple[int, int] = (512, 512),
    background: bool = True,
) -> tuple[np.ndarray, RenderedFace, FaceSpec]:
    """One face centred on a `size` (w, h) image, for tests and figures: (image BGR, what was drawn, spec).

    The same seed gives the same person, pose, background and effect parameters whatever `effects` asks,
    so renders with one effect on and off differ only by that effect. No noise, no JPEG.
    """
    rng = np.random.default_rng([seed, 7])
    width, height = size
    image = draw_background(rng, height, width) if background else np.full((height, width, 3), 128, np.uint8)
    spec = sample_face(face_rng(seed, "test", 0), effects)
    neutral = replace(spec, effects=dict.fromkeys(ATTRIBUTES, False))
    lm_lo, lm_hi, head_lo, head_hi = face_extent(neutral)
    scale = 0.6 * min(width, height) / float((head_hi - head_lo).max())
    centre = (width / 2 - scale * (lm_lo + lm_hi)[0] / 2, height / 2 - scale * (lm_lo + lm_hi)[1] / 2)
    spec = replace(spec, scale=scale, center=centre)
    return image, render_face(image, spec), spec


# ------------------------------------------------------------------------------------------- writing


def _coords(landmarks: np.ndarray) -> str:
    return " ".join(f"{v:.6f}" for v in landmarks.reshape(-1))


def image_name(seed: int, split: str, image_index: int) -> str:
    """Path relative to WFLW_images/ in WIDER style, e.g. "7--Cheering/7_Cheering_synth_train_000012.jpg"."""
    event = EVENTS[int(_image_rng(seed, split, image_index).integers(1 << 30)) % len(EVENTS)]
    number, label = event.split("--")
    return f"{event}/{number}_{label}_synth{seed}_{split}_{image_index:06d}.jpg"


def _render_jpeg(job: tuple[int, str, int, list[int]]) -> tuple[bytes, tuple[int, int], list[SyntheticFace]]:
    """Render and JPEG-encode one image of the plan (runs in a worker process when `workers` > 1)."""
    seed, split, image_index, face_indices = job
    cv2.setNumThreads(1)
    image, faces = render_image(seed, split, image_index, face_indices)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {image_name(seed, split, image_index)}")
    return jpeg.tobytes(), image.shape[:2], faces


class ExistingDatasetError(FileExistsError):
    """The root to write already holds files; the message names them and says how to replace them."""


def _written_here(relative: Path) -> bool:
    """Whether `synthesize` writes the file at `relative` (to the dataset root), or its temporary file."""
    temporary = re.fullmatch(r"\.(.+)\.tmp\d+", relative.name)
    name = temporary.group(1) if temporary else relative.name
    parts = relative.parts
    if parts[0] == IMAGE_DIR:
        if len(parts) != 3 or parts[1] not in EVENTS:
            return False
        prefix = re.escape(parts[1].replace("--", "_"))  # as `image_name` writes it
        return re.fullmatch(prefix + r"_synth\d+_(train|test)_\d{6}\.jpg", name) is not None
    annotations = [f"{SPLIT_DIR}/list_98pt_rect_attr_{split}.txt" for split in _SPLIT_CODE]
    annotations += [f"{SUBSET_DIR}/{TEST_LIST_FILE}", *(f"{SUBSET_DIR}/{f}" for f in SUBSET_FILES.values())]
    return parts[0] == ANNOTATION_DIR and "/".join((*parts[1:-1], name)) in annotations


def _foreign_files(root: Path) -> list[Path]:
    """Files in root/WFLW_images and root/WFLW_annotations that `synthesize` does not write."""
    found = []
    for folder in (root / IMAGE_DIR, root / ANNOTATION_DIR):
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            found.append(folder)
            continue
        for parent, _, files in os.walk(folder):
            found += [Path(parent, f) for f in files if not _written_here(Path(parent, f).relative_to(root))]
    return sorted(found)


def prepare_root(root: str | Path, force: bool = False) -> None:
    """Make `root` ready for `synthesize`; an absent or empty folder is used as it is.

    Any other root raises ExistingDatasetError unless `force`. With `force`, root/WFLW_images and
    root/WFLW_annotations are deleted, but only when every file in them is one the synthesiser writes
    (a real WFLW root is never deleted); other files at the root are kept.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ExistingDatasetError(f"{root}: exists and is not a folder")
    held = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if not held:
        return
    if not force:
        listed = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise ExistingDatasetError(
            f"{root} is not empty (it holds {listed}); nothing was written. Pass --force to replace the "
            "synthetic dataset there, or choose a new --root"
        )
    foreign = _foreign_files(root)
    if foreign:
        raise ExistingDatasetError(
            f"{foreign[0]} was not written by the synthesiser ({len(foreign)} such file(s) under {root}), so "
            "--force does not replace this dataset; nothing was deleted. Choose a new --root"
        )
    for folder in (root / IMAGE_DIR, root / ANNOTATION_DIR):
        if folder.exists():
            shutil.rmtree(folder)


def synthesize(
    root: Path, n_train: int, n_test: int, seed: int = 0, progress: bool = True, workers: int = 1
) -> dict:
    """Write a synthetic dataset in the official WFLW layout under `root`; return summary statistics.

    Images go to WFLW_images/<event>/<name>.jpg (JPEG quality 90), the 207-field train/test files and
    the 197-field test list and six subset lists to WFLW_annotations/, every file written atomically.
    A root that already has WFLW_annotations/ raises ExistingDatasetError (see `prepare_root`).
    Every image is a function of (seed, split, index), so `workers` processes write the same bytes as one.
    """
    root = Path(root)
    if n_train < 1 or n_test < 1:
        raise ValueError(f"need at least one train and one test face, got train={n_train} test={n_test}")
    if (root / ANNOTATION_DIR).exists():
        raise ExistingDatasetError(
            f"{root / ANNOTATION_DIR} already exists: synthesize does not write over a dataset "
            "(prepare_root(root, force=True) first replaces a synthetic one)"
        )
    start = time.perf_counter()
    plans = {"train": plan_images(seed, "train", n_train), "test": plan_images(seed, "test", n_test)}
    total = sum(len(p) for p in plans.values())
    lines: dict[str, list[str]] = {"train": [], "test": []}
    short: dict[str, list[str]] = {name: [] for name in ("all", *ATTRIBUTES)}
    counts = {split: dict.fromkeys(ATTRIBUTES, 0) for split in plans}
    bar = tqdm(total=total, desc="synthesizing", unit="img", disable=not progress)
    jobs = [(seed, split, i, faces) for split, plan in plans.items() for i, faces in enumerate(plan)]
    with contextlib.ExitStack() as stack:
        if workers > 1:
            context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
            pool = stack.enter_context(context.Pool(workers))
            rendered = pool.imap(_render_jpeg, jobs, chunksize=4)
        else:
            rendered = map(_render_jpeg, jobs)
        for (_, split, image_index, _), (jpeg, (height, width), faces) in zip(jobs, rendered, strict=True):
            name = image_name(seed, split, image_index)
            atomic_bytes(root / IMAGE_DIR / name, jpeg)
            for face in faces:
                flags = " ".join(str(int(face.effects[a])) for a in ATTRIBUTES)
                box = " ".join(str(int(v)) for v in face.box)
                lines[split].append(f"{_coords(face.landmarks)} {box} {flags} {name}")
                for a in ATTRIBUTES:
                    counts[split][a] += int(face.effects[a])
                if split == "test":
                    entry = f"{_coords(face.landmarks)} {name}"
                    short["all"].append(entry)
                    for a in ATTRIBUTES:
                        if face.effects[a]:
                            short[a].append(entry)
                if not (face.landmarks.min() >= 0 and (face.landmarks < (width, height)).all()):
                    raise RuntimeError(f"internal error: a face of {name} left its image")
            bar.update(1)
    bar.close()
    annotations = root / ANNOTATION_DIR
    for split in plans:
        text = "\n".join(lines[split]) + "\n"
        atomic_bytes(annotations / SPLIT_DIR / f"list_98pt_rect_attr_{split}.txt", text.encode())
    atomic_bytes(annotations / SUBSET_DIR / TEST_LIST_FILE, ("\n".join(short["all"]) + "\n").encode())
    for a in ATTRIBUTES:
        text = "".join(entry + "\n" for entry in short[a])
        atomic_bytes(annotations / SUBSET_DIR / SUBSET_FILES[a], text.encode())
    return {
        "root": str(root),
        "seed": seed,
        "images": {split: len(plan) for split, plan in plans.items()},
        "faces": {"train": n_train, "test": n_test},
        "attributes": counts,
        "subsets": {a: len(short[a]) for a in ATTRIBUTES},
        "seconds": round(time.perf_counter() - start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m hrnet_lib synth --root DIR [--force] --train N --test M --seed S`; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m hrnet_lib synth", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, required=True, help="dataset root to write (official WFLW layout); new or empty"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the synthetic dataset at --root (deletes its WFLW_images/ and WFLW_annotations/)",
    )
    parser.add_argument(
        "--train", type=int, default=1500, help="number of training faces (default: %(default)s)"
    )
    parser.add_argument("--test", type=int, default=500, help="number of test faces (default: %(default)s)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed (default: %(default)s); the same seed and sizes give the same files",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="rendering processes, same output (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.train < 1 or args.test < 1:
        parser.error("--train and --test must be at least 1")
    try:
        prepare_root(args.root, args.force)
        prepare_output(args.root / IMAGE_DIR, option="--root")  # writable, before any rendering
        stats = synthesize(args.root, args.train, args.test, args.seed, not args.quiet, args.workers)
    except (ExistingDatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a folder without write permission, a full disk (NoSpaceError names the file)
        print(f"error: cannot write the dataset under {args.root}: {err}", file=sys.stderr)
        return 1
    images = stats["images"]["train"] + stats["images"]["test"]
    faces = f"{args.train} train + {args.test} test faces"
    print(f"wrote {faces} in {images} images to {args.root} ({stats['seconds']} s)")
    print("test subsets: " + ", ".join(f"{a} {n}" for a, n in stats["subsets"].items()))
    return 0
