"""Vectorised full-ranking evaluation, independent of any model.

:func:`evaluate_ranking` scores users a chunk at a time through a ``score_fn`` and ranks every
held-out item against the whole catalogue (minus the user's excluded items), computing the
metrics that :mod:`dvbpr.metrics` defines. The only Python loops are over chunks of users and
over blocks of comparisons that bound memory; everything per user and per item is tensor work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import metrics

SAMPLED_NEGATIVES = 100
"""Negatives per user for the paper's sampled AUC (metric ``auc_sampled100``)."""

_ACCELERATOR_BLOCK_COMPARISONS = 1 << 26
"""(target, item) score comparisons materialised at a time on an accelerator (~64M)."""

_CPU_BLOCK_COMPARISONS = 1 << 20
"""The same on CPU, where blocks that stay in cache are an order of magnitude faster."""

_OVERSAMPLING = 2
"""Draws with replacement per wanted sampled negative, before falling back to exact draws."""

MAX_CHUNK_SCORES = 1 << 27
"""Scores in one chunk's matrix at most (128M, 512 MB in fp32): caps the users per chunk on
large catalogues, where 1,024 users x 350k items would hold several 1.4 GB matrices."""


@dataclass
class RankingResult:
    """What :func:`evaluate_ranking` measured.

    Attributes:
        metrics: means over the evaluated users: ``auc``, ``auc_cold``,
            ``auc_cold_among_cold``, ``auc_warm``, ``rr``, ``recall@k``, ``precision@k``,
            ``ndcg@k``,
            ``coverage@k`` for each k, ``auc_sampled100``; plus ``users`` (users evaluated) and
            ``cold_users`` (users with at least one cold target), both ints. The cold AUCs are
            means over the cold users only (``nan`` when there are none), the warm AUC over the
            users with a warm target.
        per_user: one array per metric, aligned with ``users``: ``user``, ``n_targets``,
            ``auc``, ``rr``, ``best_rank``, ``recall@k``, ``precision@k``, ``ndcg@k``,
            ``auc_cold``, ``auc_cold_among_cold`` (both ``nan`` for a user without a cold
            target), ``auc_warm`` (``nan`` for a user without a warm target) and
            ``auc_sampled100``.
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]


def evaluate_ranking(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    n_items: int,
    users: np.ndarray,
    target_indptr: np.ndarray,
    target_indices: np.ndarray,
    exclude_indptr: np.ndarray,
    exclude_indices: np.ndarray,
    cold_items: np.ndarray,
    ks: Sequence[int] = (20, 100),
    chunk_size: int = 1024,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> RankingResult:
    """Rank each user's targets against all their candidate items and aggregate the metrics.

    Candidates are all items except the user's excluded ones; a target is always a candidate,
    even if it is also listed as excluded. Ranks are pessimistic (ties lose), as defined in
    :mod:`dvbpr.metrics`:

    * ``auc``: the user's targets against their negatives (candidates that are not targets);
    * ``auc_cold``: the user's cold targets against the same negatives;
    * ``auc_cold_among_cold``: the user's cold targets against the cold negatives only;
    * ``auc_warm``: the user's warm targets against the same negatives as ``auc`` (where the
      collaborative half and popularity can help; a model that does no better there than the
      popularity baseline has learned nothing personal about the items users already know);
    * ``rr``, ``recall@k``, ``precision@k``, ``ndcg@k``: multi-target definitions;
    * ``coverage@k``: share of the catalogue in at least one user's top k candidates (the
      choice among items tied at the k-th place is arbitrary);
    * ``auc_sampled100``: :func:`dvbpr.metrics.sampled_auc` with 100 distinct negatives per user
      drawn uniformly without replacement (all of them when a user has fewer). The draw is
      reproducible for a given ``seed``, ``chunk_size`` and device. For comparison with the paper
      only.

    An AUC is ``nan`` for a user without negatives (or without cold negatives, for
    ``auc_cold_among_cold``); the means skip ``nan`` values.

    Args:
        score_fn: maps a ``(B,)`` int64 tensor of user indices on ``device`` to a ``(B, n_items)``
            floating tensor of scores. Called once per chunk, under ``torch.no_grad()``; its
            output is not modified. Scores must be finite.
        n_items: catalogue size.
        users: ``(U,)`` indices of the users to evaluate, each with at least one target.
        target_indptr, target_indices: CSR in ``users`` order: the targets (held-out items) of
            ``users[r]`` are ``target_indices[target_indptr[r]:target_indptr[r + 1]]``, without
            repeats.
        exclude_indptr, exclude_indices: CSR in ``users`` order: the items excluded from the
            ranking of ``users[r]`` (training items; on test, validation items too).
        cold_items: ``(n_items,)`` bool, True for the items without a training interaction.
        ks: the cut-offs of the top-k metrics.
        chunk_size: users scored at a time, at most ``MAX_CHUNK_SCORES // n_items``; the peak
            memory is about two score matrices, ``2 * chunk_size * n_items`` floats (~0.8 GB
            for 1024 users x 100k items, ~1 GB at any larger catalogue).
        device: where the scores and the ranking work live.
        seed: seed of the sampled-AUC negatives.
        progress: show a tqdm progress bar over the chunks.

    Raises:
        ValueError: inconsistent inputs, or ``score_fn`` returned a wrong shape or a non-finite
            score.
    """
    ks = sorted({int(k) for k in ks})
    users = np.asarray(users, dtype=np.int64)
    target_indptr = np.asarray(target_indptr, dtype=np.int64)
    target_indices = np.asarray(target_indices, dtype=np.int64)
    exclude_indptr = np.asarray(exclude_indptr, dtype=np.int64)
    exclude_indices = np.asarray(exclude_indices, dtype=np.int64)
    cold_items = np.asarray(cold_items, dtype=bool)
    _check_inputs(
        n_items, users, target_indptr, target_indices, exclude_indptr, exclude_indices, cold_items, ks, chunk_size
    )
    device = torch.device(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    cold_mask = torch.from_numpy(cold_items).to(device)

    n_users = users.size
    n_targets = np.diff(target_indptr)
    per_user: dict[str, np.ndarray] = {"user": users.copy(), "n_targets": n_targets}
    for name in ("auc", "auc_cold", "auc_cold_among_cold", "auc_warm", "auc_sampled100", "rr"):
        per_user[name] = np.full(n_users, np.nan)
    per_user["best_rank"] = np.zeros(n_users, dtype=np.int64)
    for k in ks:
        for name in ("recall", "precision", "ndcg"):
            per_user[f"{name}@{k}"] = np.full(n_users, np.nan)
    top_items = np.full((n_users, min(ks[-1], n_items)), -1, dtype=np.int64)
    buffers: dict[torch.dtype, torch.Tensor] = {}  # one masked-scores matrix reused by every chunk

    chunk_size = min(chunk_size, max(1, MAX_CHUNK_SCORES // n_items))
    for start in tqdm(range(0, n_users, chunk_size), desc="evaluating", unit="chunk", disable=not progress):
        stop = min(start + chunk_size, n_users)
        chunk = _rank_chunk(
            score_fn,
            n_items,
            users[start:stop],
            _csr_slice(target_indptr, target_indices, start, stop),
            _csr_slice(exclude_indptr, exclude_indices, start, stop),
            cold_items,
            cold_mask,
            top_items.shape[1],
            device,
            generator,
            buffers,
        )
        rows = slice(start, stop)
        for name in ("auc", "auc_cold", "auc_cold_among_cold", "auc_warm", "auc_sampled100"):
            per_user[name][rows] = chunk[name]
        per_user["best_rank"][rows] = chunk["ranks"].min(axis=1)
        per_user["rr"][rows] = metrics.reciprocal_rank(chunk["ranks"])
        for k in ks:
            per_user[f"recall@{k}"][rows] = metrics.recall_at_k(chunk["ranks"], n_targets[rows], k)
            per_user[f"precision@{k}"][rows] = metrics.precision_at_k(chunk["ranks"], k)
            per_user[f"ndcg@{k}"][rows] = metrics.ndcg_at_k(chunk["ranks"], n_targets[rows], k)
        top_items[rows] = chunk["top_items"]

    cold_users = _has_cold_target(target_indptr, target_indices, cold_items)
    summary: dict[str, float] = {
        "auc": _nanmean(per_user["auc"]),
        "auc_cold": _nanmean(per_user["auc_cold"][cold_users]),
        "auc_cold_among_cold": _nanmean(per_user["auc_cold_among_cold"][cold_users]),
        "auc_warm": _nanmean(per_user["auc_warm"]),  # nan for a user without a warm target
        "rr": _nanmean(per_user["rr"]),
    }
    for k in ks:
        for name in ("recall", "precision", "ndcg"):
            summary[f"{name}@{k}"] = _nanmean(per_user[f"{name}@{k}"])
        summary[f"coverage@{k}"] = metrics.coverage_at_k(top_items[:, :k], n_items)
    summary["auc_sampled100"] = _nanmean(per_user["auc_sampled100"])
    summary["users"] = int(n_users)
    summary["cold_users"] = int(cold_users.sum())
    return RankingResult(metrics=summary, per_user=per_user)


@torch.no_grad()
def _rank_chunk(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    n_items: int,
    users: np.ndarray,
    targets: tuple[np.ndarray, np.ndarray],
    excluded: tuple[np.ndarray, np.ndarray],
    cold_items: np.ndarray,
    cold_mask: torch.Tensor,
    top_k: int,
    device: torch.device,
    generator: torch.Generator,
    buffers: dict[torch.dtype, torch.Tensor],
) -> dict[str, np.ndarray]:
    """Score one chunk of users and rank their targets.

    ``targets`` and ``excluded`` are ``(row, item)`` pair lists for the chunk's rows, the target
    pairs ordered by row. ``buffers`` keeps the masked copy of the scores between chunks: fresh
    memory of that size costs more to fault in than the ranking work on it. Returns the padded
    ``(B, T_max)`` ``ranks`` (``inf`` padding), the ``(B, top_k)`` ``top_items`` (-1 padding)
    and the per-user AUCs of the chunk.
    """
    n_rows = users.size
    target_rows_np, target_items_np = targets
    target_rows = torch.from_numpy(target_rows_np).to(device)
    target_items = torch.from_numpy(target_items_np).to(device)
    is_cold_np = cold_items[target_items_np]
    is_cold = torch.from_numpy(is_cold_np).to(device)

    scores = score_fn(torch.from_numpy(users).to(device))
    if tuple(scores.shape) != (n_rows, n_items) or not scores.is_floating_point():
        raise ValueError(
            f"score_fn must return a ({n_rows}, {n_items}) floating tensor, got {tuple(scores.shape)} {scores.dtype}"
        )
    if not bool(torch.isfinite(torch.stack(torch.aminmax(scores))).all()):  # nan propagates
        raise ValueError("score_fn returned a non-finite score (nan or inf)")
    target_scores = scores[target_rows, target_items]

    # Negatives only: excluded items and targets set to -inf. Scores are finite, so -inf never
    # reaches a target's score in a comparison and marks exactly the non-negatives.
    if scores.dtype not in buffers or buffers[scores.dtype].shape[0] < n_rows:
        buffers.clear()
        buffers[scores.dtype] = torch.empty_like(scores)
    masked = buffers[scores.dtype][:n_rows].copy_(scores)
    excluded_rows, excluded_items = (torch.from_numpy(a).to(device) for a in excluded)
    masked[excluded_rows, excluded_items] = -torch.inf
    masked[target_rows, target_items] = -torch.inf
    n_negatives, n_cold_negatives = _count_negatives(n_rows, targets, excluded, cold_items)

    negatives_at_or_above = _count_at_or_above(masked, target_rows, target_scores)
    chosen, drawn = _sample_negatives(masked, torch.from_numpy(n_negatives).to(device), generator)
    sampled_wins = ((masked.gather(1, chosen)[target_rows] < target_scores[:, None]) & drawn[target_rows]).sum(dim=1)
    cold_at_or_above = torch.zeros_like(negatives_at_or_above)
    if is_cold_np.any():
        cold_at_or_above[is_cold] = _count_at_or_above(
            masked, target_rows[is_cold], target_scores[is_cold], columns=cold_mask
        )

    # Put the targets back among the candidates for the top-k lists.
    masked[target_rows, target_items] = target_scores
    top_scores, top_items = masked.topk(top_k, dim=1)
    top_items[top_scores == -torch.inf] = -1

    neg_above = negatives_at_or_above.cpu().numpy()
    # float64 holds every float dtype exactly, so target-target ties stay as torch saw them
    exact_target_scores = target_scores.to(torch.float64).cpu().numpy()
    ranks = neg_above + _count_at_or_above_within_rows(target_rows_np, exact_target_scores)
    positions = np.arange(target_rows_np.size) - np.searchsorted(target_rows_np, target_rows_np)
    padded_ranks = np.full((n_rows, positions.max() + 1), np.inf)
    padded_ranks[target_rows_np, positions] = ranks

    n_neg = n_negatives[target_rows_np]
    n_cold_neg = n_cold_negatives[target_rows_np]
    n_drawn = drawn.sum(dim=1).cpu().numpy()[target_rows_np]
    with np.errstate(invalid="ignore", divide="ignore"):  # no negatives: 0 / 0 -> nan
        auc = (n_neg - neg_above) / n_neg
        auc_among_cold = (n_cold_neg - cold_at_or_above.cpu().numpy()) / n_cold_neg
        auc_sampled = sampled_wins.cpu().numpy() / n_drawn
    cold_rows, warm_rows = target_rows_np[is_cold_np], target_rows_np[~is_cold_np]
    return {
        "ranks": padded_ranks,
        "top_items": top_items.cpu().numpy(),
        "auc": _row_mean(auc, target_rows_np, n_rows),
        "auc_cold": _row_mean(auc[is_cold_np], cold_rows, n_rows),
        "auc_cold_among_cold": _row_mean(auc_among_cold[is_cold_np], cold_rows, n_rows),
        "auc_warm": _row_mean(auc[~is_cold_np], warm_rows, n_rows),
        "auc_sampled100": _row_mean(auc_sampled, target_rows_np, n_rows),
    }


def _count_negatives(
    n_rows: int,
    targets: tuple[np.ndarray, np.ndarray],
    excluded: tuple[np.ndarray, np.ndarray],
    cold_items: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the number of negatives and of cold negatives (items neither excluded nor
    targets), from the ``(row, item)`` pair lists, which may overlap or repeat."""
    n_items = cold_items.size
    not_negative = _distinct(np.r_[excluded[0] * n_items + excluded[1], targets[0] * n_items + targets[1]])
    rows = not_negative // n_items
    n_negatives = n_items - np.bincount(rows, minlength=n_rows)
    n_cold_negatives = int(cold_items.sum()) - np.bincount(rows[cold_items[not_negative % n_items]], minlength=n_rows)
    return n_negatives, n_cold_negatives


def _count_at_or_above(
    matrix: torch.Tensor,
    rows: torch.Tensor,
    thresholds: torch.Tensor,
    columns: torch.Tensor | None = None,
) -> torch.Tensor:
    """``counts[p] = #{j in columns : matrix[rows[p], j] >= thresholds[p]}`` (``columns``: a bool
    mask over the matrix's columns, None for all of them).

    Works through blocks of rows of at most :func:`_block_elements` comparisons. Consecutive
    rows (one target per user, the usual case) are read as views, other rows gathered.
    """
    n = rows.numel()
    counts = torch.empty(n, dtype=torch.int64, device=matrix.device)
    block = max(1, _block_elements(matrix.device) // max(1, matrix.shape[1]))
    consecutive = n > 0 and bool((rows[1:] - rows[:-1] == 1).all())
    first = int(rows[0]) if consecutive else 0
    for begin in range(0, n, block):
        end = min(begin + block, n)
        part = matrix[first + begin : first + end] if consecutive else matrix.index_select(0, rows[begin:end])
        compared = part >= thresholds[begin:end, None]
        if columns is not None:
            compared &= columns
        counts[begin:end] = compared.sum(dim=1, dtype=torch.int32)
    return counts


def _block_elements(device: torch.device) -> int:
    """How many comparisons to materialise at a time on ``device``."""
    return _CPU_BLOCK_COMPARISONS if device.type == "cpu" else _ACCELERATOR_BLOCK_COMPARISONS


def _count_at_or_above_within_rows(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``counts[p] = #{q : rows[q] == rows[p], values[q] >= values[p]}`` (q = p included).

    Sorts the pairs by (row, value) and finds, for each pair, where its (row, value) key starts
    and where its row ends: O(P log P), whatever the number of targets per row.
    """
    _, levels = np.unique(values, return_inverse=True)
    n_levels = int(levels.max()) + 1
    keys = rows * n_levels + levels.reshape(-1)
    sorted_keys = np.sort(keys)
    return np.searchsorted(sorted_keys, (rows + 1) * n_levels) - np.searchsorted(sorted_keys, keys)


def _sample_negatives(
    masked: torch.Tensor,
    n_negatives: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw :data:`SAMPLED_NEGATIVES` distinct negatives per row uniformly without replacement
    (all of them for a row with fewer). ``masked`` is ``-inf`` exactly on the non-negatives.

    Returns ``(chosen, drawn)``, both ``(B, SAMPLED_NEGATIVES)``: item indices and whether the
    slot holds a drawn negative (False only for padding).

    Fast path: :data:`_OVERSAMPLING` times as many items are drawn with replacement; the distinct
    negatives among them are, by symmetry, a uniform random subset of the row's negatives given
    their number, so a random choice of the wanted number among them is a uniform draw. A row
    where too few distinct negatives came up is drawn again exactly, as the negatives with the
    smallest of uniform random keys.
    """
    n_rows, n_items = masked.shape
    wanted = min(SAMPLED_NEGATIVES, n_items)
    draws = (
        torch.randint(n_items, (n_rows, _OVERSAMPLING * wanted), generator=generator, device=masked.device)
        .sort(dim=1)
        .values
    )
    usable = masked.gather(1, draws) > -torch.inf
    usable[:, 1:] &= draws[:, 1:] != draws[:, :-1]  # the first copy of each item only
    keys = torch.rand(draws.shape, generator=generator, device=masked.device)
    chosen_keys, positions = keys.masked_fill_(~usable, 2.0).topk(wanted, dim=1, largest=False)
    chosen, drawn = draws.gather(1, positions), chosen_keys < 1.0

    short = torch.nonzero(drawn.sum(dim=1) < n_negatives.clamp(max=wanted)).squeeze(1)
    if short.numel():
        keys = torch.rand((short.numel(), n_items), generator=generator, device=masked.device)
        keys.masked_fill_(masked[short] == -torch.inf, 2.0)  # rand() < 1: never before a negative
        fallback_keys, fallback = keys.topk(wanted, dim=1, largest=False)
        chosen[short], drawn[short] = fallback, fallback_keys < 1.0
    return chosen, drawn


def _distinct(keys: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer array (np.unique, an order of magnitude faster
    here: numpy's hash-based unique is slow on int64 keys)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if keys.size else keys


def _csr_slice(
    indptr: np.ndarray,
    indices: np.ndarray,
    start: int,
    stop: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(row, index)`` pairs of CSR rows ``start:stop``, rows renumbered from 0."""
    lengths = np.diff(indptr[start : stop + 1])
    rows = np.repeat(np.arange(stop - start, dtype=np.int64), lengths)
    return rows, indices[indptr[start] : indptr[stop]]


def _row_mean(values: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Mean of ``values`` per row (``nan`` for a row with no value)."""
    sums = np.bincount(rows, weights=values, minlength=n_rows)
    counts = np.bincount(rows, minlength=n_rows)
    means = np.full(n_rows, np.nan)
    np.divide(sums, counts, out=means, where=counts > 0)
    return means


def _has_cold_target(indptr: np.ndarray, indices: np.ndarray, cold_items: np.ndarray) -> np.ndarray:
    """Per CSR row: does it hold at least one cold item?"""
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    return np.bincount(rows[cold_items[indices]], minlength=indptr.size - 1) > 0


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-nan values; ``nan`` (without a warning) when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _check_inputs(
    n_items: int,
    users: np.ndarray,
    target_indptr: np.ndarray,
    target_indices: np.ndarray,
    exclude_indptr: np.ndarray,
    exclude_indices: np.ndarray,
    cold_items: np.ndarray,
    ks: list[int],
    chunk_size: int,
) -> None:
    """Raise ``ValueError`` naming the first inconsistency in :func:`evaluate_ranking`'s inputs."""
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    if users.ndim != 1 or (users.size and users.min() < 0):
        raise ValueError("users must be a 1-D array of non-negative user indices")
    for name, indptr, indices in (
        ("target", target_indptr, target_indices),
        ("exclude", exclude_indptr, exclude_indices),
    ):
        if indptr.shape != (users.size + 1,) or indptr[0] != 0 or indptr[-1] != indices.size:
            raise ValueError(
                f"{name}_indptr must have len(users) + 1 = {users.size + 1} entries, "
                f"from 0 to len({name}_indices) = {indices.size}"
            )
        if np.any(np.diff(indptr) < 0):
            raise ValueError(f"{name}_indptr must be non-decreasing")
        if indices.size and (indices.min() < 0 or indices.max() >= n_items):
            raise ValueError(f"{name}_indices must be item indices in [0, {n_items})")
    empty = np.flatnonzero(np.diff(target_indptr) == 0)
    if empty.size:
        raise ValueError(f"user {users[empty[0]]} has no target; evaluate only users with targets")
    rows = np.repeat(np.arange(users.size), np.diff(target_indptr))
    if _distinct(rows * n_items + target_indices).size != target_indices.size:
        raise ValueError("a user lists the same target item twice")
    if cold_items.shape != (n_items,):
        raise ValueError(f"cold_items must have shape ({n_items},), got {cold_items.shape}")
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
