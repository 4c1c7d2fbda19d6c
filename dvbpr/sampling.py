"""Vectorised BPR triplet sampling.

An epoch visits every training interaction (u, i) once, in a random order, and draws a fresh
negative j for each: uniform over the negative pool minus u's training items. Re-sampling
negatives every epoch (instead of the tutorial's fixed triplet file) shows the model many more
(u, j) pairs. Everything is numpy array work: membership is tested with a binary search over the
sorted keys u * n_items + i, and rejected draws are redrawn until none is left.
"""

from __future__ import annotations

import numpy as np

from .errors import TrainingError

NEGATIVE_POOLS = ("all", "warm")


class TripletSampler:
    """Draws (user, positive, negative) index triplets for one epoch at a time.

    negatives="all": j uniform over every item not in u's training set (the paper).
    negatives="warm": j uniform over items that have training interactions only.
    """

    def __init__(self, train: np.ndarray, n_items: int, negatives: str = "all"):
        if negatives not in NEGATIVE_POOLS:
            raise TrainingError(f"unknown negative pool {negatives!r}; choose one of {NEGATIVE_POOLS}")
        if len(train) == 0:
            raise TrainingError("no training interactions to sample from")
        self.users = np.ascontiguousarray(train[:, 0], dtype=np.int64)
        self.positives = np.ascontiguousarray(train[:, 1], dtype=np.int64)
        self.n_items = n_items
        self._keys = np.unique(self.users * n_items + self.positives)
        if negatives == "warm":
            self.pool = np.unique(self.positives)
        else:
            self.pool = np.arange(n_items, dtype=np.int64)
        # A user who owns the whole pool has no negative: sampling would never end.
        owned = np.bincount(self._keys[np.isin(self._keys % n_items, self.pool)] // n_items)
        if len(owned) and owned.max() >= len(self.pool):
            user = int(np.argmax(owned >= len(self.pool)))
            raise TrainingError(f"user index {user} has interacted with every candidate item: no negatives")

    def __len__(self) -> int:
        return len(self.users)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        pos = np.searchsorted(self._keys, keys)
        pos[pos == len(self._keys)] = 0
        return self._keys[pos] == keys

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        neg = self.pool[rng.integers(0, len(self.pool), size=len(users))]
        bad = np.flatnonzero(self.is_positive(users, neg))
        while len(bad):  # expected redraws are few: users own a tiny share of the catalogue
            neg[bad] = self.pool[rng.integers(0, len(self.pool), size=len(bad))]
            bad = bad[self.is_positive(users[bad], neg[bad])]
        return neg

    def epoch(self, seed: int) -> np.ndarray:
        """All triplets of one epoch, shape (n, 3), a pure function of `seed` (so a resumed run
        regenerates exactly the epoch it stopped in)."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.users))
        users = self.users[order]
        return np.stack([users, self.positives[order], self.sample_negatives(users, rng)], axis=1)
