"""Embedding diagnostics (dvbpr.diagnostics): hand-computed cases of each measure, a collapsed
embedding told from a healthy one through `embedding_report`, the CLI flag, and the shipped model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dvbpr import cli
from dvbpr.data import load_dataset
from dvbpr.diagnostics import (
    COLOUR_TASTE_EXCESS,
    categorical_columns,
    chance_agreement,
    colour_coherence,
    colour_histograms,
    colour_note,
    covariance_eigenvalues,
    dead_units,
    embedding_report,
    format_report,
    linear_probe,
    near_duplicate_share,
    nearest_neighbours,
    neighbour_agreement,
    participation_ratio,
    taste_attribute,
    taste_lifts,
    variance_share,
)
from dvbpr.images import ImageStore
from dvbpr.model import CNNF, ModelConfig, build_cnn
from tests.conftest import is_red, make_community_dataset
from tests.helpers import make_tiny_dataset, write_csv

REPORT_KEYS = {
    "items",
    "K",
    "participation_ratio",
    "variance_share",
    "near_duplicate_threshold",
    "near_duplicate_share",
    "sample",
    "collapsed",
    "neighbour_agreement",
    "linear_probe",
    "dead_units",
    "dead_unit_images",
}


# --- spectrum ----------------------------------------------------------------------------------


def test_participation_ratio_of_a_rank_one_embedding_is_one() -> None:
    rng = np.random.default_rng(0)
    direction = rng.normal(size=12)
    phi = rng.normal(size=(300, 1)) * direction + 5.0  # a line, off the origin: centring matters
    assert participation_ratio(phi) == pytest.approx(1.0, abs=1e-6)
    assert variance_share(phi, (1, 3))[1] == pytest.approx(1.0, abs=1e-9)


def test_participation_ratio_of_an_isotropic_gaussian_is_close_to_k() -> None:
    phi = torch.randn(20_000, 20, generator=torch.Generator().manual_seed(0))
    assert participation_ratio(phi) == pytest.approx(20, rel=0.02)
    shares = variance_share(phi, (1, 5, 20, 50))
    assert shares[1] == pytest.approx(1 / 20, rel=0.1)
    assert shares[5] == pytest.approx(5 / 20, rel=0.05)
    assert shares[20] == pytest.approx(1.0) and shares[50] == pytest.approx(1.0)  # k >= K: all of it


def test_participation_ratio_of_two_orthogonal_equal_directions_is_two() -> None:
    # rows +-e1 and +-e3 (K = 4), 25 of each: two equal eigenvalues, the rest 0
    rows = [[1, 0, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, -1, 0]] * 25
    phi = np.array(rows, dtype=np.float32) * 3
    assert participation_ratio(phi) == pytest.approx(2.0, abs=1e-9)
    assert variance_share(phi, (1, 2, 3)) == pytest.approx({1: 0.5, 2: 1.0, 3: 1.0})
    eig = covariance_eigenvalues(phi)
    assert eig == pytest.approx([450, 450, 0, 0])  # s^2 of the centred matrix: 50 rows of +-3 per axis


def test_spectrum_of_a_constant_embedding_and_bad_shapes() -> None:
    phi = np.ones((10, 4))
    assert participation_ratio(phi) == 0.0  # no variance at all: maximally collapsed
    assert variance_share(phi, (1,)) == {1: 1.0}
    with pytest.raises(ValueError):
        participation_ratio(np.ones(5))
    with pytest.raises(ValueError):
        variance_share(phi, (0,))


def test_covariance_is_accumulated_in_chunks(monkeypatch) -> None:
    from dvbpr import diagnostics

    phi = np.random.default_rng(1).normal(size=(1000, 6)) * np.arange(1, 7)
    whole = covariance_eigenvalues(phi)
    monkeypatch.setattr(diagnostics, "_ROWS", 7)
    assert covariance_eigenvalues(phi) == pytest.approx(whole, rel=1e-9)
    centred = phi - phi.mean(0)
    assert whole == pytest.approx(np.linalg.svd(centred, compute_uv=False) ** 2, rel=1e-9)


# --- near duplicates and neighbours ---------------------------------------------------------


def test_near_duplicate_share_by_hand() -> None:
    phi = np.array([[1, 0, 0], [2, 0, 0.001], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    assert near_duplicate_share(phi, 0.99) == pytest.approx(1 / 6)  # 6 pairs, one duplicate
    assert near_duplicate_share(phi, -0.5) == pytest.approx(1.0)
    # larger than the sample: a fixed sample of items, same answer every time
    rng = np.random.default_rng(0)
    big = np.concatenate([np.tile([[1.0, 0.0]], (300, 1)), rng.normal(size=(300, 2))])
    a, b = near_duplicate_share(big, 0.999, sample=200), near_duplicate_share(big, 0.999, sample=200)
    assert a == b and 0.15 < a < 0.45  # about a quarter of pairs are between two copies
    assert near_duplicate_share(np.tile([[1.0, 2.0]], (3000, 1)), 0.99, sample=100) == 1.0


def test_near_duplicate_share_chunks_count_each_pair_once(monkeypatch) -> None:
    from dvbpr import diagnostics

    phi = np.random.default_rng(2).normal(size=(50, 3))
    whole = near_duplicate_share(phi, 0.5)
    monkeypatch.setattr(diagnostics, "_QUERIES", 7)
    assert near_duplicate_share(phi, 0.5) == whole
    unit = phi / np.linalg.norm(phi, axis=1, keepdims=True)
    cos = unit @ unit.T
    iu = np.triu_indices(50, 1)
    assert whole == pytest.approx((cos[iu] > 0.5).mean())


def test_nearest_neighbours_exclude_self(monkeypatch) -> None:
    from dvbpr import diagnostics

    phi = np.array([[1, 0], [1, 0.01], [0, 1], [-1, 0]], dtype=np.float32)
    assert nearest_neighbours(phi, np.arange(4)).tolist() == [1, 0, 1, 2]
    monkeypatch.setattr(diagnostics, "_SCORES", 5)  # one query per chunk
    assert nearest_neighbours(phi, np.arange(4)).tolist() == [1, 0, 1, 2]
    # among candidates only; a query outside the candidates may find any of them
    assert nearest_neighbours(phi, np.array([0, 3]), np.array([2, 3])).tolist() == [2, 2]
    assert nearest_neighbours(phi, np.array([0]), np.array([0])).tolist() == [-1]  # only itself


def test_chance_agreement_by_hand() -> None:
    assert chance_agreement(["a", "a", "b", "b", "b"]) == pytest.approx((2 * 1 + 3 * 2) / (5 * 4))
    assert chance_agreement(["a", "b", "", None, "a"]) == pytest.approx(2 / 6)  # missing left out
    assert chance_agreement(["x", "x"]) == 1.0
    assert math.isnan(chance_agreement(["x"]))


def test_neighbour_agreement_follows_clusters_and_random_is_near_chance() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    centres = rng.normal(size=(4, 16)) * 10
    clustered = centres[labels] + rng.normal(size=(2000, 16))
    result = neighbour_agreement(clustered, [f"c{v}" for v in labels])
    assert result["agreement"] == 1.0 and result["items"] == 2000 and result["missing"] == 0
    assert result["chance"] == pytest.approx(chance_agreement(labels.tolist()))
    random = neighbour_agreement(rng.normal(size=(2000, 16)), labels.tolist(), sample=1000)
    assert random["items"] == 1000
    assert abs(random["agreement"] - random["chance"]) < 0.06 and random["chance"] == pytest.approx(0.25, abs=0.02)


def test_linear_probe_scores_every_class_of_a_catalogue_sorted_by_label() -> None:
    """Real items.csv files are often sorted by category: the last quarter of such a catalogue
    holds classes the first three quarters lack, so the held-out split must not follow it."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 100)  # sorted: classes 6 and 7 are the last quarter
    phi = rng.normal(size=(8, 16))[y] + 0.1 * rng.normal(size=(800, 16))
    probe = linear_probe(phi, y.tolist())
    assert probe["accuracy"] > 0.98
    assert probe["majority"] < 0.3  # the scored quarter mixes the classes


def test_linear_probe_reads_directions_but_not_neighbourhoods() -> None:
    """Labels along one direction each: read off. Labels of alternating sectors of a circle:
    every item's neighbour shares its label, yet no straight direction separates them."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    directions = rng.normal(size=(4, 16))
    linear = directions[y] + 0.1 * rng.normal(size=(2000, 16))
    probe = linear_probe(linear, y.tolist())
    assert probe["accuracy"] > 0.98 and probe["items"] == 2000
    assert probe["majority"] == pytest.approx(np.bincount(y).max() / 2000, abs=0.06)
    angle = rng.uniform(0, 2 * np.pi, 2000)
    sectors = (np.floor(angle / (2 * np.pi / 12)) % 2).astype(int)  # 12 sectors, labels 0 1 0 1 ...
    circle = np.stack([np.cos(angle), np.sin(angle)], 1)
    assert neighbour_agreement(circle, sectors.tolist())["agreement"] > 0.95
    assert linear_probe(circle, sectors.tolist())["accuracy"] < 0.65
    assert linear_probe(rng.normal(size=(2000, 16)), y.tolist())["accuracy"] < 0.35  # noise: chance


def test_neighbour_agreement_leaves_out_missing_labels() -> None:
    # items 0 and 1 coincide; item 1's label is missing, so item 0's neighbour is item 2 ("b")
    phi = np.array([[1, 0], [1, 0], [0.9, 0.5], [0, 1], [0.1, 1]], dtype=np.float32)
    result = neighbour_agreement(phi, ["a", "", "b", "c", "c"])
    assert result["missing"] == 1 and result["items"] == 4
    assert result["agreement"] == pytest.approx(2 / 4)  # 3 <-> 4 agree, 0 -> 2 and 2 -> 0 do not
    with pytest.raises(ValueError):
        neighbour_agreement(phi, ["a"])


# --- tastes -------------------------------------------------------------------------------------


def test_taste_attribute_plural_to_singular() -> None:
    assert taste_attribute("colours") == "colour"
    assert taste_attribute("categories") == "category"
    assert taste_attribute("subcategories") == "subcategory"
    assert taste_attribute("patterns") == "pattern"


def test_taste_lifts_by_hand() -> None:
    items = {
        "i1": {"colour": "red", "category": "tops"},
        "i2": {"colour": "red", "category": "shoes"},
        "i3": {"colour": "blue", "category": "tops"},
        "i4": {"colour": "green", "category": "bags"},
    }
    tastes = {
        "u1": {"colours": ["red"], "categories": ["tops"], "community": 3},
        "u2": {"colours": ["blue", "green"], "categories": [], "sizes": ["xl"]},
    }
    top = {"u1": ["i1", "i2"], "u2": ["i3", "i1"]}
    train = {"u1": ["i1", "i3"], "u2": ["i4"]}
    lifts = taste_lifts(top, train, tastes, items)
    assert set(lifts) == {"colours", "categories"}  # community: not a list; sizes: no item has one
    c = lifts["colours"]
    # u1: top 2/2 red, catalogue 2/4 red; u2: top 1/2 blue or green, catalogue 2/4
    assert c["top_share"] == pytest.approx((1 + 0.5) / 2)
    assert c["catalogue_share"] == pytest.approx(0.5)
    assert c["lift"] == pytest.approx(1.5)
    assert c["interactions_share"] == pytest.approx((0.5 + 1) / 2) and c["interactions_lift"] == pytest.approx(1.5)
    t = lifts["categories"]  # u2 has no favourite category: u1 only
    assert t["users"] == 1 and t["top_share"] == 0.5 and t["catalogue_share"] == 0.5 and t["lift"] == 1.0
    assert t["interactions_share"] == 1.0 and t["interactions_lift"] == 2.0


# --- the report ---------------------------------------------------------------------------------


def test_dead_units_counts_units_that_never_fire() -> None:
    torch.manual_seed(0)
    cnn = CNNF(4, 32, small=True)
    convs = [m for m in cnn.features if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in cnn.classifier if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        convs[1].weight[:8] = 0.0  # 8 of conv2's 32 channels: output = bias < 0 everywhere
        convs[1].bias[:8] = -1.0
        convs[1].bias[8:] = 5.0  # the others always fire
        fcs[1].weight[:] = 0.0  # fc2: every neuron silent
        fcs[1].bias[:] = -1.0
    dead = dead_units(cnn, torch.rand(10, 3, 32, 32) * 2 - 1, batch_size=4)
    assert list(dead) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2"]
    assert dead["conv2"] == pytest.approx(8 / 32) and dead["fc2"] == 1.0
    assert all(0.0 <= v <= 1.0 for v in dead.values())
    assert cnn.training  # left as it was, and no hook on it (a shared model serves other threads)
    assert not any(m._forward_hooks for m in cnn.modules())


def test_dead_units_of_a_two_stream_cnn_are_named_by_stream() -> None:
    cfg = ModelConfig(n_users=2, n_items=2, image_size=32, dim=4, norm="batch", colour_stream=True)
    dead = dead_units(build_cnn(cfg), torch.rand(10, 3, 32, 32) * 2 - 1)
    shape = [f"shape.conv{j}" for j in range(1, 6)] + ["shape.fc1", "shape.fc2"]
    assert list(dead) == shape + ["colour.conv1", "colour.conv2"]


# ----------------------------------------------------------------------------- colour in the data
SOLID = [(220, 30, 30), (30, 160, 40), (40, 60, 210), (230, 200, 20)]  # red, green, blue, yellow


def _solid_images(colours: list[int], size: int = 16) -> np.ndarray:
    """Item j: a square of colour SOLID[colours[j]] on a white border (the background)."""
    images = np.full((len(colours), size, size, 3), 255, dtype=np.uint8)
    for j, c in enumerate(colours):
        images[j, 4:-4, 4:-4] = SOLID[c]
    return images


def test_colour_histograms_leave_out_the_background() -> None:
    framed = _solid_images([0, 0, 2])
    framed[1, :, :] = SOLID[0]  # the same red without a border
    framed[2, 4:8, 4:-4] = SOLID[0]  # half red, half blue
    blank = np.full((1, 16, 16, 3), 250, dtype=np.uint8)  # near-white: all background
    h = colour_histograms(np.concatenate([framed, blank]))
    assert h.shape == (4, 64)
    assert np.allclose(np.linalg.norm(h[:3], axis=1), 1.0) and not h[3].any()
    assert h[0] @ h[1] == pytest.approx(1.0)  # the white border does not count
    assert h[0] @ h[2] == pytest.approx(math.sqrt(0.5))  # Bhattacharyya of (1, 0) and (1/2, 1/2)
    assert np.array_equal(colour_histograms(framed, np.array([2, 0])), h[[2, 0]])  # chosen rows


def test_colour_coherence_tells_a_colour_taste_from_none() -> None:
    rng = np.random.default_rng(0)
    colours = [j % 4 for j in range(80)]
    images = _solid_images(colours)
    by_colour = [[j for j in range(80) if colours[j] == c] for c in range(4)]
    taste = np.array([(u, j) for u in range(200) for j in rng.choice(by_colour[u % 4], 6, replace=False)])
    none = np.array([(u, j) for u in range(200) for j in rng.choice(80, 6, replace=False)])
    loves = colour_coherence(images, taste, pairs=5000)
    indifferent = colour_coherence(images, none, pairs=5000)
    assert loves["within_user"] == pytest.approx(1.0) and loves["users"] == 200
    assert loves["random_pairs"] == pytest.approx(0.25, abs=0.03)  # 4 colours, equally consumed
    assert loves["excess"] == pytest.approx(1.0)
    assert abs(indifferent["excess"]) < 0.05 and indifferent["within_user"] == pytest.approx(0.25, abs=0.03)
    assert colour_coherence(images, taste, users=10)["users"] == 10
    assert colour_coherence(images, np.array([(0, 1), (1, 2)])) is None  # nobody with two items
    assert colour_coherence(images, np.array([(0, 1), (0, 2)])) is None  # one user: no random pair
    note = colour_note(indifferent, colour_stream=True)
    assert "hardly a taste" in note and "--no-colour-stream" in note
    assert colour_note(indifferent, colour_stream=False) is None  # one CNN already
    assert colour_note(loves, colour_stream=True) is None and colour_note(None, colour_stream=True) is None
    assert colour_note({"excess": COLOUR_TASTE_EXCESS}, colour_stream=True) is None  # the threshold itself


def test_item_table_keeps_every_items_csv_column(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "d", n_items=4, n_users=3)
    write_csv(
        root / "items.csv",
        [
            {"item_id": f" i{j} ", "category": "tops", "title": f"T{j}", "Colour": ["red", "blue", " red "][j]}
            for j in range(3)
        ],
    )
    ds = load_dataset(root)  # i3 appears in interactions only
    table = ds.item_table()
    assert set(table) == {"item_id", "category", "title", "colour"}
    order = [ds.items.index(f"i{j}") for j in range(4)]
    assert [table["colour"][i] for i in order] == ["red", "blue", "red", ""]
    assert table["item_id"] == ds.items.ids
    assert categorical_columns(table, ds.n_items) == {"colour": table["colour"]}  # 2 values of 4 items
    no_items = load_dataset(make_tiny_dataset(tmp_path / "e", items_csv=False))
    assert no_items.item_table() == {"item_id": no_items.items.ids}


def _fake_rec(root: Path, phi: np.ndarray) -> SimpleNamespace:
    """What embedding_report reads of a Recommender: each red user is recommended the red items."""
    ds = load_dataset(root)
    train_ptr, train_idx = ds.user_items("train")
    red_items = [i for i in ds.items.ids if is_red(int(i[1:]))]
    blue_items = [i for i in ds.items.ids if not is_red(int(i[1:]))]

    def recommend_batch(users, k=20):
        return [(red_items if int(u[1:]) % 2 == 0 else blue_items)[:k] for u in users], None

    def user_history(user):
        u = ds.users.index(user)
        return ds.items.to_ids(train_idx[train_ptr[u] : train_ptr[u + 1]])

    cnn = CNNF(phi.shape[1], 32, small=True, norm=True)
    return SimpleNamespace(
        dataset=ds,
        phi=torch.as_tensor(phi, dtype=torch.float32),
        recommend_batch=recommend_batch,
        user_history=user_history,
        model=SimpleNamespace(cnn=cnn),
        store=ImageStore.open(ds, 32, progress=False),
        device=torch.device("cpu"),
    )


def test_embedding_report_flags_a_collapsed_embedding(tmp_path: Path) -> None:
    root = make_community_dataset(tmp_path / "data")
    ds = load_dataset(root)
    colour = np.array(["red" if c == "red" else "blue" for c in ds.item_categories])
    (root / "hidden_tastes.json").write_text(
        json.dumps(
            {
                "users": {
                    u: {"colours": ["red" if int(u[1:]) % 2 == 0 else "blue"], "community": 0} for u in ds.users.ids
                },
                "items": {i: {"colour": str(c), "cold": False} for i, c in zip(ds.items.ids, colour)},
            }
        )
    )
    rng = np.random.default_rng(0)
    K, n = 32, ds.n_items
    healthy = rng.normal(size=(n, K))
    collapsed = np.outer(rng.normal(size=n), rng.normal(size=K)) + 1e-4 * rng.normal(size=(n, K))

    good = embedding_report(_fake_rec(root, healthy))
    bad = embedding_report(_fake_rec(root, collapsed))
    for report in (good, bad):
        assert REPORT_KEYS | {"taste_lifts", "taste_k"} <= set(report)
        assert report["K"] == K and report["items"] == n
        assert json.loads(json.dumps(report)) == report  # JSON-able as it is
        assert set(report["neighbour_agreement"]) == {"category"}  # title: one value per item
        assert set(report["variance_share"]) == {"1", "3", "5", "10"}
    assert not good["collapsed"] and good["participation_ratio"] > 10 and good["near_duplicate_share"] < 0.01
    assert bad["collapsed"] and bad["participation_ratio"] < 1.01 and bad["near_duplicate_share"] > 0.4
    assert bad["variance_share"]["1"] > 0.999
    lift = good["taste_lifts"]["colours"]  # each user gets only their colour: share 1
    assert lift["top_share"] == 1.0 and lift["catalogue_share"] == pytest.approx(0.5)
    assert lift["lift"] == pytest.approx(2.0) and lift["interactions_lift"] == pytest.approx(2.0)
    text = format_report(bad)
    assert "participation ratio" in text and "collapsed" in text and "colours" in text
    assert "collapsed" not in format_report(good)
    colour = good["colour_coherence"]  # red users consume red items, blue users blue ones
    assert colour["excess"] > 0.5 and colour["within_user"] > colour["random_pairs"]
    assert good["colour_stream"] is False and "colour in the data" in text and "hardly a taste" not in text
    faint = {**colour, "excess": 0.01}
    assert "hardly a taste" in format_report({**good, "colour_coherence": faint, "colour_stream": True})
    assert "hardly a taste" not in format_report({**good, "colour_coherence": faint})  # one CNN: no advice
    (root / "hidden_tastes.json").unlink()
    assert "taste_lifts" not in embedding_report(_fake_rec(root, healthy))


def test_cli_evaluate_embedding_json(capsys, tiny_run: Path) -> None:
    code = cli.main(["evaluate", str(tiny_run), "--json", "--device", "cpu", "--embedding"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and set(out) == {"dvbpr", "embedding"}
    report = out["embedding"]
    assert REPORT_KEYS <= set(report) and report["K"] == 8
    assert 1 <= report["participation_ratio"] <= 8
    assert set(report["neighbour_agreement"]) == {"category"}  # red / blue
    code = cli.main(["evaluate", str(tiny_run), "--json", "--device", "cpu"])
    assert code == 0 and set(json.loads(capsys.readouterr().out)) == {"dvbpr"}  # unchanged without it
    code = cli.main(["evaluate", str(tiny_run), "--device", "cpu", "--embedding"])
    out = capsys.readouterr().out
    assert code == 0 and "participation ratio" in out and "AUC" in out.upper()


def test_report_on_the_shipped_default_model() -> None:
    """Keys and ranges only: the shipped model is being retrained, its values will change."""
    from dvbpr.recommender import Recommender
    from dvbpr.synth import DEFAULT_DATA_DIR, ensure_default_dataset

    ensure_default_dataset(progress=False)
    rec = Recommender.from_run(DEFAULT_DATA_DIR.parent.parent / "models" / "default", device="cpu")
    report = embedding_report(rec)
    assert REPORT_KEYS | {"taste_lifts"} <= set(report)
    K = report["K"]
    assert K == rec.phi.shape[1] and 1 <= report["participation_ratio"] <= K
    shares = [report["variance_share"][k] for k in ("1", "3", "5", "10")]
    assert all(0 <= s <= 1 + 1e-9 for s in shares) and shares == sorted(shares)
    assert 0 <= report["near_duplicate_share"] <= 1
    assert set(report["neighbour_agreement"]) == {"category", "colour", "pattern"}
    for row in report["neighbour_agreement"].values():
        assert 0 <= row["agreement"] <= 1 and 0 < row["chance"] < 1 and row["items"] == rec.dataset.n_items
    assert set(report["taste_lifts"]) == {"colours", "patterns", "categories"}
    assert report["colour_stream"] and report["colour_coherence"]["excess"] > 0.2  # colour is the first taste
    for row in report["taste_lifts"].values():
        assert 0 <= row["top_share"] <= 1 and 0 < row["catalogue_share"] < 1 and row["lift"] >= 0
        assert 0 <= row["interactions_share"] <= 1 and row["users"] == rec.dataset.n_users
