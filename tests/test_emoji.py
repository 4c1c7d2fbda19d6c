"""Tests of the emoji dataset builder (dvbpr/emoji.py), on a small fake package tarball.

Nothing here uses the network: the tarball is built in tmp_path with the real package's layout
(package/emoji.json, package/img/google/64/<image>), and "npm" is a stand-in script on PATH.
The split is re-derived with the loader's documented rule where the tests check the generator.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dvbpr import emoji
from dvbpr.cli import main
from dvbpr.data import load_dataset
from dvbpr.emoji import EmojiConfig, make_emoji_dataset, taste_lifts
from dvbpr.errors import DataError
from dvbpr.synth import COMPLETE_MARKER

CATEGORIES = {
    "Smileys & Emotion": ["face-smiling", "face-affection"],
    "Animals & Nature": ["animal-mammal", "animal-bird"],
    "Food & Drink": ["food-fruit", "food-sweet"],
}
N_ENTRIES = 42  # 7 per subcategory
SKIN_TONES = ["1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"]
CONFIG = EmojiConfig(n_users=120, seed=5)


def _png(colour: tuple[int, int, int], alpha: int, size: int = 16) -> bytes:
    """A tiny RGBA PNG: a coloured disc (alpha `alpha`) on a fully transparent background."""
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2 < (size / 2.5) ** 2
    pixels = np.zeros((size, size, 4), np.uint8)
    pixels[inside] = (*colour, alpha)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _entries() -> list[dict]:
    """emoji.json: 42 entries, the first two with 5 skin-tone variations each, one without a
    Google image (has_img_google false, no PNG) and one flagged but missing from the tarball."""
    subs = [(c, s) for c, ss in CATEGORIES.items() for s in ss]
    entries = []
    for k in range(N_ENTRIES):
        category, subcategory = subs[k % len(subs)]
        unified = f"1F{0x600 + k:03X}"
        entry = {
            "name": f"TEST EMOJI {k}",
            "short_name": f"test_{k}",
            "unified": unified,
            "image": f"{unified.lower()}.png",
            "category": category,
            "subcategory": subcategory,
            "sort_order": N_ENTRIES - k,
            "has_img_google": k != 7,
        }
        if k < 2:
            entry["skin_variations"] = {
                tone: {
                    "unified": f"{unified}-{tone}",
                    "image": f"{unified.lower()}-{tone.lower()}.png",
                    "has_img_google": True,
                }
                for tone in SKIN_TONES
            }
        entries.append(entry)
    return entries


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_package(
    path: Path, entries: list[dict] | None = None, *, with_json: bool = True, broken_image: str | None = None
) -> Path:
    """A .tgz laid out like emoji-datasource-google's, with an image for every flagged emoji
    except entry 9 (flagged, but its PNG is left out)."""
    entries = _entries() if entries is None else entries
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "package/package.json", json.dumps({"name": "emoji-datasource-google", "version": "16.0.0"}).encode())
        if with_json:
            _add(tar, "package/emoji.json", json.dumps(entries).encode())
        _add(tar, "../escape.png", _png((1, 2, 3), 255))  # never read, never written anywhere
        _add(tar, "package/img/google/sheets/64.png", _png((9, 9, 9), 255))
        subs = [s for ss in CATEGORIES.values() for s in ss]
        for k, entry in enumerate(entries):
            if not entry.get("has_img_google") or k == 9:
                continue
            # the colour names the subcategory; the alpha varies, so every image differs
            base = np.array(
                [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200), (40, 200, 200)]
            )[subs.index(entry["subcategory"])]
            variants = [entry] + list(entry.get("skin_variations", {}).values())
            for j, variant in enumerate(variants):
                name = variant["image"]
                data = b"not a png" if name == broken_image else _png(tuple(int(c) for c in base - 5 * j), 120 + 3 * k)
                _add(tar, f"package/img/google/64/{name}", data)
    return path


N_ITEMS = N_ENTRIES - 2 + 2 * len(SKIN_TONES)  # entries 7 and 9 have no image; 10 variations


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("pkg") / "emoji-datasource-google-16.0.0.tgz")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, package: Path) -> Path:
    return make_emoji_dataset(tmp_path_factory.mktemp("emoji") / "emoji", CONFIG, package=package, progress=False)


def _with_split(inter: pd.DataFrame) -> pd.DataFrame:
    """The loader's chronological split rule, applied with pandas."""
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    from_end = inter.groupby("user_id").cumcount(ascending=False)
    n = inter.groupby("user_id")["item_id"].transform("size")
    inter["split"] = np.where(from_end == 0, "test", np.where((from_end == 1) & (n >= 3), "val", "train"))
    return inter


def _read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    inter = pd.read_csv(folder / "interactions.csv", dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(folder / "items.csv", dtype=str)
    tastes = json.loads((folder / "hidden_tastes.json").read_text())
    return inter, items, tastes


def test_loads_with_expected_counts(built: Path) -> None:
    dataset = load_dataset(built)
    assert dataset.warnings == []
    info = dataset.info()
    n_cold = round(CONFIG.cold_fraction * N_ITEMS)
    assert info["users"] == CONFIG.n_users
    assert info["items"] == N_ITEMS
    assert info["categories"] == 3
    assert info["cold_items"] == n_cold
    assert info["test"] == CONFIG.n_users and info["validation"] == CONFIG.n_users
    assert info["interactions"] == info["train"] + 2 * CONFIG.n_users
    assert (built / COMPLETE_MARKER).is_file()
    assert list(built.parent.glob(f".{built.name}.tmp-*")) == []
    assert not (built.parent / "escape.png").exists() and not (built / "escape.png").exists()


def test_items_table_and_images(built: Path) -> None:
    inter, items, tastes = _read(built)
    assert (built / "items.csv").read_text().splitlines()[0] == "item_id,category,subcategory,title,image"
    assert (built / "interactions.csv").read_text().splitlines()[0] == "user_id,item_id,timestamp"
    assert items.item_id.is_unique and len(items) == N_ITEMS
    # ids: "e" + the unified code points; variations included, entries without a PNG left out
    assert "e1f600" in set(items.item_id) and "e1f600-1f3fd" in set(items.item_id)
    assert "e1f607" not in set(items.item_id) and "e1f609" not in set(items.item_id)
    assert tastes["config"]["flagged_without_png"] == ["e1f609"]
    assert items.item_id.str.fullmatch(r"e[0-9a-f]+(-[0-9a-f]+)*").all()
    assert (items.image == "images/" + items.item_id + ".png").all()
    assert set(items.subcategory) == {s for ss in CATEGORIES.values() for s in ss}
    assert items.set_index("item_id").loc["e1f600-1f3fd", "title"] == "Test emoji 0: medium skin tone"
    # package sort order (sort_order descends with k here), variations right after their base
    assert items.item_id.iloc[-6:].tolist() == ["e1f600"] + [f"e1f600-{t.lower()}" for t in SKIN_TONES]
    assert sorted(p.name for p in (built / "images").iterdir()) == sorted(items.item_id + ".png")
    for rel in items.image:
        with Image.open(built / rel) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (64, 64))
            pixels = np.asarray(img)
        assert (pixels[0, 0] == 255).all()  # transparent corner composited on white
        centre = pixels[32, 32].astype(int)
        assert centre.max() - centre.min() > 40  # the half-transparent disc is coloured, not lost


def test_cold_items_only_in_test_rows(built: Path) -> None:
    inter, items, tastes = _read(built)
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert not inter.duplicated(["user_id", "timestamp"]).any()
    assert inter.groupby("user_id").timestamp.apply(lambda t: t.is_monotonic_increasing).all()
    split = _with_split(inter)
    cold = {i for i, info in tastes["items"].items() if info["cold"]}
    assert len(cold) == round(CONFIG.cold_fraction * N_ITEMS)
    assert set(split.loc[split.item_id.isin(cold), "split"]) == {"test"}
    assert split.loc[split.item_id.isin(cold)].item_id.value_counts().eq(1).all()
    assert set(split.loc[split.split == "test", "item_id"]) >= cold
    assert set(split.loc[split.split == "train", "item_id"]) == set(items.item_id) - cold
    dataset = load_dataset(built)
    assert set(np.asarray(dataset.items.ids)[dataset.cold_items]) == cold
    lengths = inter.groupby("user_id").size()
    assert lengths.min() >= emoji.MIN_INTERACTIONS


def test_hidden_tastes_shape(built: Path) -> None:
    inter, items, tastes = _read(built)
    assert set(tastes) >= {"categories", "subcategories", "users", "items", "config"}
    assert set(tastes["categories"]) == set(CATEGORIES)
    assert set(tastes["users"]) == set(inter.user_id) and len(tastes["users"]) == CONFIG.n_users
    assert set(tastes["items"]) == set(items.item_id)
    indexed = items.set_index("item_id")
    for item_id, info in tastes["items"].items():
        assert (info["category"], info["subcategory"]) == tuple(indexed.loc[item_id, ["category", "subcategory"]])
    for info in tastes["users"].values():
        assert 1 <= len(info["categories"]) <= 2 and 2 <= len(info["subcategories"]) <= 4
        assert set(info["categories"]) <= set(CATEGORIES)
        assert 0 <= info["community"] < CONFIG.n_communities
    assert tastes["config"]["seed"] == CONFIG.seed and tastes["config"]["n_users"] == CONFIG.n_users


def test_tastes_are_reflected_in_interactions(built: Path) -> None:
    lifts = taste_lifts(built)
    sub = lifts["subcategories"]
    # users favour 2-4 of the 6 subcategories, so the catalogue share is about half
    assert sub["share"] >= sub["catalogue"] + 0.2 and sub["lift"] >= 1.4
    assert lifts["categories"]["lift"] > 1.1
    # and independently of taste_lifts: per interaction, from the raw tables
    inter, items, tastes = _read(built)
    subcategory = items.set_index("item_id").subcategory
    fav = [subcategory[i] in tastes["users"][u]["subcategories"] for u, i in zip(inter.user_id, inter.item_id)]
    assert np.mean(fav) == pytest.approx(sub["share"], abs=0.05)


def test_deterministic(built: Path, package: Path, tmp_path: Path) -> None:
    again = make_emoji_dataset(tmp_path / "again", CONFIG, package=package, progress=False)
    for name in ("interactions.csv", "items.csv", "hidden_tastes.json"):
        assert (built / name).read_bytes() == (again / name).read_bytes(), name
    for path in sorted((built / "images").iterdir()):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(again / "images" / path.name)))
    other = make_emoji_dataset(tmp_path / "other", replace(CONFIG, seed=6), package=package, progress=False)
    assert (built / "interactions.csv").read_bytes() != (other / "interactions.csv").read_bytes()
    assert (built / "items.csv").read_bytes() == (other / "items.csv").read_bytes()


def test_npm_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        make_emoji_dataset(tmp_path / "out", CONFIG, progress=False)
    message = str(err.value)
    assert "npm was not found" in message and "Node.js" in message
    assert "npm pack emoji-datasource-google@16.0.0" in message and "--package" in message
    assert not (tmp_path / "out").exists()


def _fake_npm(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)


def test_npm_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_npm(tmp_path / "bin", 'echo "npm ERR! code E404 no such package" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(DataError, match=r"`npm pack` exited with status 1 \(npm ERR! code E404.*--package"):
        make_emoji_dataset(tmp_path / "out", CONFIG, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_cli_downloads_with_npm(
    tmp_path: Path, package: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Without --package, `npm pack SPEC --pack-destination DIR` is run and its tarball used."""
    log = tmp_path / "npm-args.txt"
    _fake_npm(tmp_path / "bin", f'echo "$@" > "{log}"\ncp "{package}" "$4/emoji-datasource-google-16.0.0.tgz"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "cli"
    assert main(["make-emoji", "--out", str(out), "--users", "50", "--seed", "2"]) == 0
    args = log.read_text().split()
    assert args[:3] == ["pack", "emoji-datasource-google@16.0.0", "--pack-destination"]
    assert not Path(args[3]).exists()  # the download folder is temporary
    printed = capsys.readouterr().out
    assert f"emoji dataset written to {out}" in printed
    assert "users: 50" in printed and f"items: {N_ITEMS}" in printed
    assert f"cold_items: {round(0.1 * N_ITEMS)}" in printed and "categories: 3" in printed
    assert json.loads((out / "hidden_tastes.json").read_text())["config"]["seed"] == 2


def test_cli_with_package_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = make_package(tmp_path / "nojson.tgz", with_json=False)
    assert main(["make-emoji", "--out", str(tmp_path / "d"), "--package", str(bad)]) == 2
    assert "has no package/emoji.json" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("case", ["no emoji.json", "not a tarball", "missing file", "bad json"])
def test_bad_package(case: str, tmp_path: Path) -> None:
    path = tmp_path / "pkg.tgz"
    if case == "no emoji.json":
        make_package(path, with_json=False)
        expected = "has no package/emoji.json"
    elif case == "not a tarball":
        path.write_bytes(b"this is not a tarball" * 50)
        expected = "cannot read .* as an npm package tarball"
    elif case == "missing file":
        expected = "does not exist"
    else:
        make_package(path, entries=[{"category": "x"}] * 3)
        expected = "lacks a usable field"
    with pytest.raises(DataError, match=expected):
        make_emoji_dataset(tmp_path / "out", CONFIG, package=path, progress=False)
    assert not (tmp_path / "out").exists()


def test_failure_leaves_no_half_written_folder(tmp_path: Path, package: Path) -> None:
    broken = make_package(tmp_path / "broken.tgz", broken_image="1f620.png")
    with pytest.raises(DataError, match="cannot decode the emoji image img/google/64/1f620.png"):
        make_emoji_dataset(tmp_path / "new", CONFIG, package=broken, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tgz"]  # no output, no temp folder

    # an existing dataset is kept as it was when the rebuild fails
    existing = make_emoji_dataset(tmp_path / "existing", CONFIG, package=package, progress=False)
    before = {p.relative_to(existing): p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match="cannot decode"):
        make_emoji_dataset(existing, replace(CONFIG, seed=9), package=broken, progress=False)
    assert {p.relative_to(existing): p.read_bytes() for p in existing.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tgz", "existing"]


def test_refuses_to_replace_other_folders(tmp_path: Path, package: Path) -> None:
    precious = tmp_path / "mine" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    with pytest.raises(DataError, match="refusing to replace"):
        make_emoji_dataset(precious.parent, CONFIG, package=package, progress=False)
    assert precious.read_text() == "keep me"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_users": 3}, "n_users must be at least 10"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"n_users": 10, "cold_fraction": 0.5}, "too few users"),  # 24 cold items, 10 users
    ],
)
def test_invalid_config(change: dict, message: str, tmp_path: Path, package: Path) -> None:
    with pytest.raises(DataError, match=message):
        make_emoji_dataset(tmp_path / "bad", replace(CONFIG, **change), package=package, progress=False)
    assert not (tmp_path / "bad").exists()


def test_default_data_dir() -> None:
    assert emoji.EMOJI_DATA_DIR == Path(emoji.__file__).resolve().parent.parent / "data" / "emoji"
