"""Tests of the synthetic default dataset (dvbpr/synth.py).

The split is re-derived here with the loader's documented rule (per user, chronological: last =
test, second to last = validation, the rest train) so that the generator's guarantees are checked
independently of dvbpr.data.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dvbpr import synth
from dvbpr.errors import DataError
from dvbpr.synth import SynthConfig, ensure_default_dataset, make_dataset

SMALL = SynthConfig(n_items=200, n_users=60, mean_interactions=10, seed=3)


def _read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    inter = pd.read_csv(folder / "interactions.csv", dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(folder / "items.csv", dtype=str)
    tastes = json.loads((folder / "hidden_tastes.json").read_text())
    return inter, items, tastes


def _with_split(inter: pd.DataFrame) -> pd.DataFrame:
    """The loader's chronological split rule, applied with pandas."""
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    from_end = inter.groupby("user_id").cumcount(ascending=False)
    n = inter.groupby("user_id")["item_id"].transform("size")
    inter["split"] = np.where(from_end == 0, "test", np.where((from_end == 1) & (n >= 3), "val", "train"))
    return inter


def _colour_match(inter: pd.DataFrame, items: pd.DataFrame, tastes: dict) -> pd.Series:
    colour = items.set_index("item_id")["colour"]
    return pd.Series(
        [colour[i] in tastes["users"][u]["colours"] for u, i in zip(inter.user_id, inter.item_id)], index=inter.index
    )


def _check_dataset(folder: Path, config: SynthConfig) -> None:
    """Every structural guarantee of the generator, for any config."""
    inter, items, tastes = _read(folder)
    assert (folder / synth.COMPLETE_MARKER).is_file()
    assert (folder / "interactions.csv").read_text().splitlines()[0] == "user_id,item_id,timestamp"
    assert (folder / "items.csv").read_text().splitlines()[0] == "item_id,category,title,image,colour,pattern"
    assert list(folder.parent.glob(f".{folder.name}.tmp-*")) == []

    # counts and ids
    assert len(items) == config.n_items and items.item_id.is_unique
    assert inter.user_id.nunique() == config.n_users
    assert set(inter.item_id) <= set(items.item_id)
    assert items.item_id.str.fullmatch(r"i\d{5}").all() and inter.user_id.str.fullmatch(r"u\d{4}").all()
    assert pd.api.types.is_integer_dtype(inter.timestamp)
    assert (items.image == "images/" + items.item_id + ".png").all()
    assert set(items.category) == set(synth.CATEGORIES) and len(synth.CATEGORIES) >= 8
    assert set(items.colour) == set(synth.COLOURS) and set(items.pattern) == set(synth.PATTERNS)
    assert not inter.duplicated(["user_id", "item_id"]).any()

    # the split rule gives what the generator promises
    per_user = inter.groupby("user_id")
    assert per_user.size().min() >= 5
    assert not inter.duplicated(["user_id", "timestamp"]).any()  # unambiguous chronology
    split = _with_split(inter)
    cold = {i for i, info in tastes["items"].items() if info["cold"]}
    assert len(cold) == round(config.cold_fraction * config.n_items)
    assert set(split.loc[split.item_id.isin(cold), "split"]) <= {"test"}
    assert set(split.loc[split.split == "test", "item_id"]) >= cold  # every cold item is someone's test
    assert not split.loc[split.split == "val", "item_id"].isin(cold).any()
    trained = set(split.loc[split.split == "train", "item_id"])
    assert set(items.item_id) - cold == trained

    # hidden tastes agree with the tables
    assert tastes["categories"] == synth.CATEGORIES and tastes["colours"] == list(synth.COLOURS)
    assert tastes["patterns"] == synth.PATTERNS
    assert set(tastes["users"]) == set(inter.user_id)
    indexed = items.set_index("item_id")
    for item_id, info in tastes["items"].items():
        row = indexed.loc[item_id]
        assert (row.category, row.colour, row.pattern) == (info["category"], info["colour"], info["pattern"])
        assert info["colour"].lower() in row.title.lower() and info["category"] in row.title
    for info in tastes["users"].values():
        assert 1 <= len(info["colours"]) <= 2 and 1 <= len(info["patterns"]) <= 2
        assert 2 <= len(info["categories"]) <= 3 and 0 <= info["community"] < config.n_communities
    assert tastes["config"] == json.loads(json.dumps(asdict(config)))

    # a few images: PNG, RGB, the configured size
    for rel in items.image.iloc[:: max(1, len(items) // 25)]:
        with Image.open(folder / rel) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (config.image_size, config.image_size))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth") / "small", SMALL, progress=False)


def test_small_dataset_structure(small: Path) -> None:
    _check_dataset(small, SMALL)


def test_deterministic(small: Path, tmp_path: Path) -> None:
    again = make_dataset(tmp_path / "again", SMALL, progress=False)
    for name in ("interactions.csv", "items.csv", "hidden_tastes.json"):
        assert (small / name).read_bytes() == (again / name).read_bytes(), name
    images = sorted(p.name for p in (small / "images").iterdir())
    assert images == sorted(p.name for p in (again / "images").iterdir())
    for name in images:
        assert np.array_equal(
            np.asarray(Image.open(small / "images" / name)), np.asarray(Image.open(again / "images" / name))
        ), name


def test_seed_changes_dataset(small: Path, tmp_path: Path) -> None:
    other = make_dataset(tmp_path / "other", replace(SMALL, seed=4), progress=False)
    assert (small / "interactions.csv").read_bytes() != (other / "interactions.csv").read_bytes()


def test_images_all_distinct(small: Path) -> None:
    arrays = [np.asarray(Image.open(p)) for p in sorted((small / "images").iterdir())]
    assert len(arrays) == SMALL.n_items
    assert len({a.tobytes() for a in arrays}) == len(arrays)


def test_garment_colour_dominates_image(small: Path) -> None:
    """The named colour is what the pixels show: the garment's most common colour is the nearest
    palette colour to the item's own colour, for the large majority of items."""
    _, items, _ = _read(small)
    palette = np.array(list(synth.COLOURS.values()), float)
    names = list(synth.COLOURS)
    hits = 0
    for row in items.itertuples():
        pixels = np.asarray(Image.open(small / row.image), float).reshape(-1, 3)
        pixels = pixels[np.abs(pixels - pixels[0]).sum(1) > 60]  # drop the light background
        nearest = np.argmin(((pixels[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
        hits += names[np.bincount(nearest, minlength=len(names)).argmax()] == row.colour
    assert hits / len(items) >= 0.9


def test_users_follow_their_colours(small: Path) -> None:
    inter, items, tastes = _read(small)
    # small catalogues deplete a colour quickly, so the bar is lower than for the default one
    assert _colour_match(inter, items, tastes).mean() >= 0.7


def test_single_colour_users_are_common(small: Path) -> None:
    _, _, tastes = _read(small)
    single = np.mean([len(u["colours"]) == 1 for u in tastes["users"].values()])
    assert 0.2 <= single <= 0.6


@pytest.mark.parametrize(
    "change",
    [
        {"n_items": 20},
        {"n_users": 0},
        {"n_users": -3},
        {"mean_interactions": 2},
        {"cold_fraction": 0.9},
        {"n_communities": 0},
        {"image_size": 8},
        {"seed": -1},
        {"n_items": 1000, "n_users": 50},  # 100 cold items but only 50 users to test them
    ],
)
def test_invalid_config(change: dict, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="invalid synthetic dataset config"):
        make_dataset(tmp_path / "bad", replace(SMALL, **change), progress=False)
    assert not (tmp_path / "bad").exists()


def test_refuses_to_replace_other_folders(tmp_path: Path) -> None:
    precious = tmp_path / "mine" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    with pytest.raises(DataError, match="refusing to replace"):
        make_dataset(precious.parent, SMALL, progress=False)
    assert precious.read_text() == "keep me"
    with pytest.raises(DataError, match="refusing to replace"):
        make_dataset(precious, SMALL, progress=False)  # a file, not a folder
    assert precious.read_text() == "keep me"


def test_progress_callback(tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    make_dataset(tmp_path / "d", SMALL, progress=False, progress_callback=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in calls)


def test_default_data_dir() -> None:
    assert synth.DEFAULT_DATA_DIR == Path(synth.__file__).resolve().parent.parent / "data" / "default"


def test_ensure_default_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth, "DEFAULT_CONFIG", SMALL)  # the real default is tested below
    folder = tmp_path / "default"
    assert ensure_default_dataset(folder, progress=False) == folder
    _check_dataset(folder, SMALL)

    def stamp() -> int:
        return (folder / "interactions.csv").stat().st_mtime_ns

    old = 1_000_000_000_000_000_000
    os.utime(folder / "interactions.csv", ns=(old, old))
    ensure_default_dataset(folder, progress=False)
    assert stamp() == old  # complete: not regenerated

    for damage in (synth.COMPLETE_MARKER, "interactions.csv"):
        os.utime(folder / "interactions.csv", ns=(old, old))
        (folder / damage).unlink()
        ensure_default_dataset(folder, progress=False)
        assert stamp() != old, damage  # incomplete: regenerated
        _check_dataset(folder, SMALL)


def test_default_config(tmp_path: Path) -> None:
    """The embedded default dataset itself (takes ~30-60 s)."""
    config = SynthConfig()
    assert config.n_items >= 3000 and config.n_users >= 1000
    folder = make_dataset(tmp_path / "default", config, progress=False)
    _check_dataset(folder, config)
    inter, items, tastes = _read(folder)
    assert len(inter) >= 30_000
    assert items.category.nunique() >= 8
    cold = sum(info["cold"] for info in tastes["items"].values())
    assert cold == 360

    # the visual signal is strong: colour dominates every user's history
    match = _colour_match(inter, items, tastes)
    single = np.array([len(tastes["users"][u]["colours"]) == 1 for u in inter.user_id])
    assert match.mean() >= 0.78
    assert match[single].mean() >= 0.7
    # and popularity is long-tailed
    counts = inter.item_id.value_counts()
    assert counts.max() >= 10 * counts.median()
