"""The shipped default model still loads with the current code and scores well on the current
default data (regenerated from the seed when missing, as on a fresh clone)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dvbpr.evaluate import evaluate_baselines, evaluate_model
from dvbpr.recommender import Recommender
from dvbpr.synth import DEFAULT_DATA_DIR, ensure_default_dataset
from dvbpr.train import ImageBatches

DEFAULT_MODEL = DEFAULT_DATA_DIR.parent.parent / "models" / "default"


@pytest.fixture(scope="module")
def rec() -> Recommender:
    ensure_default_dataset(progress=False)
    return Recommender.from_run(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="module")
def tastes() -> dict:
    return json.loads((DEFAULT_DATA_DIR / "hidden_tastes.json").read_text())


def test_default_model_meets_the_quality_bar(rec: Recommender) -> None:
    dvbpr = evaluate_model(rec.model, rec.dataset, ImageBatches(rec.store, rec.device), phi=rec.phi).metrics
    popularity = evaluate_baselines(rec.dataset)["popularity"].metrics
    assert dvbpr["users"] == rec.dataset.n_users
    assert dvbpr["auc"] >= 0.85
    assert dvbpr["auc_cold"] >= 0.75
    assert dvbpr["recall@20"] > popularity["recall@20"]


def test_single_colour_users_get_their_colour(rec: Recommender, tastes: dict) -> None:
    users = [u for u, t in tastes["users"].items() if len(t["colours"]) == 1]
    assert len(users) > 100
    item_colour = {i: t["colour"] for i, t in tastes["items"].items()}
    ids, _ = rec.recommend_batch(users, k=20)
    shares = np.array([np.mean([item_colour[i] == tastes["users"][u]["colours"][0] for i in top])
                       for u, top in zip(users, ids)])
    assert shares.mean() >= 0.60, f"mean share of the user's colour in the top 20: {shares.mean():.3f}"
