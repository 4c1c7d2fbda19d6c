"""BPR triplet sampling: valid negatives, uniformity, warm pool, determinism, impossible users."""

from __future__ import annotations

import numpy as np
import pytest

from dvbpr.errors import TrainingError
from dvbpr.sampling import TripletSampler


def random_train(n_users: int, n_items: int, max_per_user: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=rng.integers(1, max_per_user + 1), replace=False)
        rows += [(u, i) for i in items]
    return np.array(rows, dtype=np.int64)


def test_negatives_never_in_the_users_training_set() -> None:
    # dense users (up to 90% of the catalogue) force many redraws
    train = random_train(n_users=300, n_items=60, max_per_user=54, seed=1)
    sampler = TripletSampler(train, 60)
    owned = {(int(u), int(i)) for u, i in train}
    for seed in range(3):
        triplets = sampler.epoch(seed)
        assert triplets.shape == (len(train), 3)
        assert not any((int(u), int(j)) in owned for u, _, j in triplets)
        # every training interaction appears once per epoch, as (user, positive)
        assert sorted(map(tuple, triplets[:, :2].tolist())) == sorted(map(tuple, train.tolist()))


def test_negatives_are_uniform_over_the_pool() -> None:
    n_items = 40
    train = np.array([(u, u % 10) for u in range(2000)], dtype=np.int64)  # each user owns one item
    sampler = TripletSampler(train, n_items)
    negs = np.concatenate([sampler.epoch(s)[:, 2] for s in range(10)])  # 20,000 draws
    counts = np.bincount(negs, minlength=n_items)
    # item k < 10 is excluded for the 200 users owning it: expected count is lower for them
    expected = np.full(n_items, len(negs) / 39)
    expected[:10] *= 0.9
    chi2 = float((((counts - expected) ** 2) / expected).sum())
    assert chi2 < 100, chi2  # 39 degrees of freedom: a uniform sampler stays far below
    assert counts.min() > 0


def test_warm_pool_draws_only_items_with_training_interactions() -> None:
    train = random_train(n_users=100, n_items=50, max_per_user=5, seed=2)
    train = train[train[:, 1] < 30]  # items 30..49 are cold
    sampler = TripletSampler(train, 50, negatives="warm")
    negs = sampler.epoch(0)[:, 2]
    assert set(np.unique(negs)) <= set(np.unique(train[:, 1]).tolist())
    assert len(np.unique(negs)) > 20
    all_pool = TripletSampler(train, 50, negatives="all").epoch(0)[:, 2]
    assert (all_pool >= 30).any()


def test_epoch_is_a_pure_function_of_the_seed() -> None:
    train = random_train(n_users=50, n_items=30, max_per_user=8, seed=3)
    a, b = TripletSampler(train, 30), TripletSampler(train, 30)
    np.testing.assert_array_equal(a.epoch(7), b.epoch(7))
    a.epoch(8)  # drawing other epochs in between changes nothing
    np.testing.assert_array_equal(a.epoch(7), b.epoch(7))
    assert not np.array_equal(a.epoch(7), a.epoch(9))


def test_user_owning_the_whole_pool_is_an_error() -> None:
    train = np.array([(0, 0), (0, 1), (0, 2), (1, 0)], dtype=np.int64)
    with pytest.raises(TrainingError, match="user index 0"):
        TripletSampler(train, 3)
    # with the warm pool, owning every warm item is just as impossible
    with pytest.raises(TrainingError, match="every candidate"):
        TripletSampler(np.array([(0, 0), (0, 1), (1, 1)]), 5, negatives="warm")
    TripletSampler(train, 4)  # one more item: fine
    with pytest.raises(TrainingError, match="negative pool"):
        TripletSampler(train, 4, negatives="cold")
    with pytest.raises(TrainingError, match="no training"):
        TripletSampler(np.zeros((0, 2), dtype=np.int64), 4)
