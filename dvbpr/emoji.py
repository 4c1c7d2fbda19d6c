"""A real-image dataset: Google's emoji from the npm package emoji-datasource-google@16.0.0.

The images are real (3,786 PNGs of 64 x 64 px: 1,911 emoji plus their skin-tone variations, in
10 categories and 99 subcategories); the users are synthetic, with hidden tastes like the ones of
dvbpr/synth.py, so a trained model can be checked against the truth:

- each user has 1-2 favourite categories and 2-4 favourite subcategories (mostly inside the
  favourite categories, sometimes one outside);
- item popularity is long-tailed (Zipf-like weights over a random permutation of the items);
- a user's interactions (8..60, about 20 on average, no repeats) are drawn with weight
  popularity x taste boost (SUBCATEGORY_BOOST for a favourite subcategory, CATEGORY_BOOST for
  a favourite category, 1 otherwise) x COMMUNITY_BOOST for items in the pool of the user's
  community (a collaborative signal that the images cannot explain);
- cold items (`cold_fraction` of the catalogue) appear only as some users' last (test)
  interaction, each exactly once; every other item has at least one training interaction;
- timestamps increase strictly per user, so the loader's chronological split applies.

Getting the package: `npm pack emoji-datasource-google@16.0.0` into a temporary folder, unless a
tarball already downloaded is given (`package=`). The tarball is read with `tarfile`, member by
member; nothing in it is extracted to disk. The output folder is written like
`synth.make_dataset` writes: into a hidden sibling folder, the complete marker last, then renamed
into place, so a failure never leaves a half-written dataset.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .data import load_dataset
from .errors import DataError
from .fsutil import atomic_write_json, atomic_write_text
from .synth import _csv_text, _ids, _replaceable, publish, write_interactions

EMOJI_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "emoji"
PACKAGE = "emoji-datasource-google"
PACKAGE_VERSION = "16.0.0"
PACKAGE_SPEC = f"{PACKAGE}@{PACKAGE_VERSION}"
IMAGE_SIZE = 64
IMAGE_DIR_IN_PACKAGE = "img/google/64"  # relative to the tarball's top folder ("package/")
NPM_TIMEOUT_S = 600

# Taste multipliers on an item's sampling weight (an item in a favourite subcategory gets
# SUBCATEGORY_BOOST, else one in a favourite category CATEGORY_BOOST), and the community pools.
SUBCATEGORY_BOOST = 20.0  # tuned: ~60% of training interactions in favourite (sub)categories
CATEGORY_BOOST = 4.0
COMMUNITY_BOOST = 3.0
COMMUNITY_POOL_SHARE = 0.04  # of the warm items, per community
ZIPF_EXPONENT = 0.8  # popularity of the item at popularity rank r (0-based): (r + 10) ** -exponent
MIN_INTERACTIONS, MAX_INTERACTIONS = 8, 60
_START_TIME = 1_704_067_200  # 2024-01-01 UTC

_SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}
_IMAGE_NAME = re.compile(r"^[0-9a-f]+(?:-[0-9a-f]+)*\.png$")  # e.g. 1f600.png, 0023-fe0f-20e3.png


@dataclass(frozen=True)
class EmojiConfig:
    """The synthetic side of the emoji dataset (the catalogue is whatever the package holds)."""

    n_users: int = 2000
    mean_interactions: float = 20.0  # per user, before the additions that keep every item trained
    cold_fraction: float = 0.10  # share of items that are cold (only ever a user's test item)
    n_communities: int = 10
    seed: int = 0

    def validate(self, n_items: int | None = None) -> None:
        """Raise DataError naming the first invalid field (`n_items`: the catalogue's size)."""
        checks = [
            (self.n_users >= 10, "n_users must be at least 10"),
            (
                MIN_INTERACTIONS <= self.mean_interactions <= MAX_INTERACTIONS,
                f"mean_interactions must be between {MIN_INTERACTIONS} and {MAX_INTERACTIONS}",
            ),
            (0.0 <= self.cold_fraction <= 0.5, "cold_fraction must be between 0 and 0.5"),
            (self.n_communities >= 1, "n_communities must be at least 1"),
            (self.seed >= 0, "seed must be >= 0"),
        ]
        if n_items is not None:
            checks += [
                (n_items >= 20, f"the package has only {n_items} emoji with an image; at least 20 are needed"),
                (
                    round(self.cold_fraction * n_items) <= self.n_users,
                    f"too few users: each of the {round(self.cold_fraction * n_items)} cold items needs a "
                    "user whose test item it is (n_users >= cold_fraction * items)",
                ),
            ]
        for ok, message in checks:
            if not ok:
                raise DataError(f"invalid emoji dataset config {self}: {message}")


class Emoji(NamedTuple):
    item_id: str  # "e" + the unified code points, lower case: e1f600, e1f44d-1f3fd
    category: str
    subcategory: str
    title: str
    image: str  # file name inside img/google/64/ of the package


# --------------------------------------------------------------------------------------------
# The package.
def fetch_package(dest: str | Path, spec: str = PACKAGE_SPEC) -> Path:
    """`npm pack SPEC` into the folder `dest`; the tarball's path. DataError when npm fails."""
    how = (
        f"Install Node.js (it comes with npm), or run `npm pack {spec}` on a machine that has "
        "npm and pass the .tgz it writes with --package"
    )
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"cannot download {spec}: npm was not found on PATH. {how}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            [npm, "pack", spec, "--pack-destination", str(dest)],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise DataError(f"cannot download {spec}: `npm pack` took more than {NPM_TIMEOUT_S} s. {how}") from None
    except OSError as exc:
        raise DataError(f"cannot download {spec}: npm could not be run ({exc}). {how}") from None
    tarballs = sorted(dest.glob("*.tgz"))
    if proc.returncode != 0 or len(tarballs) != 1:
        output = (proc.stderr or proc.stdout or "").strip().splitlines()
        detail = " | ".join(line.strip() for line in output[-5:]) or "no output"
        problem = (
            f"exited with status {proc.returncode}"
            if proc.returncode
            else f"wrote {len(tarballs)} .tgz files instead of one"
        )
        raise DataError(f"cannot download {spec}: `npm pack` {problem} ({detail}). {how}")
    return tarballs[0]


def _read_package(tarball: Path) -> tuple[list[dict], dict[str, bytes], dict]:
    """(emoji.json entries, image file name -> PNG bytes of img/google/64/, package.json or {}).

    The tarball is read once, front to back; only regular files at the expected paths are read,
    and only into memory.
    """
    wanted_json: dict[str, bytes] = {}
    images: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar:
                parts = member.name.split("/")
                if not member.isfile() or len(parts) < 2 or "" in parts or ".." in parts:
                    continue
                rest = "/".join(parts[1:])
                if rest in ("emoji.json", "package.json"):
                    wanted_json[rest] = tar.extractfile(member).read()
                elif (
                    rest.startswith(IMAGE_DIR_IN_PACKAGE + "/")
                    and _IMAGE_NAME.match(parts[-1])
                    and rest.count("/") == IMAGE_DIR_IN_PACKAGE.count("/") + 1
                ):
                    images[parts[-1]] = tar.extractfile(member).read()
    except FileNotFoundError:
        raise DataError(f"package tarball {tarball} does not exist") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"cannot read {tarball} as an npm package tarball (.tgz): {exc}") from None
    if "emoji.json" not in wanted_json:
        raise DataError(
            f"{tarball} is not the {PACKAGE} package: it has no package/emoji.json "
            f"(get it with `npm pack {PACKAGE_SPEC}`)"
        )
    try:
        entries = json.loads(wanted_json["emoji.json"])
        meta = json.loads(wanted_json.get("package.json", b"{}"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{tarball}: package/emoji.json is not valid JSON: {exc}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DataError(f"{tarball}: package/emoji.json is not a list of emoji objects")
    return entries, images, meta if isinstance(meta, dict) else {}


def _title(name: str) -> str:
    """'GRINNING FACE' -> 'Grinning face'; mixed-case names ('Andorra Flag') are kept."""
    name = " ".join(str(name).split())
    return name[:1].upper() + name[1:].lower() if name.isupper() else name


def read_catalogue(tarball: str | Path) -> tuple[list[Emoji], dict[str, bytes], dict]:
    """The emoji of the package that have a 64 px Google image (skin-tone variations included).

    Returns (emoji in the package's sort order, variations right after their base emoji;
    file name -> PNG bytes; a report with the package's name/version and what was left out).
    """
    tarball = Path(tarball)
    entries, images, meta = _read_package(tarball)
    emoji: list[Emoji] = []
    no_image: list[str] = []  # flagged has_img_google but the PNG is not in the tarball
    seen: set[str] = set()

    def order(entry: dict) -> float:
        value = entry.get("sort_order", 0)
        return float(value) if isinstance(value, (int, float)) else 0.0

    for n, entry in enumerate(sorted(entries, key=order)):
        try:
            category, subcategory = str(entry["category"]).strip(), str(entry["subcategory"]).strip()
            if not category or not subcategory:
                raise DataError(
                    f"{tarball}: package/emoji.json entry {n} ({entry.get('short_name', '?')!r}) "
                    "has an empty category or subcategory"
                )
            name = entry.get("name") or entry.get("short_name") or entry["unified"]
            variants = [(entry, _title(name))]
            for key, variation in (entry.get("skin_variations") or {}).items():
                tones = ", ".join(f"{_SKIN_TONES.get(t.upper(), t.lower())} skin tone" for t in key.split("-"))
                variants.append((variation, f"{_title(name)}: {tones}"))
            for variant, title in variants:
                if not variant.get("has_img_google"):
                    continue
                file_name = str(variant["image"])
                item_id = "e" + str(variant.get("unified") or Path(file_name).stem).lower()
                if file_name not in images or not _IMAGE_NAME.match(file_name):
                    no_image.append(item_id)
                    continue
                if item_id in seen:
                    raise DataError(f"{tarball}: package/emoji.json lists the emoji {item_id} twice")
                seen.add(item_id)
                emoji.append(Emoji(item_id, category, subcategory, title, file_name))
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"{tarball}: package/emoji.json entry {n} ({entry.get('short_name', '?')!r}) "
                f"lacks a usable field: {exc!r}"
            ) from None
    report = {
        "package": meta.get("name", PACKAGE),
        "version": meta.get("version", "unknown"),
        "emoji_json_entries": len(entries),
        "flagged_without_png": no_image,
    }
    return emoji, images, report


def load_image(data: bytes, name: str = "image") -> Image.Image:
    """PNG bytes -> IMAGE_SIZE x IMAGE_SIZE RGB image, transparency composited on white."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgba = img.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode the emoji image {name}: {exc}") from None
    if rgba.size != (IMAGE_SIZE, IMAGE_SIZE):
        rgba = rgba.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


# --------------------------------------------------------------------------------------------
# Users and interactions.
class _World(NamedTuple):
    categories: list[str]  # distinct, in catalogue order
    subcategories: list[str]
    item_category: np.ndarray  # (n_items,) indices into categories
    item_subcategory: np.ndarray  # (n_items,) indices into subcategories
    cold: np.ndarray  # (n_items,) bool
    user_categories: list[list[int]]
    user_subcategories: list[list[int]]
    user_community: np.ndarray
    community_pools: list[np.ndarray]
    sequences: list[list[int]]  # per user, item indices in chronological order
    timestamps: list[np.ndarray]
    added_for_training: int  # interactions added so that every warm item is trained on


def _simulate(emoji: list[Emoji], cfg: EmojiConfig) -> _World:
    rng = np.random.default_rng(cfg.seed)
    n, n_users = len(emoji), cfg.n_users
    categories = list(dict.fromkeys(e.category for e in emoji))
    subcategories = list(dict.fromkeys(e.subcategory for e in emoji))
    cat = np.array([categories.index(e.category) for e in emoji])
    sub_index = {s: k for k, s in enumerate(subcategories)}
    sub = np.array([sub_index[e.subcategory] for e in emoji])
    n_cat, n_sub = len(categories), len(subcategories)
    # the category a subcategory belongs to (the one most of its items are in)
    sub_cat = np.array([np.bincount(cat[sub == s], minlength=n_cat).argmax() for s in range(n_sub)])

    cold = np.zeros(n, bool)
    cold[rng.choice(n, round(cfg.cold_fraction * n), replace=False)] = True
    warm = np.flatnonzero(~cold)
    popularity = np.empty(n)
    popularity[rng.permutation(n)] = (np.arange(n) + 10.0) ** -ZIPF_EXPONENT

    # Tastes. Categories and subcategories are chosen with probability ~ sqrt(size), so the
    # tiny ones (e.g. Component, 5 items) are rarely somebody's favourite.
    cat_weight = np.sqrt(np.bincount(cat, minlength=n_cat))
    sub_weight = np.sqrt(np.bincount(sub, minlength=n_sub))
    user_categories, user_subcategories = [], []
    for n_fav_cat, n_fav_sub in zip(rng.integers(1, 3, n_users), rng.integers(2, 5, n_users)):
        n_fav_cat = min(n_fav_cat, n_cat)
        favs = rng.choice(n_cat, n_fav_cat, replace=False, p=cat_weight / cat_weight.sum())
        chosen: list[int] = []
        for _ in range(min(n_fav_sub, n_sub)):
            inside = np.isin(sub_cat, favs)
            pick_inside = rng.random() < 0.85
            allowed = (inside if pick_inside else ~inside) & ~np.isin(np.arange(n_sub), chosen)
            if not allowed.any():
                allowed = ~np.isin(np.arange(n_sub), chosen)
            w = sub_weight * allowed
            chosen.append(int(rng.choice(n_sub, p=w / w.sum())))
        user_categories.append(sorted(int(c) for c in favs))
        user_subcategories.append(sorted(chosen))

    community = rng.integers(0, cfg.n_communities, n_users)
    pool_size = max(3, round(COMMUNITY_POOL_SHARE * len(warm)))
    p_warm = popularity[warm] / popularity[warm].sum()
    pools = [
        np.sort(rng.choice(warm, min(pool_size, len(warm)), replace=False, p=p_warm)) for _ in range(cfg.n_communities)
    ]

    fav_cat = np.zeros((n_users, n_cat), bool)
    fav_sub = np.zeros((n_users, n_sub), bool)
    for u in range(n_users):
        fav_cat[u, user_categories[u]] = True
        fav_sub[u, user_subcategories[u]] = True
    affinity = np.where(fav_sub[:, sub], SUBCATEGORY_BOOST, np.where(fav_cat[:, cat], CATEGORY_BOOST, 1.0))
    in_pool = np.zeros((cfg.n_communities, n), bool)
    for c, pool in enumerate(pools):
        in_pool[c, pool] = True

    # Each cold item becomes the last (test) interaction of one user who likes it (chosen first,
    # so that user's total length stays within the drawn one).
    cold_of_user = np.full(n_users, -1)
    for item in rng.permutation(np.flatnonzero(cold)):
        p = affinity[:, item] * (cold_of_user < 0)
        cold_of_user[rng.choice(n_users, p=p / p.sum())] = item

    # Lengths: long-tailed in MIN..MAX (negative binomial), warm items sampled without
    # replacement with weight popularity x taste x community (Gumbel top-k, all users at once).
    extra = cfg.mean_interactions - MIN_INTERACTIONS
    counts = MIN_INTERACTIONS + (rng.negative_binomial(2, 2.0 / (2.0 + extra), n_users) if extra > 0 else 0)
    counts = np.minimum(counts, MAX_INTERACTIONS)
    warm_counts = np.minimum(counts - (cold_of_user >= 0), max(3, len(warm) // 2))
    weight = affinity * popularity * np.where(in_pool[community], COMMUNITY_BOOST, 1.0)
    weight[:, cold] = 0.0
    with np.errstate(divide="ignore"):
        keys = np.log(weight) + rng.gumbel(size=weight.shape)
    top = int(warm_counts.max())
    part = np.argpartition(-keys, top - 1, axis=1)[:, :top]
    ranked = np.take_along_axis(part, np.argsort(-np.take_along_axis(keys, part, 1), axis=1, kind="stable"), 1)
    sequences = [rng.permutation(ranked[u, : warm_counts[u]]).tolist() for u in range(n_users)]
    for u in np.flatnonzero(cold_of_user >= 0):
        sequences[u].append(int(cold_of_user[u]))

    # Every warm item needs a training interaction (not only someone's validation/test one):
    # give each missing item to a user who likes it (preferably one below the maximum length),
    # somewhere before their last two.
    trained = np.zeros(n, bool)
    has = np.zeros((n_users, n), bool)
    for u, seq in enumerate(sequences):
        trained[seq[:-2]] = True
        has[u, seq] = True
    lengths = np.array([len(seq) for seq in sequences])
    missing = np.flatnonzero(~cold & ~trained)
    for item in missing:
        p = affinity[:, item] * ~has[:, item]
        if (p * (lengths < MAX_INTERACTIONS)).any():
            p = p * (lengths < MAX_INTERACTIONS)
        u = rng.choice(n_users, p=p / p.sum())
        sequences[u].insert(int(rng.integers(0, len(sequences[u]) - 1)), int(item))
        has[u, item] = True
        lengths[u] += 1

    # Distinct increasing timestamps per user, so the chronological split is unambiguous.
    timestamps = [
        _START_TIME + rng.integers(0, 180 * 86400) + np.cumsum(rng.integers(60, 3 * 86400, len(seq)))
        for seq in sequences
    ]
    return _World(
        categories,
        subcategories,
        cat,
        sub,
        cold,
        user_categories,
        user_subcategories,
        community,
        pools,
        sequences,
        timestamps,
        len(missing),
    )


# --------------------------------------------------------------------------------------------
# Writing the folder.
def make_emoji_dataset(
    out_dir: str | Path = EMOJI_DATA_DIR,
    config: EmojiConfig = EmojiConfig(),
    package: str | Path | None = None,
    progress: bool = True,
    progress_callback: Callable[[float, str], None] | None = None,
) -> Path:
    """Build the emoji dataset into `out_dir` and return its path.

    `package`: an already-downloaded emoji-datasource-google .tgz; without it the package is
    fetched with `npm pack` into a temporary folder (DataError, saying what to do, when npm is
    missing or fails). An existing `out_dir` is replaced only if it is empty or a generated
    dataset; it is replaced only once the new one is complete.
    """
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not _replaceable(out_dir):
        raise DataError(f"refusing to replace {out_dir}: it exists and is not a generated dataset")
    report = progress_callback or (lambda fraction, message: None)

    with tempfile.TemporaryDirectory(prefix="dvbpr-emoji-") as download:
        if package is None:
            report(0.0, f"downloading {PACKAGE_SPEC} with npm")
            tarball = fetch_package(download)
        else:
            tarball = Path(package)
        report(0.05, "reading the package")
        emoji, images, package_report = read_catalogue(tarball)
    config.validate(len(emoji))

    report(0.1, "simulating users and interactions")
    world = _simulate(emoji, config)
    user_ids = _ids("u", config.n_users, 4)
    item_ids = [e.item_id for e in emoji]

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        step = max(1, len(emoji) // 100)
        for i, e in enumerate(tqdm(emoji, desc="writing emoji images", disable=not progress)):
            img = load_image(images[e.image], f"{IMAGE_DIR_IN_PACKAGE}/{e.image}")
            img.save(tmp / "images" / f"{e.item_id}.png", format="PNG")
            if i % step == 0:
                report(0.15 + 0.8 * i / len(emoji), f"writing image {i + 1} of {len(emoji)}")

        report(0.95, "writing tables")
        write_interactions(tmp, user_ids, item_ids, world.sequences, world.timestamps)
        atomic_write_text(
            tmp / "items.csv",
            _csv_text(
                ["item_id", "category", "subcategory", "title", "image"],
                [[e.item_id, e.category, e.subcategory, e.title, f"images/{e.item_id}.png"] for e in emoji],
            ),
        )
        atomic_write_json(
            tmp / "hidden_tastes.json",
            {
                "categories": world.categories,
                "subcategories": world.subcategories,
                "users": {
                    user_ids[u]: {
                        "categories": [world.categories[k] for k in world.user_categories[u]],
                        "subcategories": [world.subcategories[k] for k in world.user_subcategories[u]],
                        "community": int(world.user_community[u]),
                    }
                    for u in range(config.n_users)
                },
                "items": {
                    e.item_id: {"category": e.category, "subcategory": e.subcategory, "cold": bool(world.cold[i])}
                    for i, e in enumerate(emoji)
                },
                "communities": {str(c): [item_ids[i] for i in pool] for c, pool in enumerate(world.community_pools)},
                "config": {
                    **asdict(config),
                    "package": package_report["package"],
                    "package_version": package_report["version"],
                    "image_size": IMAGE_SIZE,
                    "subcategory_boost": SUBCATEGORY_BOOST,
                    "category_boost": CATEGORY_BOOST,
                    "community_boost": COMMUNITY_BOOST,
                    "zipf_exponent": ZIPF_EXPONENT,
                    "added_for_training": world.added_for_training,
                    "flagged_without_png": package_report["flagged_without_png"],
                },
            },
        )
        publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(1.0, "dataset ready")
    return out_dir


def taste_lifts(folder: str | Path, split: str = "train") -> dict[str, dict[str, float]]:
    """How strongly the interactions of `split` follow the hidden tastes of a generated folder.

    For "subcategories" and "categories": `share` (interactions inside the user's favourites),
    `catalogue` (mean share of the catalogue inside the favourites, per interaction) and `lift`
    (share / catalogue). Needs the loader's split, so it loads the dataset.
    """
    folder = Path(folder)
    dataset = load_dataset(folder, check_images=False)
    tastes = json.loads((folder / "hidden_tastes.json").read_text())
    rows = dataset.split(split)
    out: dict[str, dict[str, float]] = {}
    inside_any = np.zeros(len(rows), bool)
    for key, attribute in (("subcategories", "subcategory"), ("categories", "category")):
        labels = [tastes["items"][i][attribute] for i in dataset.items.ids]
        size = {label: n / len(labels) for label, n in zip(*np.unique(labels, return_counts=True))}
        fav = [set(tastes["users"][u][key]) for u in dataset.users.ids]
        inside = np.array([labels[i] in fav[u] for u, i in rows], bool)
        catalogue = np.array([sum(size.get(s, 0.0) for s in fav[u]) for u in rows[:, 0]])
        inside_any |= inside
        out[key] = {
            "share": float(inside.mean()),
            "catalogue": float(catalogue.mean()),
            "lift": float(inside.mean() / catalogue.mean()),
        }
    out["either"] = {"share": float(inside_any.mean())}
    return out
