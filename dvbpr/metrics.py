"""Pure ranking-metric functions: the reference definitions of every number the evaluator reports.

Conventions shared by all functions:

* A user's *targets* are their held-out items; *negatives* are the other candidate items (not
  excluded, not a target). Excluded items (the user's training items, ...) are not candidates.
* Ranks are 1-based and ties are broken **pessimistically**: a target ranks below every
  candidate that scores the same, other targets included::

      rank(t) = 1 + #{c candidate, c != t : score(c) >= score(t)}

* The rank-based metrics take ``ranks`` of shape ``(T,)`` for one user or ``(B, T)`` for a batch
  of users padded with ``np.inf`` (a padded slot is never a hit and adds nothing); they reduce
  the last axis, so a batch gives one value per user and a single user gives a float.
"""

from __future__ import annotations

import numpy as np

FloatOrArray = float | np.ndarray


def target_ranks(target_scores: np.ndarray, negative_scores: np.ndarray) -> np.ndarray:
    """Pessimistic 1-based rank of each of one user's targets among all of the user's candidates.

    ``rank(t) = 1 + #{j negative : s_j >= s_t} + #{t' target, t' != t : s_t' >= s_t}``

    Args:
        target_scores: ``(T,)`` scores of the user's targets.
        negative_scores: ``(M,)`` scores of the user's negatives.

    Returns:
        ``(T,)`` int64 ranks.
    """
    target_scores = np.asarray(target_scores, dtype=np.float64)
    negative_scores = np.asarray(negative_scores, dtype=np.float64)
    negatives_at_or_above = (negative_scores[None, :] >= target_scores[:, None]).sum(axis=1)
    # Each target is compared with itself too (s_t >= s_t), which supplies the leading "1 +".
    targets_at_or_above = (target_scores[None, :] >= target_scores[:, None]).sum(axis=1)
    return (negatives_at_or_above + targets_at_or_above).astype(np.int64)


def user_auc(target_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """One user's AUC: the share of (target, negative) pairs the scores order correctly.

    ``AUC_u = 1/T * sum_t #{j negative : s_j < s_t} / M``  (a tie counts as an error)

    Equal to ``sklearn.metrics.roc_auc_score`` (targets positive, negatives negative) when no
    target ties a negative. ``nan`` when the user has no target or no negative.

    Args:
        target_scores: ``(T,)`` scores of the user's targets.
        negative_scores: ``(M,)`` scores of the user's negatives.
    """
    target_scores = np.asarray(target_scores, dtype=np.float64)
    negative_scores = np.asarray(negative_scores, dtype=np.float64)
    if target_scores.size == 0 or negative_scores.size == 0:
        return float("nan")
    below = (negative_scores[None, :] < target_scores[:, None]).sum(axis=1)
    return float(np.mean(below / negative_scores.size))


def reciprocal_rank(ranks: np.ndarray) -> FloatOrArray:
    """Reciprocal rank of the best-ranked target: ``RR = 1 / min_t rank(t)``."""
    return 1.0 / np.min(ranks, axis=-1)


def recall_at_k(ranks: np.ndarray, n_targets: int | np.ndarray, k: int) -> FloatOrArray:
    """Share of the targets found in the top k: ``Recall@k = #{t : rank(t) <= k} / T``."""
    return np.sum(np.asarray(ranks) <= k, axis=-1) / n_targets


def precision_at_k(ranks: np.ndarray, k: int) -> FloatOrArray:
    """Share of the top k that are targets: ``Precision@k = #{t : rank(t) <= k} / k``.

    The denominator is k even when the user has fewer than k targets or candidates.
    """
    return np.sum(np.asarray(ranks) <= k, axis=-1) / k


def ndcg_at_k(ranks: np.ndarray, n_targets: int | np.ndarray, k: int) -> FloatOrArray:
    """Normalised discounted cumulative gain at k with binary relevance.

    ``DCG@k  = sum_{t : rank(t) <= k} 1 / log2(rank(t) + 1)``
    ``IDCG@k = sum_{r=1}^{min(T, k)} 1 / log2(r + 1)``
    ``nDCG@k = DCG@k / IDCG@k``

    Equal to ``sklearn.metrics.ndcg_score(..., k=k)`` when there are no ties.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    gains = np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))
    return gains.sum(axis=-1) / ideal[np.minimum(n_targets, k) - 1]


def coverage_at_k(topk_item_lists: np.ndarray, n_items: int) -> float:
    """Catalogue coverage: the share of the ``n_items`` items in at least one user's top k.

    ``Coverage@k = |union_u topk(u)| / n_items``

    Args:
        topk_item_lists: ``(U, k)`` item indices, one row per user; negative entries are
            padding (a user with fewer than k candidates).
        n_items: catalogue size.
    """
    items = np.asarray(topk_item_lists).ravel()
    listed = np.zeros(n_items, dtype=bool)
    listed[items[items >= 0]] = True
    return int(listed.sum()) / n_items


def sampled_auc(
    target_scores: np.ndarray,
    negative_scores: np.ndarray,
    rng: np.random.Generator,
    n_negatives: int = 100,
) -> float:
    """One user's AUC against ``n_negatives`` negatives drawn at random: the paper's protocol.

    Draws ``n_negatives`` distinct negatives uniformly (all of them if there are fewer) and
    returns :func:`user_auc` on them: ``1/T * sum_t #{j sampled : s_j < s_t} / n_negatives``.

    Only for comparison with the DVBPR paper (Kang et al., ICDM 2017), which reports it. Sampled
    metrics can rank models differently from the full-ranking ones (Krichene & Rendle, "On
    Sampled Metrics for Item Recommendation", KDD 2020): prefer :func:`user_auc`.

    Args:
        target_scores: ``(T,)`` scores of the user's held-out items.
        negative_scores: ``(M,)`` scores of every eligible negative (not in the user's
            training set, not held out).
        rng: the random generator the negatives are drawn with.
        n_negatives: how many negatives to draw.
    """
    negative_scores = np.asarray(negative_scores)
    n_drawn = min(n_negatives, negative_scores.size)
    chosen = rng.choice(negative_scores.size, size=n_drawn, replace=False)
    return user_auc(target_scores, negative_scores[chosen])
