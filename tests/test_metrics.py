"""Ranking metrics: hand-computed cases, sklearn agreement, and the vectorised evaluator checked
against a plain per-user loop over the reference functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score, roc_auc_score

from dvbpr import evaluate_core, metrics
from dvbpr.evaluate_core import evaluate_ranking

# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# One user, targets scored [5, 3], negatives scored [4, 5, 1].


def test_target_ranks_hand_computed() -> None:
    # target 5: 1 + #neg>=5 {5} + #other targets>=5 {} = 1 + 1 + 0 = 2
    # target 3: 1 + #neg>=3 {4, 5} + #other targets>=3 {5} = 1 + 2 + 1 = 4
    assert metrics.target_ranks(np.array([5.0, 3.0]), np.array([4.0, 5.0, 1.0])).tolist() == [2, 4]


def test_user_auc_hand_computed() -> None:
    # target 5: negatives strictly below {4, 1} -> 2/3 (the tie with 5 loses)
    # target 3: negatives strictly below {1}    -> 1/3
    # mean = (2/3 + 1/3) / 2 = 0.5
    assert metrics.user_auc(np.array([5.0, 3.0]), np.array([4.0, 5.0, 1.0])) == pytest.approx(0.5)


def test_rank_metrics_hand_computed() -> None:
    ranks = np.array([2, 4])  # from the case above, 2 targets
    assert metrics.reciprocal_rank(ranks) == pytest.approx(1 / 2)  # 1 / min(2, 4)
    assert metrics.recall_at_k(ranks, 2, 3) == pytest.approx(1 / 2)  # hits {2} / 2 targets
    assert metrics.precision_at_k(ranks, 3) == pytest.approx(1 / 3)  # hits {2} / k = 3
    assert metrics.recall_at_k(ranks, 2, 4) == pytest.approx(1.0)  # hits {2, 4} / 2
    assert metrics.precision_at_k(ranks, 4) == pytest.approx(2 / 4)
    # nDCG@3: DCG = 1/log2(2+1); IDCG = 1/log2(2) + 1/log2(3) = 1 + 1/log2(3)
    idcg = 1 + 1 / math.log2(3)
    assert metrics.ndcg_at_k(ranks, 2, 3) == pytest.approx((1 / math.log2(3)) / idcg)
    # nDCG@4: DCG = 1/log2(3) + 1/log2(5); IDCG as above (min(T, k) = 2 terms)
    assert metrics.ndcg_at_k(ranks, 2, 4) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg)
    assert metrics.ndcg_at_k(np.array([1]), 1, 20) == pytest.approx(1.0)


def test_ndcg_more_targets_than_k() -> None:
    # 3 targets at ranks 1, 3, 5; k = 2: DCG = 1/log2(2) = 1; IDCG = 1 + 1/log2(3) (min(3, 2) = 2)
    assert metrics.ndcg_at_k(np.array([1, 3, 5]), 3, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_rank_metrics_on_padded_batch() -> None:
    # user 0: ranks [2, 4] (2 targets); user 1: rank [1] padded with inf (1 target)
    ranks = np.array([[2.0, 4.0], [1.0, np.inf]])
    n_targets = np.array([2, 1])
    np.testing.assert_allclose(metrics.reciprocal_rank(ranks), [1 / 2, 1.0])
    np.testing.assert_allclose(metrics.recall_at_k(ranks, n_targets, 3), [1 / 2, 1.0])
    np.testing.assert_allclose(metrics.precision_at_k(ranks, 3), [1 / 3, 1 / 3])
    np.testing.assert_allclose(
        metrics.ndcg_at_k(ranks, n_targets, 3), [(1 / math.log2(3)) / (1 + 1 / math.log2(3)), 1.0]
    )


def test_ties_are_pessimistic() -> None:
    # every one of 5 candidates scores 1: the target ranks last (1 + 4 ties) and wins no pair
    target, negatives = np.array([1.0]), np.ones(4)
    assert metrics.target_ranks(target, negatives).tolist() == [5]
    assert metrics.user_auc(target, negatives) == 0.0
    # two tied targets: each counts the other as at-or-above -> both rank 2
    assert metrics.target_ranks(np.array([3.0, 3.0]), np.array([1.0])).tolist() == [2, 2]


def test_single_candidate_besides_target() -> None:
    assert metrics.target_ranks(np.array([2.0]), np.array([1.0])).tolist() == [1]
    assert metrics.user_auc(np.array([2.0]), np.array([1.0])) == 1.0
    assert metrics.target_ranks(np.array([1.0]), np.array([1.0])).tolist() == [2]  # tie loses
    assert metrics.user_auc(np.array([1.0]), np.array([1.0])) == 0.0
    assert metrics.user_auc(np.array([0.5]), np.array([1.0])) == 0.0


def test_auc_undefined_is_nan() -> None:
    assert math.isnan(metrics.user_auc(np.array([1.0]), np.array([])))
    assert math.isnan(metrics.user_auc(np.array([]), np.array([1.0])))


def test_coverage_hand_computed() -> None:
    # union {0, 1, 2} out of 5 items -> 3/5; -1 is padding
    assert metrics.coverage_at_k(np.array([[0, 1], [1, 2], [2, -1]]), 5) == pytest.approx(3 / 5)


def test_sampled_auc_exact_cases() -> None:
    rng = np.random.default_rng(0)
    negatives = rng.normal(size=1000)
    assert metrics.sampled_auc(np.array([10.0]), negatives, rng) == 1.0  # above all
    assert metrics.sampled_auc(np.array([-10.0]), negatives, rng) == 0.0  # below all
    # fewer negatives than 100: all are used; target 2 beats {0, 1} but not the tie {2}
    few = np.array([0.0, 1.0, 2.0])
    assert metrics.sampled_auc(np.array([2.0]), few, rng) == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------
# Agreement with sklearn on tie-free data


@pytest.mark.parametrize("seed", range(5))
def test_user_auc_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_targets, n_negatives = int(rng.integers(1, 6)), int(rng.integers(1, 50))
    scores = rng.permutation(n_targets + n_negatives).astype(float)  # distinct: no ties
    labels = np.r_[np.ones(n_targets), np.zeros(n_negatives)]
    expected = roc_auc_score(labels, scores)
    assert metrics.user_auc(scores[:n_targets], scores[n_targets:]) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_ndcg_matches_sklearn(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n_targets, n_negatives = int(rng.integers(1, 8)), int(rng.integers(1, 60))
    scores = rng.normal(size=n_targets + n_negatives)
    labels = np.r_[np.ones(n_targets), np.zeros(n_negatives)]
    ranks = metrics.target_ranks(scores[:n_targets], scores[n_targets:])
    expected = ndcg_score(labels[None, :], scores[None, :], k=k)
    assert metrics.ndcg_at_k(ranks, n_targets, k) == pytest.approx(expected)


def test_ranks_match_argsort_without_ties() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=30)
    targets = np.array([3, 17, 25])
    negatives = np.setdiff1d(np.arange(30), targets)
    order = np.argsort(-scores)
    expected = [int(np.flatnonzero(order == t)[0]) + 1 for t in targets]
    assert metrics.target_ranks(scores[targets], scores[negatives]).tolist() == expected


# ---------------------------------------------------------------------------------------------
# The vectorised evaluator against a per-user loop


def _csr(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.r_[0, np.cumsum([len(x) for x in lists])].astype(np.int64)
    indices = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
    return indptr, indices


def _random_case(seed: int, n_users: int = 60, n_items: int = 40, score_levels: int = 4) -> dict:
    """Integer-valued scores (many ties), 1-5 targets per user, excluded items that sometimes
    overlap the targets, ~30% cold items, and a user without any negative."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, score_levels, size=(n_users + 5, n_items)).astype(np.float32)
    users = rng.permutation(n_users + 5)[:n_users]
    targets, excluded = [], []
    for _ in range(n_users):
        items = rng.permutation(n_items)
        n_t = int(rng.choice([1, 1, 2, 3, 5]))
        t = items[:n_t]
        e = items[n_t : n_t + int(rng.integers(0, n_items // 2))]
        if rng.random() < 0.3:  # excluded set overlapping the targets
            e = np.r_[e, t[:1]]
        targets.append(t)
        excluded.append(rng.permutation(e))
    # a user whose only candidates are their targets (no negatives: AUC nan)
    targets[0] = np.array([0, 1])
    excluded[0] = np.arange(2, n_items)
    cold = rng.random(n_items) < 0.3
    cold[[0, 1]] = True
    t_ptr, t_idx = _csr(targets)
    e_ptr, e_idx = _csr(excluded)
    return dict(
        scores=scores,
        n_items=n_items,
        users=users,
        target_indptr=t_ptr,
        target_indices=t_idx,
        exclude_indptr=e_ptr,
        exclude_indices=e_idx,
        cold_items=cold,
    )


def _row(indptr: np.ndarray, indices: np.ndarray, r: int) -> np.ndarray:
    return indices[indptr[r] : indptr[r + 1]]


def _evaluate(
    case: dict,
    dtype: torch.dtype = torch.float32,
    **kwargs,
) -> evaluate_core.RankingResult:
    table = torch.from_numpy(case["scores"]).to(dtype)
    inputs = {k: v for k, v in case.items() if k != "scores"}
    return evaluate_ranking(lambda users: table[users], **inputs, **kwargs)


def _reference(case: dict, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The per-user loop over metrics.py's reference functions."""
    n_items, cold = case["n_items"], case["cold_items"]
    out: dict[str, list] = {}
    for r, user in enumerate(case["users"]):
        targets = _row(case["target_indptr"], case["target_indices"], r)
        negative = np.ones(n_items, dtype=bool)
        negative[_row(case["exclude_indptr"], case["exclude_indices"], r)] = False
        negative[targets] = False
        s = case["scores"][user].astype(np.float64)
        ranks = metrics.target_ranks(s[targets], s[negative])
        cold_targets, warm_targets = targets[cold[targets]], targets[~cold[targets]]
        row = {
            "n_targets": len(targets),
            "best_rank": ranks.min(),
            "rr": metrics.reciprocal_rank(ranks),
            "auc": metrics.user_auc(s[targets], s[negative]),
            "auc_cold": metrics.user_auc(s[cold_targets], s[negative]),
            "auc_cold_among_cold": metrics.user_auc(s[cold_targets], s[negative & cold]),
            "auc_warm": metrics.user_auc(s[warm_targets], s[negative]),
        }
        for k in ks:
            row[f"recall@{k}"] = metrics.recall_at_k(ranks, len(targets), k)
            row[f"precision@{k}"] = metrics.precision_at_k(ranks, k)
            row[f"ndcg@{k}"] = metrics.ndcg_at_k(ranks, len(targets), k)
        for name, value in row.items():
            out.setdefault(name, []).append(value)
    return {name: np.array(values) for name, values in out.items()}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk_size", [7, 1024])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_evaluator_matches_per_user_loop(
    seed: int,
    chunk_size: int,
    dtype: torch.dtype,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tiny comparison blocks so that the blocked counting is exercised too
    monkeypatch.setattr(evaluate_core, "_CPU_BLOCK_COMPARISONS", 100)
    case = _random_case(seed)  # integer scores: exact in every dtype
    ks = (1, 3, 10)
    result = _evaluate(case, dtype, ks=ks, chunk_size=chunk_size)
    expected = _reference(case, ks)

    np.testing.assert_array_equal(result.per_user["user"], case["users"])
    for name, values in expected.items():
        np.testing.assert_allclose(result.per_user[name], values, rtol=1e-12, atol=0, err_msg=name)
    assert np.isnan(result.per_user["auc"][0])  # the user without negatives
    has_cold = ~np.isnan(expected["auc_cold"])
    has_cold[0] = True  # user 0: cold targets but no negatives, so a nan AUC
    assert result.metrics["cold_users"] == has_cold.sum() > 0
    assert result.metrics["users"] == len(case["users"])
    for name in ("auc", "rr", *(f"{m}@{k}" for m in ("recall", "precision", "ndcg") for k in ks)):
        assert result.metrics[name] == pytest.approx(np.nanmean(expected[name]), rel=1e-12), name
    for name in ("auc_cold", "auc_cold_among_cold", "auc_warm"):
        assert result.metrics[name] == pytest.approx(np.nanmean(expected[name]), rel=1e-12), name


def test_evaluator_metric_keys() -> None:
    result = _evaluate(_random_case(0), ks=(5, 20))
    assert set(result.metrics) == {
        "auc",
        "auc_cold",
        "auc_cold_among_cold",
        "auc_warm",
        "rr",
        "recall@5",
        "precision@5",
        "ndcg@5",
        "coverage@5",
        "recall@20",
        "precision@20",
        "ndcg@20",
        "coverage@20",
        "auc_sampled100",
        "users",
        "cold_users",
    }
    assert isinstance(result.metrics["users"], int)
    assert isinstance(result.metrics["cold_users"], int)


def test_evaluator_coverage_without_ties() -> None:
    case = _random_case(3, n_users=30, n_items=200)
    case["scores"] = np.random.default_rng(3).normal(size=case["scores"].shape).astype(np.float32)
    ks = (1, 5, 50)  # user 0 has 2 candidates only: its top 50 is 48 slots of padding
    result = _evaluate(case, ks=ks, chunk_size=8)
    for k in ks:
        lists = []
        for r, user in enumerate(case["users"]):
            excluded = _row(case["exclude_indptr"], case["exclude_indices"], r)
            targets = _row(case["target_indptr"], case["target_indices"], r)
            candidates = np.setdiff1d(np.arange(case["n_items"]), np.setdiff1d(excluded, targets))
            top = candidates[np.argsort(-case["scores"][user][candidates])][:k]
            lists.append(np.pad(top, (0, k - top.size), constant_values=-1))
        expected = metrics.coverage_at_k(np.array(lists), case["n_items"])
        assert result.metrics[f"coverage@{k}"] == pytest.approx(expected)


def _constructed_case(target_score: float, n_items: int = 500) -> dict:
    """Users 0..9 with target item u, every other item scoring 0, train items 10..19 excluded."""
    n_users = 10
    scores = np.zeros((n_users, n_items), dtype=np.float32)
    scores[np.arange(n_users), np.arange(n_users)] = target_score
    t_ptr, t_idx = _csr([np.array([u]) for u in range(n_users)])
    e_ptr, e_idx = _csr([np.arange(10, 20) for _ in range(n_users)])
    return dict(
        scores=scores,
        n_items=n_items,
        users=np.arange(n_users),
        target_indptr=t_ptr,
        target_indices=t_idx,
        exclude_indptr=e_ptr,
        exclude_indices=e_idx,
        cold_items=np.zeros(n_items, dtype=bool),
    )


@pytest.mark.parametrize(("target_score", "expected"), [(1.0, 1.0), (-1.0, 0.0), (0.0, 0.0)])
def test_sampled_auc_exact(target_score: float, expected: float) -> None:
    # above all -> 1; below all -> 0; tied with all -> 0 (ties lose)
    result = _evaluate(_constructed_case(target_score), chunk_size=3)
    assert result.metrics["auc_sampled100"] == expected
    assert result.metrics["auc"] == expected
    np.testing.assert_array_equal(result.per_user["auc_sampled100"], expected)


def test_sampled_auc_draws_only_negatives_and_all_when_few() -> None:
    # 6 items; item 0 is the target (score 3), item 5 excluded (score 9: would lose if drawn).
    # Negatives 1..4 score [0, 1, 3, 4]: fewer than 100, all drawn; below 3: {0, 1} -> 2/4.
    scores = np.array([[3.0, 0.0, 1.0, 3.0, 4.0, 9.0]], dtype=np.float32)
    case = dict(
        scores=scores,
        n_items=6,
        users=np.array([0]),
        target_indptr=np.array([0, 1]),
        target_indices=np.array([0]),
        exclude_indptr=np.array([0, 1]),
        exclude_indices=np.array([5]),
        cold_items=np.zeros(6, dtype=bool),
    )
    assert _evaluate(case).metrics["auc_sampled100"] == pytest.approx(0.5)


def test_sampled_auc_estimates_full_auc_and_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 200, 2000
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    t_ptr, t_idx = _csr([rng.choice(n_items, 2, replace=False) for _ in range(n_users)])
    e_ptr, e_idx = _csr([rng.choice(n_items, 50, replace=False) for _ in range(n_users)])
    case = dict(
        scores=scores,
        n_items=n_items,
        users=np.arange(n_users),
        target_indptr=t_ptr,
        target_indices=t_idx,
        exclude_indptr=e_ptr,
        exclude_indices=e_idx,
        cold_items=np.zeros(n_items, dtype=bool),
    )
    first = _evaluate(case, seed=1, chunk_size=64)
    # 200 users x 2 targets x 100 draws: the sampled mean is within a few 0.01 of the full AUC
    assert abs(first.metrics["auc_sampled100"] - first.metrics["auc"]) < 0.03
    again = _evaluate(case, seed=1, chunk_size=64)
    np.testing.assert_array_equal(first.per_user["auc_sampled100"], again.per_user["auc_sampled100"])
    other = _evaluate(case, seed=2, chunk_size=64)
    assert not np.array_equal(first.per_user["auc_sampled100"], other.per_user["auc_sampled100"])
    assert math.isnan(first.metrics["auc_cold"]) and first.metrics["cold_users"] == 0
    assert first.metrics["auc_warm"] == first.metrics["auc"]  # no cold item: every target is warm


def test_warm_and_cold_aucs_split_a_users_targets_by_hand() -> None:
    # items scored 5, 4, 3, 2, 1; targets 1 (warm, score 4) and 3 (cold, score 2); negatives 0, 2, 4
    case = dict(
        scores=np.array([[5.0, 4.0, 3.0, 2.0, 1.0]], dtype=np.float32),
        n_items=5,
        users=np.array([0]),
        target_indptr=np.array([0, 2]),
        target_indices=np.array([1, 3]),
        exclude_indptr=np.array([0, 0]),
        exclude_indices=np.array([], dtype=np.int64),
        cold_items=np.array([False, False, False, True, False]),
    )
    m = _evaluate(case).metrics
    assert m["auc_warm"] == pytest.approx(2 / 3)  # above 3 and 1, below 5
    assert m["auc_cold"] == pytest.approx(1 / 3)  # above 1 only
    assert m["auc"] == pytest.approx(1 / 2)  # the mean over both targets
    assert math.isnan(m["auc_cold_among_cold"])  # no cold negative


@pytest.mark.parametrize("n_items", [300, 5000])
def test_sampled_negatives_are_distinct_uniform_negatives(n_items: int) -> None:
    # 3000 copies of one row whose negatives are the even items: n_items // 2 of them
    n_rows = 3000
    row = torch.where(torch.arange(n_items) % 2 == 0, 0.0, float("-inf"))
    masked = row.repeat(n_rows, 1)
    n_negatives = torch.full((n_rows,), n_items // 2)
    generator = torch.Generator().manual_seed(0)
    chosen, drawn = evaluate_core._sample_negatives(masked, n_negatives, generator)
    assert bool(drawn.all())  # >= 100 negatives: every slot holds one
    assert bool((chosen % 2 == 0).all())
    assert all(len(set(r)) == evaluate_core.SAMPLED_NEGATIVES for r in chosen.tolist())
    # each negative is drawn with probability 100 / n_negatives per row
    hits = np.bincount(chosen.ravel().numpy(), minlength=n_items)[::2]
    p = evaluate_core.SAMPLED_NEGATIVES / (n_items // 2)
    assert np.abs(hits - n_rows * p).max() < 6 * math.sqrt(n_rows * p * (1 - p))


def test_evaluator_leaves_scores_alone_and_takes_expanded_views() -> None:
    # a popularity-style scorer: one shared row, expanded (stride 0) to every user
    case = _random_case(2)
    popularity = torch.from_numpy(case["scores"][0])
    kept = popularity.clone()
    inputs = {k: v for k, v in case.items() if k != "scores"}
    result = evaluate_ranking(lambda users: popularity.expand(len(users), -1), **inputs)
    assert torch.equal(popularity, kept)
    case["scores"] = np.tile(case["scores"][:1], (len(case["scores"]), 1))
    np.testing.assert_array_equal(result.per_user["auc"], _evaluate(case).per_user["auc"])


def test_evaluator_without_users() -> None:
    case = _random_case(0)
    empty, indptr = np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    case.update(users=empty, target_indptr=indptr, target_indices=empty, exclude_indptr=indptr, exclude_indices=empty)
    result = _evaluate(case)
    assert result.metrics["users"] == 0 and result.metrics["coverage@20"] == 0.0
    assert math.isnan(result.metrics["auc"]) and result.per_user["auc"].size == 0


def test_evaluator_progress_bar_runs() -> None:
    result = _evaluate(_random_case(1), chunk_size=16, progress=True)
    assert result.metrics["users"] == 60


def _duplicate_target(case: dict) -> None:
    case["target_indices"][1] = case["target_indices"][0]  # user 0's targets become [0, 0]


def _empty_first_user(case: dict) -> None:
    case["target_indptr"][1] = 0


def _short_cold_mask(case: dict) -> None:
    case["cold_items"] = case["cold_items"][:-1]


def _short_exclude_indptr(case: dict) -> None:
    case["exclude_indptr"] = case["exclude_indptr"][:-1]


def _nan_score(case: dict) -> None:
    case["scores"][case["users"][3], 0] = np.nan


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_duplicate_target, "twice"),
        (_empty_first_user, "no target"),
        (_short_cold_mask, "cold_items"),
        (_short_exclude_indptr, "exclude_indptr"),
        (_nan_score, "non-finite"),
    ],
)
def test_evaluator_rejects_bad_inputs(change, message: str) -> None:
    case = _random_case(0)
    change(case)
    with pytest.raises(ValueError, match=message):
        _evaluate(case)


def test_evaluator_rejects_wrong_score_shape() -> None:
    case = _random_case(0)
    inputs = {k: v for k, v in case.items() if k != "scores"}
    with pytest.raises(ValueError, match="score_fn must return"):
        evaluate_ranking(lambda users: torch.zeros(len(users), 3), **inputs)
