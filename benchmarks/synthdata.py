"""Large synthetic catalogues drawn with the project's generator, fast enough for benchmarks.

`dvbpr.synth.make_dataset` draws one image per item and simulates tastes with dense
(users x items) matrices: right for the 3,600-item default, impossible at Amazon Women's size
(97,678 x 347,591). Here:

* a *pool* of distinct looks is drawn with the generator's public `render_item(category,
  colour, pattern, size, seed)`: look l is category l % 10, colour (l // 10) % 10, pattern
  (l // 100) % 5, seed [seed, l], so every combination appears once the pool has 500 looks;
* every item is given a look at random; `items.csv`'s `image` column points at the look's file
  (`images/pool/l00042.png`), so several items share one file; the image cache still decodes
  one file per item, as for a real catalogue;
* interactions are sampled in O(interactions): a user has 1-2 favourite colours; each
  interaction picks a favourite colour with probability 0.75 (else any colour), then an item of
  that colour by long-tailed (log-normal) popularity; repeats of a (user, item) pair are redrawn.
  Every user has at least 3 interactions (train, validation, test under the chronological
  split); timestamps increase per user. Items nobody picked are catalogue-only (cold).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import ensure_repo_on_path

ensure_repo_on_path()

from dvbpr.synth import CATEGORIES, COLOURS, PATTERNS, render_item  # noqa: E402

COLOUR_NAMES = list(COLOURS)
FAVOURITE_SHARE = 0.75
MIN_PER_USER = 3
AMAZON_WOMEN = (97_678, 347_591, 827_678)  # users, items, interactions (the paper's Table 1)
WIKIMEDIA = (1_100, 33_000, 97_000)  # the tutorial's Wikimedia, rounded as the issue gives it


def look(index: int) -> tuple[str, str, str]:
    """(category, colour, pattern) of pool look `index`."""
    return (
        CATEGORIES[index % len(CATEGORIES)],
        COLOUR_NAMES[(index // 10) % len(COLOUR_NAMES)],
        PATTERNS[(index // 100) % len(PATTERNS)],
    )


def _render_range(args: tuple[str, int, int, int, str, int]) -> None:
    folder, start, stop, size, fmt, seed = args
    for index in range(start, stop):
        category, colour, pattern = look(index)
        image = render_item(category, colour, pattern, size, seed=[seed, index])
        path = Path(folder) / f"l{index:05d}.{fmt}"
        if fmt == "png":
            image.save(path, format="PNG", compress_level=1)  # as make_dataset writes them
        else:
            image.save(path, format="JPEG", quality=90)  # the tutorial's pre-resized JPEGs


def render_pool(
    folder: Path, n_looks: int, size: int, fmt: str = "png", seed: int = 0, workers: int | None = None
) -> list[str]:
    """Draw `n_looks` looks into `folder`; returns their file names, look order."""
    folder.mkdir(parents=True, exist_ok=True)
    workers = max(1, workers or os.cpu_count() or 1)
    step = max(1, -(-n_looks // (workers * 4)))
    tasks = [(str(folder), s, min(s + step, n_looks), size, fmt, seed) for s in range(0, n_looks, step)]
    if workers == 1 or len(tasks) == 1:
        for task in tasks:
            _render_range(task)
    else:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_render_range, tasks))
    return [f"l{i:05d}.{fmt}" for i in range(n_looks)]


@dataclass(frozen=True)
class CatalogueSpec:
    n_users: int
    n_items: int
    n_interactions: int
    image_size: int = 64
    pool: int = 5000
    fmt: str = "png"
    seed: int = 0

    @classmethod
    def scaled(cls, sizes: tuple[int, int, int], fraction: float, **kw) -> CatalogueSpec:
        users, items, inter = (max(10, round(x * fraction)) for x in sizes)
        return cls(users, max(items, 50), max(inter, MIN_PER_USER * users + users), **kw)


def simulate(
    spec: CatalogueSpec, item_colour: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, timestamps) of `spec.n_interactions` interactions, grouped by user,
    chronological within a user, no repeated (user, item) pair."""
    n_users, n_items, total = spec.n_users, spec.n_items, spec.n_interactions
    if total < MIN_PER_USER * n_users:
        raise ValueError(f"{total} interactions cannot give {n_users} users {MIN_PER_USER} each")
    # per-user counts: MIN_PER_USER + a long tail, adjusted to the exact total
    extra = total / n_users - MIN_PER_USER
    counts = MIN_PER_USER + (rng.negative_binomial(1, 1.0 / (1.0 + extra), n_users) if extra > 0 else 0)
    counts = np.minimum(counts, max(MIN_PER_USER, n_items // 4))
    while (diff := total - int(counts.sum())) != 0:
        if diff > 0:
            np.add.at(counts, rng.integers(0, n_users, diff), 1)
            counts = np.minimum(counts, max(MIN_PER_USER, n_items // 4))
        else:
            able = np.flatnonzero(counts > MIN_PER_USER)
            counts[rng.choice(able, min(-diff, len(able)), replace=False)] -= 1
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)

    # items by colour, each colour's items drawn by popularity through a cumulative table
    popularity = rng.lognormal(0.0, 1.2, n_items)
    order = np.argsort(item_colour, kind="stable")
    cum = np.cumsum(popularity[order])
    n_colours = len(COLOUR_NAMES)
    bounds = np.searchsorted(item_colour[order], np.arange(n_colours + 1))
    lo = np.where(bounds[:-1] > 0, cum[np.maximum(bounds[:-1] - 1, 0)], 0.0)
    hi = np.where(bounds[1:] > 0, cum[np.maximum(bounds[1:] - 1, 0)], 0.0)
    present = np.flatnonzero(bounds[1:] > bounds[:-1])  # colours that have items

    fav = rng.integers(0, n_colours, (n_users, 2))
    single = rng.random(n_users) < 0.4
    fav[single, 1] = fav[single, 0]

    def draw(who: np.ndarray) -> np.ndarray:
        colour = fav[who, rng.integers(0, 2, len(who))]
        other = rng.random(len(who)) >= FAVOURITE_SHARE
        colour[other] = rng.integers(0, n_colours, int(other.sum()))
        colour = np.where(bounds[colour + 1] > bounds[colour], colour, rng.choice(present, len(who)))
        r = lo[colour] + rng.random(len(who)) * (hi[colour] - lo[colour])
        pos = np.clip(np.searchsorted(cum, r, side="right"), bounds[colour], bounds[colour + 1] - 1)
        return order[pos]

    items = draw(users)
    while True:  # redraw repeated (user, item) pairs; few rounds: users own a tiny share
        keys = users * n_items + items
        _, first = np.unique(keys, return_index=True)
        dup = np.ones(len(keys), bool)
        dup[first] = False
        dup = np.flatnonzero(dup)
        if not len(dup):
            break
        items[dup] = draw(users[dup]) if rng.random() < 0.9 else rng.integers(0, n_items, len(dup))

    gaps = rng.integers(60, 3 * 86400, total)
    starts = np.cumsum(counts) - counts
    within = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[starts] - gaps[starts], counts)
    timestamps = 1_704_067_200 + np.repeat(rng.integers(0, 180 * 86400, n_users), counts) + within
    return users, items, timestamps


def make_catalogue(out: Path, spec: CatalogueSpec, workers: int | None = None) -> dict:
    """Write a dataset folder (interactions.csv, items.csv, images/pool/*) for `spec`; returns
    counts and the time of each part."""
    import time

    import pandas as pd

    out = Path(out)
    rng = np.random.default_rng(spec.seed)
    t0 = time.perf_counter()
    names = render_pool(out / "images" / "pool", spec.pool, spec.image_size, spec.fmt, spec.seed, workers)
    t_pool = time.perf_counter() - t0
    item_look = rng.integers(0, spec.pool, spec.n_items)
    look_colour = np.array([COLOUR_NAMES.index(look(i)[1]) for i in range(spec.pool)])
    users, items, timestamps = simulate(spec, look_colour[item_look], rng)
    width_u, width_i = len(str(spec.n_users)), len(str(spec.n_items))
    user_ids = np.array([f"u{u:0{width_u}d}" for u in range(1, spec.n_users + 1)], dtype=object)
    item_ids = np.array([f"i{i:0{width_i}d}" for i in range(1, spec.n_items + 1)], dtype=object)
    pd.DataFrame({"user_id": user_ids[users], "item_id": item_ids[items], "timestamp": timestamps}).to_csv(
        out / "interactions.csv", index=False
    )
    looks = [look(i) for i in range(spec.pool)]
    cats = np.array([c for c, _, _ in looks], dtype=object)[item_look]
    cols = np.array([k for _, k, _ in looks], dtype=object)[item_look]
    pats = np.array([p for _, _, p in looks], dtype=object)[item_look]
    pd.DataFrame(
        {
            "item_id": item_ids,
            "category": cats,
            "title": [f"{k.capitalize()} {p} {c}" for c, k, p in zip(cats, cols, pats)],
            "image": np.array([f"images/pool/{n}" for n in names], dtype=object)[item_look],
            "colour": cols,
            "pattern": pats,
        }
    ).to_csv(out / "items.csv", index=False)
    return {
        "users": spec.n_users,
        "items": spec.n_items,
        "interactions": int(len(users)),
        "pool": spec.pool,
        "pool_s": t_pool,
        "total_s": time.perf_counter() - t0,
    }


def mirror_dataset(source: Path, out: Path) -> Path:
    """A dataset folder that shares `source`'s images (hard links, copies across filesystems: a
    dataset refuses symbolic links leading outside it) but keeps its own image cache, so
    benchmarks never write caches into the project's data folder."""
    import shutil

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    out.mkdir(parents=True, exist_ok=True)
    for name in ("interactions.csv", "items.csv"):
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    images = out / "images"
    if images.is_symlink():  # made by an earlier version of this function
        images.unlink()
    if not images.exists():
        shutil.copytree(source / "images", images, copy_function=link)
    return out


def in_memory_dataset(n_users: int, n_items: int, per_user: int = 8, seed: int = 0):
    """A `dvbpr.data.Dataset` with no files behind it (ids, random training histories and one
    test item per user), for serving benchmarks whose item features are synthetic."""
    from dvbpr.data import Dataset, IdMap, ImagePaths

    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.integers(0, n_items, len(users))
    train = np.unique(np.stack([users, items], 1), axis=0)
    test = np.stack([np.arange(n_users), rng.integers(0, n_items, n_users)], 1)
    return Dataset(
        root=Path("/nonexistent/synthetic"),
        name="synthetic",
        users=IdMap([f"u{u}" for u in range(n_users)], "user"),
        items=IdMap([f"i{i}" for i in range(n_items)], "item"),
        item_categories=[""] * n_items,
        item_titles=[""] * n_items,
        image_paths=ImagePaths([""] * n_items),
        train=train,
        val=np.zeros((0, 2), np.int64),
        test=test,
    )
