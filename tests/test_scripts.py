"""The research scripts whose figures docs/training.md reports: their building blocks do what
their docstrings say (the figures themselves need the emoji data, which CI does not fetch)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import torch

from dvbpr.data import load_dataset
from dvbpr.evaluate import evaluate_factors

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def test_label_features_give_the_asked_share_of_right_subcategories_and_every_category():
    label_ceiling = load_script("label_ceiling")
    rng = np.random.default_rng(0)
    category = np.repeat(np.array(["a", "b"]), 1000)
    subcategory = np.array([f"{c}{k}" for c, k in zip(category, rng.integers(0, 4, 2000))])
    features = label_ceiling.label_features(category, subcategory, 0.6, np.random.default_rng(1)).numpy()
    assert features.shape == (2000, 2 + 8)
    assert np.abs(features.mean(0)).max() < 1e-3  # centred, up to the tie-breaking offset
    categories, subcategories = np.array(["a", "b"]), np.unique(subcategory)
    assert (categories[features[:, :2].argmax(1)] == category).all()
    right = subcategories[features[:, 2:].argmax(1)] == subcategory
    assert 0.56 < right.mean() < 0.64
    wrong_within_category = subcategories[features[:, 2:].argmax(1)][~right].astype("<U1")
    assert (wrong_within_category == category[~right]).all()  # a wrong subcategory stays in its category


def test_fit_on_the_feature_the_users_follow_ranks_better_than_on_none(tiny_data):
    label_ceiling = load_script("label_ceiling")
    dataset = load_dataset(tiny_data, check_images=False)
    red = np.array([int(item_id[1:]) % 2 == 0 for item_id in dataset.items.ids], dtype=float)
    cfg = label_ceiling.FitConfig(epochs=15, patience=15)
    aucs = {}
    for name, features in {"colour": red[:, None] - red.mean(), "none": np.zeros((dataset.n_items, 1))}.items():
        model, val_auc = label_ceiling.fit(dataset, torch.as_tensor(features, dtype=torch.float32), cfg)
        cold = torch.as_tensor(dataset.cold_items)
        aucs[name] = evaluate_factors(model.serving_factors(cold), dataset, "test").metrics["auc"]
        assert 0.0 <= val_auc <= 1.0
    # Knowing the colour puts every item of the other colour (half the catalogue) below the
    # target: AUC >= 0.75; without it, matrix factorisation learns the colours less well.
    assert aucs["colour"] > 0.75, aucs
    assert aucs["colour"] > aucs["none"] + 0.05, aucs


def test_term_ablation_leaves_out_exactly_the_asked_terms(tiny_rec):
    term_ablation = load_script("term_ablation")
    factors, k = tiny_rec.factors, tiny_rec.factors.visual_dim
    users = torch.arange(3)
    full = factors.scores(users)
    visual = factors.users[users, :k] @ factors.items_t[:k]
    collaborative = factors.users[users, k:] @ factors.items_t[k:]
    cases = {(True, True): full, (False, True): full - visual, (True, False): full - collaborative}
    cases[(False, False)] = factors.bias.expand_as(full)
    for (with_visual, with_cf), expected in cases.items():
        scores = term_ablation.without_terms(factors, with_visual, with_cf).scores(users)
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(factors.scores(users), full)  # the run's own factors are left alone


def test_sparsify_keeps_each_users_last_two_rows_and_k_earlier_ones():
    sparsify = load_script("sparsify")
    rows = [(f"u{u}", f"i{k}", 1000 * u + (37 * k) % 11) for u in range(3) for k in range(2 + 3 * u)]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype(str)
    kept = sparsify.sparsify(interactions, keep=2, seed=0)
    assert list(kept.index) == sorted(kept.index)  # the original row order
    for user, group in interactions.groupby("user_id"):
        by_time = group.assign(t=group["timestamp"].astype(int)).sort_values("t", kind="stable")
        mine = kept[kept["user_id"] == user]
        assert set(by_time.index[-2:]) <= set(mine.index)  # test and validation targets stay
        assert len(mine) == 2 + min(2, len(group) - 2)
