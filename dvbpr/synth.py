"""The embedded default dataset: a seeded, deterministic fashion catalogue drawn with PIL.

Nothing is downloaded. Every item is a garment silhouette (one of `CATEGORIES`) filled with one of
`COLOURS` in one of `PATTERNS`; users have hidden visual tastes (favourite colours, patterns and
categories) plus membership in a collaborative community whose favourite items are a non-visual
signal. The result is written in the dataset folder format of docs/architecture.md, together
with `hidden_tastes.json` (the ground truth tests and demos check a trained model against):

    interactions.csv   user_id,item_id,timestamp     (split derived by the loader's rule)
    items.csv          item_id,category,title,image,colour,pattern
    images/<item_id>.png
    hidden_tastes.json
    .complete          written last: the folder is a finished dataset

Guarantees the loader's chronological split rule (per user: last = test, second to last =
validation, rest train) relies on: every user has at least 5 interactions with distinct
timestamps; cold items (`cold_fraction` of the catalogue) appear only as users' last interaction,
each at least once; every other item has at least one training interaction.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple, overload

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm import tqdm

from .errors import DataError
from .fsutil import atomic_write_json, atomic_write_text

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "default"
COMPLETE_MARKER = ".complete"

# --------------------------------------------------------------------------------------------
# Vocabulary. Colours are far apart in hue/lightness so that one glance names them.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (206, 32, 41),
    "orange": (244, 128, 22),
    "yellow": (248, 208, 40),
    "green": (58, 158, 64),
    "teal": (16, 146, 150),
    "blue": (48, 118, 226),
    "navy": (28, 40, 104),
    "purple": (126, 56, 170),
    "pink": (244, 128, 182),
    "black": (36, 36, 40),
}
# Light colours get a dark pattern colour, the others a cream one, so patterns always show.
_LIGHT_COLOURS = {"yellow", "pink", "orange"}
_CREAM = np.array([250, 246, 234])


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


# Pattern functions: share (0, 0.5 or 1) of the secondary colour at each pixel, from rotated pixel
# coordinates (u, v), the repeat period in pixels and the duty (share of a period covered).
def _solid(u: np.ndarray, v: np.ndarray, period: float, duty: float) -> np.ndarray:
    return np.zeros_like(u)


def _stripes(u: np.ndarray, v: np.ndarray, period: float, duty: float) -> np.ndarray:
    return (_frac(u / period) < duty).astype(np.float32)


def _dots(u: np.ndarray, v: np.ndarray, period: float, duty: float) -> np.ndarray:
    row_h = period * 0.866  # hexagonal lattice: odd rows shifted by half a period
    row = np.floor(v / row_h)
    du = (_frac(u / period + 0.5 * (row % 2)) - 0.5) * period
    dv = (_frac(v / row_h) - 0.5) * row_h
    return (du * du + dv * dv < (duty * period) ** 2).astype(np.float32)


def _checks(u: np.ndarray, v: np.ndarray, period: float, duty: float) -> np.ndarray:
    return 0.5 * (_stripes(u, v, period, duty) + _stripes(v, u, period, duty))  # gingham


def _zigzag(u: np.ndarray, v: np.ndarray, period: float, duty: float) -> np.ndarray:
    tri = 2.0 * np.abs(_frac(u / (period * 1.2)) - 0.5)
    return _stripes(v + 0.5 * period * tri, u, period, duty)


class PatternSpec(NamedTuple):
    adjective: str  # used in titles: "Red striped dress"
    alpha: Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]
    angles: tuple[float, ...]  # rotations (degrees) to choose from, before a small jitter
    period: tuple[float, float]  # repeat range in pixels of a 256 px canvas
    duty: tuple[float, float]  # at most ~45% coverage, so the main colour dominates


_PATTERN_SPECS: dict[str, PatternSpec] = {
    "solid": PatternSpec("plain", _solid, (0.0,), (1.0, 1.0), (0.0, 0.0)),
    "stripes": PatternSpec("striped", _stripes, (0.0, 90.0, 45.0, -45.0), (16.0, 30.0), (0.30, 0.45)),
    "dots": PatternSpec("polka-dot", _dots, (0.0, 15.0, 30.0), (20.0, 32.0), (0.22, 0.30)),
    "checks": PatternSpec("checked", _checks, (0.0, 0.0, 45.0), (22.0, 36.0), (0.30, 0.42)),
    "zigzag": PatternSpec("zigzag", _zigzag, (0.0, 90.0), (18.0, 28.0), (0.35, 0.45)),
}
PATTERNS: list[str] = list(_PATTERN_SPECS)


# --------------------------------------------------------------------------------------------
# Garments, drawn in unit coordinates (x right, y down, garment centred in [0, 1]^2).
Points = list[tuple[float, float]]


def _ellipse(cx: float, cy: float, rx: float, ry: float, a0: float = 0.0, a1: float = 360.0, n: int = 40) -> Points:
    """Points on an ellipse arc (degrees, 0 = right, 90 = down); a polygon so it can rotate."""
    angles = np.radians(np.linspace(a0, a1, n, endpoint=a1 - a0 < 360.0))
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in angles]


class Garment(NamedTuple):
    body: list[tuple[str, Points]]  # ("+" adds to the silhouette, "-" cuts out), in order
    trim: list[tuple[str, Points, float]]  # ("line" polyline | "fill" polygon, points, width)


def _pleats(xs: Points) -> list[tuple[str, Points, float]]:
    return [("line", [top, bottom], 0.008) for top, bottom in zip(xs[::2], xs[1::2])]


GARMENTS: dict[str, Garment] = {
    "t-shirt": Garment(
        body=[
            (
                "+",
                [
                    (0.41, 0.17),
                    (0.22, 0.22),
                    (0.07, 0.41),
                    (0.18, 0.49),
                    (0.28, 0.41),
                    (0.28, 0.86),
                    (0.72, 0.86),
                    (0.72, 0.41),
                    (0.82, 0.49),
                    (0.93, 0.41),
                    (0.78, 0.22),
                    (0.59, 0.17),
                ]
                + _ellipse(0.5, 0.17, 0.09, 0.07, 0, 180, 12),
            )
        ],
        trim=[
            ("line", _ellipse(0.5, 0.17, 0.09, 0.07, 0, 180, 12), 0.018),
            ("line", [(0.16, 0.47), (0.10, 0.395)], 0.010),
            ("line", [(0.84, 0.47), (0.90, 0.395)], 0.010),
        ],
    ),
    "jacket": Garment(
        body=[
            (
                "+",
                [
                    (0.42, 0.13),
                    (0.25, 0.18),
                    (0.17, 0.30),
                    (0.09, 0.84),
                    (0.21, 0.86),
                    (0.29, 0.42),
                    (0.29, 0.88),
                    (0.71, 0.88),
                    (0.71, 0.42),
                    (0.79, 0.86),
                    (0.91, 0.84),
                    (0.83, 0.30),
                    (0.75, 0.18),
                    (0.58, 0.13),
                    (0.5, 0.40),
                ],
            )
        ],
        trim=[
            ("line", [(0.42, 0.13), (0.40, 0.22), (0.46, 0.30), (0.5, 0.40)], 0.010),
            ("line", [(0.58, 0.13), (0.60, 0.22), (0.54, 0.30), (0.5, 0.40)], 0.010),
            ("line", [(0.5, 0.40), (0.5, 0.88)], 0.010),
            ("line", [(0.33, 0.66), (0.44, 0.66)], 0.010),
            ("line", [(0.56, 0.66), (0.67, 0.66)], 0.010),
            ("line", [(0.10, 0.78), (0.21, 0.80)], 0.010),
            ("line", [(0.90, 0.78), (0.79, 0.80)], 0.010),
        ]
        + [("fill", _ellipse(0.53, y, 0.014, 0.014, n=12), 0.0) for y in (0.48, 0.60, 0.72)],
    ),
    "dress": Garment(
        body=[
            (
                "+",
                [
                    (0.37, 0.09),
                    (0.41, 0.09),
                    (0.43, 0.22),
                    (0.5, 0.27),
                    (0.57, 0.22),
                    (0.59, 0.09),
                    (0.63, 0.09),
                    (0.66, 0.27),
                    (0.61, 0.43),
                    (0.82, 0.88),
                    (0.66, 0.91),
                    (0.5, 0.88),
                    (0.34, 0.91),
                    (0.18, 0.88),
                    (0.39, 0.43),
                    (0.34, 0.27),
                ],
            )
        ],
        trim=[("fill", [(0.385, 0.41), (0.615, 0.41), (0.612, 0.455), (0.388, 0.455)], 0.0)]
        + _pleats([(0.45, 0.46), (0.38, 0.86), (0.55, 0.46), (0.62, 0.86)]),
    ),
    "skirt": Garment(
        body=[("+", [(0.31, 0.18), (0.69, 0.18), (0.70, 0.27), (0.85, 0.80), (0.15, 0.80), (0.30, 0.27)])],
        trim=[("line", [(0.305, 0.265), (0.695, 0.265)], 0.012)]
        + _pleats([(0.40, 0.27), (0.33, 0.79), (0.5, 0.27), (0.5, 0.79), (0.60, 0.27), (0.67, 0.79)]),
    ),
    "trousers": Garment(
        body=[
            ("+", [(0.29, 0.08), (0.71, 0.08), (0.76, 0.93), (0.545, 0.93), (0.5, 0.36), (0.455, 0.93), (0.24, 0.93)])
        ],
        trim=[
            ("line", [(0.29, 0.145), (0.71, 0.145)], 0.012),
            ("line", [(0.52, 0.145), (0.52, 0.30)], 0.008),
            ("line", [(0.33, 0.145), (0.40, 0.24)], 0.008),
            ("line", [(0.67, 0.145), (0.60, 0.24)], 0.008),
        ],
    ),
    "shorts": Garment(
        body=[("+", [(0.25, 0.24), (0.75, 0.24), (0.83, 0.70), (0.55, 0.74), (0.5, 0.47), (0.45, 0.74), (0.17, 0.70)])],
        trim=[
            ("line", [(0.255, 0.31), (0.745, 0.31)], 0.012),
            ("line", [(0.52, 0.31), (0.52, 0.43)], 0.008),
            ("line", [(0.19, 0.64), (0.455, 0.675)], 0.008),
            ("line", [(0.545, 0.675), (0.81, 0.64)], 0.008),
        ],
    ),
    "shoes": Garment(
        body=[
            (
                "+",
                [(0.10, 0.74), (0.92, 0.74), (0.94, 0.66)]
                + _ellipse(0.83, 0.64, 0.11, 0.10, -20, -100, 8)
                + [(0.62, 0.49), (0.50, 0.40), (0.47, 0.30), (0.20, 0.30), (0.13, 0.42), (0.10, 0.60)],
            )
        ],
        trim=[
            ("fill", [(0.10, 0.66), (0.94, 0.66), (0.93, 0.74), (0.10, 0.74)], 0.0),
            ("line", [(0.21, 0.36), (0.45, 0.36)], 0.010),
        ]
        + [
            ("line", [(0.50 + 0.045 * i, 0.41 + 0.03 * i), (0.55 + 0.045 * i, 0.37 + 0.03 * i)], 0.010)
            for i in range(3)
        ],
    ),
    "bag": Garment(
        body=[
            ("+", _ellipse(0.5, 0.36, 0.21, 0.24, 180, 360, 24) + _ellipse(0.5, 0.36, 0.16, 0.19, 360, 180, 24)),
            (
                "+",
                [(0.20, 0.38), (0.80, 0.38), (0.86, 0.80)]
                + _ellipse(0.78, 0.80, 0.08, 0.07, 0, 90, 8)
                + _ellipse(0.22, 0.80, 0.08, 0.07, 90, 180, 8)
                + [(0.14, 0.80)],
            ),
        ],
        trim=[
            ("line", [(0.20, 0.38), (0.25, 0.56), (0.75, 0.56), (0.80, 0.38)], 0.010),
            ("fill", _ellipse(0.5, 0.56, 0.035, 0.035, n=16), 0.0),
        ],
    ),
    "hat": Garment(
        body=[
            ("+", _ellipse(0.5, 0.66, 0.44, 0.12)),
            (
                "+",
                [(0.29, 0.66), (0.30, 0.44)]
                + _ellipse(0.5, 0.44, 0.20, 0.17, 180, 360, 20)
                + [(0.70, 0.44), (0.71, 0.66)],
            ),
        ],
        trim=[
            ("fill", [(0.294, 0.55), (0.706, 0.55), (0.709, 0.63), (0.291, 0.63)], 0.0),
            ("line", _ellipse(0.5, 0.66, 0.21, 0.05, 0, 180, 16), 0.008),
        ],
    ),
    "scarf": Garment(
        body=[
            ("+", _ellipse(0.5, 0.25, 0.25, 0.15)),
            ("-", _ellipse(0.5, 0.23, 0.17, 0.08)),
            ("+", [(0.31, 0.30), (0.45, 0.34), (0.44, 0.84), (0.30, 0.82)]),
            ("+", [(0.55, 0.34), (0.69, 0.30), (0.73, 0.80), (0.59, 0.84)]),
        ],
        trim=[
            ("line", [(0.30 + 0.028 * i, 0.82 + 0.004 * i), (0.30 + 0.028 * i, 0.90 + 0.004 * i)], 0.010)
            for i in range(6)
        ]
        + [
            ("line", [(0.59 + 0.028 * i, 0.84 - 0.008 * i), (0.59 + 0.028 * i, 0.92 - 0.008 * i)], 0.010)
            for i in range(6)
        ]
        + [("line", [(0.31, 0.40), (0.45, 0.42)], 0.008), ("line", [(0.56, 0.42), (0.70, 0.40)], 0.008)],
    ),
}
CATEGORIES: list[str] = list(GARMENTS)


def _mix(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    return a + (b - a) * t


_SHADOW_LUT = [round(0.2 * v) for v in range(256)]  # shadow darkens the background by up to 20%
_OUTLINE_LUT = [min(255, 4 * v) for v in range(256)]  # blurred mask -> outline band a few px wide


def _rgb(colour) -> tuple[int, int, int]:
    return tuple(int(c + 0.5) for c in colour)


@lru_cache(maxsize=4)
def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    return xx, yy


@lru_cache(maxsize=4)
def _top_light(side: int) -> Image.Image:
    """Multiplier image (255 = 1.0) darkening the fabric towards the bottom, for a soft 3D look."""
    ramp = np.linspace(255, 215, side).astype(np.uint8)
    return Image.fromarray(np.repeat(np.repeat(ramp[:, None, None], side, 1), 3, 2), "RGB")


@overload
def render_item(
    category: str,
    colour: str,
    pattern: str,
    size: int = ...,
    seed: int | list[int] = ...,
    with_mask: Literal[False] = ...,
) -> Image.Image: ...
@overload
def render_item(
    category: str, colour: str, pattern: str, size: int = ..., seed: int | list[int] = ..., *, with_mask: Literal[True]
) -> tuple[Image.Image, np.ndarray]: ...
def render_item(
    category: str, colour: str, pattern: str, size: int = 128, seed: int | list[int] = 0, with_mask: bool = False
) -> Image.Image | tuple[Image.Image, np.ndarray]:
    """Draw one garment as a `size` x `size` RGB image; `seed` drives the per-item jitter only.

    `with_mask=True` also returns the garment's silhouette, a bool (size, size) array: the pixels
    the garment is painted on (its fabric and outline), not the background or the drop shadow.
    The pixels are the same either way."""
    rng = np.random.default_rng(seed)
    side = 2 * size  # drawn at 2x and averaged down: anti-aliased edges, patterns and lines
    px = side / 256.0  # pattern periods and offsets are specified for a 256 px canvas

    # Placement jitter: scale, aspect, small rotation and offset, so no two items coincide.
    scale = rng.uniform(0.84, 0.98) * side
    aspect = rng.uniform(0.93, 1.07)
    theta = math.radians(rng.uniform(-6.0, 6.0))
    cx, cy = side / 2 + rng.uniform(-0.035, 0.035, 2) * side
    cos, sin = math.cos(theta), math.sin(theta)

    def place(points: Points) -> list[tuple[float, float]]:
        out = []
        for x, y in points:
            dx, dy = (x - 0.5) * scale * aspect, (y - 0.5) * scale / aspect
            out.append((cx + cos * dx - sin * dy, cy + sin * dx + cos * dy))
        return out

    garment = GARMENTS[category]
    mask_img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask_img)
    for op, points in garment.body:
        draw.polygon(place(points), fill=255 if op == "+" else 0)

    # Colours: shaded main colour, contrasting pattern colour, darker trim/outline.
    main = np.clip(np.array(COLOURS[colour]) * rng.uniform(0.95, 1.12) + rng.normal(0, 5, 3), 0, 255)
    second = main * 0.45 if colour in _LIGHT_COLOURS else _mix(_CREAM, main, rng.uniform(0.0, 0.15))
    trim = _rgb(main * 0.45 if colour != "black" else (12, 12, 14))

    # Pattern in rotated coordinates that follow the garment's own rotation.
    spec = _PATTERN_SPECS[pattern]
    phi = theta + math.radians(float(rng.choice(spec.angles)) + rng.uniform(-5, 5))
    xx, yy = _grid(side)
    u = xx * math.cos(phi) + yy * math.sin(phi) + rng.uniform(0, 100)
    v = -xx * math.sin(phi) + yy * math.cos(phi) + rng.uniform(0, 100)
    alpha = spec.alpha(u, v, rng.uniform(*spec.period) * px, rng.uniform(*spec.duty))
    # alpha is 0, 0.5 or 1: a 3-entry palette image is the cheapest way to colour it.
    fabric = Image.fromarray((alpha * 2).astype(np.uint8), "P")
    fabric.putpalette([c for t in (0.0, 0.5, 1.0) for c in _rgb(_mix(main, second, t))])
    fabric = ImageChops.multiply(fabric.convert("RGB"), _top_light(side))

    # Compose with PIL (uint8, fast): background, drop shadow, outline (dilated mask), fabric.
    bg = _rgb(np.array([243, 241, 236]) + rng.integers(-5, 6, 3))
    img = Image.new("RGB", (side, side), bg)
    shadow = mask_img.transform(mask_img.size, Image.Transform.AFFINE, (1, 0, -5 * px, 0, 1, -7 * px))
    shadow = shadow.filter(ImageFilter.BoxBlur(6 * px)).point(_SHADOW_LUT)
    # (pasting a solid image is much faster than pasting a colour through a mask)
    img.paste(Image.new("RGB", img.size, (0, 0, 0)), mask=shadow)
    outlined = mask_img.filter(ImageFilter.BoxBlur(2 * px)).point(_OUTLINE_LUT)  # the fabric and its outline
    img.paste(Image.new("RGB", img.size, trim), mask=outlined)
    img.paste(fabric, mask=mask_img)

    draw = ImageDraw.Draw(img)
    for kind, points, width in garment.trim:
        if kind == "fill":
            draw.polygon(place(points), fill=trim)
        else:
            draw.line(place(points), fill=trim, width=max(1, round(width * scale)), joint="curve")
    if with_mask:  # averaged down as the pixels are; a pixel at least half covered is garment
        return img.reduce(2), np.asarray(outlined.reduce(2)) >= 128
    return img.reduce(2)


# --------------------------------------------------------------------------------------------
# Users and interactions.
@dataclass(frozen=True)
class SynthConfig:
    """What to generate. The defaults give the embedded default dataset."""

    n_items: int = 3600  # >= 3000 for the default
    n_users: int = 1200  # >= 1000
    mean_interactions: float = 32.0  # per user, so >= 30,000 interactions in total
    cold_fraction: float = 0.10  # share of items that are cold (only ever a user's test item)
    n_communities: int = 12
    image_size: int = 128
    seed: int = 0

    def validate(self) -> None:
        """Raise DataError naming the first invalid field."""
        min_items = 5 * len(CATEGORIES)
        checks = [
            (self.n_items >= min_items, f"n_items must be at least {min_items} (5 per category)"),
            (self.n_users >= 10, "n_users must be at least 10"),
            (self.mean_interactions >= 5, "mean_interactions must be at least 5 (every user has >= 5)"),
            (0.0 <= self.cold_fraction <= 0.5, "cold_fraction must be between 0 and 0.5"),
            (self.n_communities >= 1, "n_communities must be at least 1"),
            (32 <= self.image_size <= 1024, "image_size must be between 32 and 1024"),
            (self.seed >= 0, "seed must be >= 0"),
            (
                round(self.cold_fraction * self.n_items) <= self.n_users,
                "too few users: each cold item needs a user whose test item it is (n_users >= cold_fraction * n_items)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(f"invalid synthetic dataset config {self}: {message}")


# Taste multipliers on an item's sampling weight: colour dominates (a single-colour user's
# interactions are ~75% that colour, a two-colour user's ~90%), category and pattern are
# secondary, the community pool adds a collaborative signal that has nothing to do with looks.
COLOUR_BOOST = 45.0
CATEGORY_BOOST = 4.0
PATTERN_BOOST = 2.5
COMMUNITY_BOOST = 6.0
COMMUNITY_POOL_SHARE = 0.04  # of the warm items, per community
_START_TIME = 1_704_067_200  # 2024-01-01 UTC


class World(NamedTuple):
    """The generator's hidden state: every item's labels and every user's tastes."""

    item_category: np.ndarray  # (n_items,) indices into CATEGORIES
    item_colour: np.ndarray
    item_pattern: np.ndarray
    cold: np.ndarray  # (n_items,) bool
    popularity: np.ndarray  # (n_items,) the long-tailed factor of every item's sampling weight
    user_colours: list[list[int]]
    user_patterns: list[list[int]]
    user_categories: list[list[int]]
    user_community: np.ndarray
    community_pools: list[np.ndarray]
    sequences: list[list[int]]  # per user, item indices in chronological order
    timestamps: list[np.ndarray]


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n labels in 0..k-1, each used n//k or n//k+1 times, in random order."""
    return rng.permutation(np.arange(n) % k)


def likes(favourites: list[list[int]], labels: np.ndarray, k: int) -> np.ndarray:
    """(n_users, n_items): whether each item's label (0..k-1) is one of each user's favourites."""
    table = np.zeros((len(favourites), k), bool)
    for u, fav in enumerate(favourites):
        table[u, fav] = True
    return table[:, labels]


def community_factor(pools: list[np.ndarray], community: np.ndarray, n_items: int) -> np.ndarray:
    """(n_users, n_items): COMMUNITY_BOOST where the item is in the pool of the user's community."""
    in_pool = np.zeros((len(pools), n_items), bool)
    for c, pool in enumerate(pools):
        in_pool[c, pool] = True
    return np.where(in_pool[community], COMMUNITY_BOOST, 1.0)


def simulate(cfg: SynthConfig) -> World:
    """Draw items' labels, users' tastes and interaction sequences (no images)."""
    rng = np.random.default_rng(cfg.seed)
    n, n_users = cfg.n_items, cfg.n_users
    cat = _balanced(rng, n, len(CATEGORIES))
    col = _balanced(rng, n, len(COLOURS))
    pat = _balanced(rng, n, len(PATTERNS))
    cold = np.zeros(n, bool)
    cold[rng.choice(n, round(cfg.cold_fraction * n), replace=False)] = True
    warm = np.flatnonzero(~cold)
    popularity = rng.lognormal(0.0, 1.0, n)  # long tail

    def picks(options: int, counts: np.ndarray) -> list[list[int]]:
        return [sorted(rng.choice(options, k, replace=False).tolist()) for k in counts]

    user_colours = picks(len(COLOURS), np.where(rng.random(n_users) < 0.4, 1, 2))
    user_patterns = picks(len(PATTERNS), rng.integers(1, 3, n_users))
    user_categories = picks(len(CATEGORIES), rng.integers(2, 4, n_users))
    community = rng.integers(0, cfg.n_communities, n_users)
    pool_size = max(3, round(COMMUNITY_POOL_SHARE * len(warm)))
    p_warm = popularity[warm] / popularity[warm].sum()
    pools = [np.sort(rng.choice(warm, pool_size, replace=False, p=p_warm)) for _ in range(cfg.n_communities)]

    affinity = (
        np.where(likes(user_colours, col, len(COLOURS)), COLOUR_BOOST, 1.0)
        * np.where(likes(user_categories, cat, len(CATEGORIES)), CATEGORY_BOOST, 1.0)
        * np.where(likes(user_patterns, pat, len(PATTERNS)), PATTERN_BOOST, 1.0)
    )
    weight = affinity * popularity * community_factor(pools, community, n)
    weight[:, cold] = 0.0

    # Weighted sampling without replacement for all users at once (Gumbel top-k).
    extra = cfg.mean_interactions - 5.0
    counts = 5 + (rng.negative_binomial(2, 2.0 / (2.0 + extra), n_users) if extra > 0 else 0)
    counts = np.minimum(counts, len(warm) // 2)
    with np.errstate(divide="ignore"):
        keys = np.log(weight) + rng.gumbel(size=weight.shape)
    ranked = np.argsort(-keys, axis=1, kind="stable")
    sequences = [rng.permutation(ranked[u, : counts[u]]).tolist() for u in range(n_users)]

    # Each cold item becomes the last (test) interaction of one user who likes its look.
    free = np.ones(n_users, bool)
    for item in rng.permutation(np.flatnonzero(cold)):
        p = affinity[:, item] * free
        u = rng.choice(n_users, p=p / p.sum())
        sequences[u].append(int(item))
        free[u] = False

    # Every warm item needs a training interaction (not only someone's validation/test one):
    # give each missing item to a user who likes it, somewhere before their last two.
    trained = np.zeros(n, bool)
    has = np.zeros((n_users, n), bool)
    for u, seq in enumerate(sequences):
        trained[seq[:-2]] = True
        has[u, seq] = True
    for item in np.flatnonzero(~cold & ~trained):
        p = affinity[:, item] * ~has[:, item]
        u = rng.choice(n_users, p=p / p.sum())
        sequences[u].insert(int(rng.integers(0, len(sequences[u]) - 1)), int(item))

    # Distinct increasing timestamps per user, so the chronological split is unambiguous.
    timestamps = [
        _START_TIME + rng.integers(0, 180 * 86400) + np.cumsum(rng.integers(60, 3 * 86400, len(seq)))
        for seq in sequences
    ]
    return World(
        cat,
        col,
        pat,
        cold,
        popularity,
        user_colours,
        user_patterns,
        user_categories,
        community,
        pools,
        sequences,
        timestamps,
    )


# --------------------------------------------------------------------------------------------
# Writing the folder.
def _ids(prefix: str, n: int, width: int) -> list[str]:
    width = max(width, len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _title(colour: str, pattern: str, category: str) -> str:
    return f"{colour.capitalize()} {_PATTERN_SPECS[pattern].adjective} {category}"


def silhouettes(folder: str | Path, item_ids: list[str]) -> np.ndarray:
    """The garment masks (`render_item(..., with_mask=True)`) of items of a generated dataset,
    redrawn from its hidden_tastes.json: bool (len(item_ids), image_size, image_size)."""
    path = Path(folder) / "hidden_tastes.json"
    try:
        tastes = json.loads(path.read_text())
        items, config = tastes["items"], tastes["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read the generator's record of the items ({exc})") from None
    position = {item_id: i for i, item_id in enumerate(items)}  # drawn with seed [seed, position]
    missing = [i for i in item_ids if i not in position]
    if missing:
        raise DataError(f"{path} does not describe the item(s) {missing[:10]}: they were not generated")
    masks = []
    for item_id in item_ids:
        look = items[item_id]
        seed = [config["seed"], position[item_id]]
        _, mask = render_item(
            look["category"], look["colour"], look["pattern"], config["image_size"], seed, with_mask=True
        )
        masks.append(mask)
    return np.stack(masks) if masks else np.zeros((0, config["image_size"], config["image_size"]), dtype=bool)


def is_complete(folder: str | Path) -> bool:
    """True when `folder` holds a finished generated dataset (its marker is written last)."""
    folder = Path(folder)
    return (folder / COMPLETE_MARKER).is_file() and (folder / "interactions.csv").is_file()


def _replaceable(folder: Path) -> bool:
    """An existing folder may be replaced if it is empty or a generated dataset (complete or not)."""
    return folder.is_dir() and (
        not any(folder.iterdir()) or (folder / COMPLETE_MARKER).exists() or (folder / "hidden_tastes.json").exists()
    )


def write_interactions(
    folder: Path, user_ids: list[str], item_ids: list[str], sequences: list[list[int]], timestamps: list[np.ndarray]
) -> None:
    """interactions.csv of a generated dataset: each user's items with their timestamps."""
    rows = [
        [user_ids[u], item_ids[i], int(t)]
        for u, (seq, ts) in enumerate(zip(sequences, timestamps))
        for i, t in zip(seq, ts)
    ]
    atomic_write_text(folder / "interactions.csv", _csv_text(["user_id", "item_id", "timestamp"], rows))


def publish(staged: Path, out_dir: Path) -> None:
    """Mark a staged dataset folder complete and move it into place, replacing `out_dir`."""
    atomic_write_text(staged / COMPLETE_MARKER, "complete\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        os.replace(staged, out_dir)
    except OSError:
        if not is_complete(out_dir):  # else a concurrent run finished first: use its result
            raise


def make_dataset(
    out_dir: str | Path,
    config: SynthConfig = SynthConfig(),
    progress: bool = True,
    progress_callback: Callable[[float, str], None] | None = None,
) -> Path:
    """Generate the synthetic dataset described by `config` into `out_dir` and return its path.

    Everything is written into a hidden sibling folder first and renamed into place at the end,
    so an interrupted run never leaves a folder that looks complete. An existing `out_dir` is
    replaced only if it is empty or a generated dataset (complete or not), never anything else.
    """
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not _replaceable(out_dir):
        raise DataError(f"refusing to replace {out_dir}: it exists and is not a generated dataset")
    report = progress_callback or (lambda fraction, message: None)

    report(0.0, "simulating users and interactions")
    world = simulate(config)
    item_ids = _ids("i", config.n_items, 5)
    user_ids = _ids("u", config.n_users, 4)
    colour_names, pattern_names = list(COLOURS), PATTERNS
    items = [
        (CATEGORIES[c], colour_names[k], pattern_names[p])
        for c, k, p in zip(world.item_category, world.item_colour, world.item_pattern)
    ]

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        step = max(1, len(items) // 100)
        for i, (category, colour, pattern) in enumerate(tqdm(items, desc="drawing catalogue", disable=not progress)):
            img = render_item(category, colour, pattern, config.image_size, seed=[config.seed, i])
            img.save(tmp / "images" / f"{item_ids[i]}.png", format="PNG", compress_level=1)
            if i % step == 0:
                report(0.05 + 0.9 * i / len(items), f"drawing item {i + 1} of {len(items)}")

        report(0.95, "writing tables")
        write_interactions(tmp, user_ids, item_ids, world.sequences, world.timestamps)
        atomic_write_text(
            tmp / "items.csv",
            _csv_text(
                ["item_id", "category", "title", "image", "colour", "pattern"],
                [
                    [
                        item_ids[i],
                        category,
                        _title(colour, pattern, category),
                        f"images/{item_ids[i]}.png",
                        colour,
                        pattern,
                    ]
                    for i, (category, colour, pattern) in enumerate(items)
                ],
            ),
        )
        atomic_write_json(
            tmp / "hidden_tastes.json",
            {
                "colours": colour_names,
                "patterns": pattern_names,
                "categories": CATEGORIES,
                "users": {
                    user_ids[u]: {
                        "colours": [colour_names[k] for k in world.user_colours[u]],
                        "patterns": [pattern_names[k] for k in world.user_patterns[u]],
                        "categories": [CATEGORIES[k] for k in world.user_categories[u]],
                        "community": int(world.user_community[u]),
                    }
                    for u in range(config.n_users)
                },
                "items": {
                    item_ids[i]: {
                        "category": category,
                        "colour": colour,
                        "pattern": pattern,
                        "cold": bool(world.cold[i]),
                    }
                    for i, (category, colour, pattern) in enumerate(items)
                },
                "communities": {str(c): [item_ids[i] for i in pool] for c, pool in enumerate(world.community_pools)},
                "config": asdict(config),
            },
        )
        publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(1.0, "dataset ready")
    return out_dir


DEFAULT_CONFIG = SynthConfig()


def ensure_default_dataset(
    out_dir: str | Path | None = None,
    progress: bool = True,
    progress_callback: Callable[[float, str], None] | None = None,
) -> Path:
    """Return the default dataset folder, generating it first if it is missing or incomplete."""
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_DATA_DIR
    if not is_complete(out_dir):
        make_dataset(out_dir, DEFAULT_CONFIG, progress=progress, progress_callback=progress_callback)
    return out_dir
