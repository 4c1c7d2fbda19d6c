"""Full-ranking evaluation of a run over a split, with baselines side by side.

Protocol (see docs/evaluation.md): every held-out row of the split is a target; the user's
training items (and, on the test split, their validation items) are excluded from the ranking;
every other catalogue item is a candidate. Ties are broken pessimistically. Metrics are computed
by `evaluate_core.evaluate_ranking`, users in chunks times all items as one matrix product.

A run is evaluated through the serving API (`evaluate_recommender`: the scores `Recommender`
serves); training's validation, which has a model but no Recommender, folds the model the same
way (`evaluate_model`); both end in `evaluate_factors`, as BPR-MF does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .baselines import BPRMFConfig, popularity_scores, train_bpr_mf, tune_bpr_mf
from .data import Dataset
from .evaluate_core import RankingResult, evaluate_ranking
from .features import ImageBatches, embed_items
from .fsutil import atomic_write_text
from .model import DVBPR, ServingFactors

if TYPE_CHECKING:
    from .recommender import Recommender

DEFAULT_KS = (20, 100)


def split_csr(
    dataset: Dataset, split: str, users: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(users, target_indptr, target_indices, exclude_indptr, exclude_indices) of a split.

    Users are those with at least one held-out row in `split` (or the given subset of them).
    Excluded: the user's training items, plus their validation items when `split` is "test".
    """
    t_ptr, t_idx = dataset.user_items(split)
    has_target = np.diff(t_ptr) > 0
    if users is None:
        users = np.flatnonzero(has_target)
    else:
        users = np.asarray(users, dtype=np.int64)
        users = users[has_target[users]]
    excluded = [dataset.user_items("train")]
    if split == "test":
        excluded.append(dataset.user_items("val"))
    targets = _gather_rows(users, [(t_ptr, t_idx)])
    exclude = _gather_rows(users, excluded)
    return users, *targets, *exclude


def sample_users(dataset: Dataset, split: str, n: int, seed: int = 0) -> np.ndarray | None:
    """A fixed sample of `n` users with held-out rows in `split`, sorted; None (all of them) when
    `n` is 0 or not smaller than their number."""
    if not n:
        return None
    users = np.unique(dataset.split(split)[:, 0])
    if len(users) <= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(users, n, replace=False))


def _gather_rows(users: np.ndarray, csrs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """CSR over `users` concatenating each user's rows in every CSR of `csrs` (vectorised)."""
    lengths = sum(np.diff(ptr)[users] for ptr, _ in csrs)
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int64)
    offset = indptr[:-1].copy()
    for ptr, idx in csrs:
        starts, counts = ptr[users], np.diff(ptr)[users]
        # position of every element: its user's write offset + its rank inside the user's row
        rows = np.repeat(np.arange(len(users)), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        indices[offset[rows] + within] = idx[np.repeat(starts, counts) + within]
        offset += counts
    return indptr, indices


def evaluate_scores(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    users: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> RankingResult:
    """Evaluate any scorer: `score_fn(user_index_tensor) -> (B, n_items)` scores."""
    users, tp, ti, ep, ei = split_csr(dataset, split, users)
    return evaluate_ranking(
        score_fn,
        dataset.n_items,
        users,
        tp,
        ti,
        ep,
        ei,
        cold_items=dataset.cold_items,
        ks=ks,
        device=device,
        seed=seed,
        progress=progress,
    )


def evaluate_factors(
    factors: ServingFactors,
    dataset: Dataset,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    users: np.ndarray | None = None,
    progress: bool = False,
) -> RankingResult:
    """Metrics of a model folded for serving (`DVBPR.serving_factors`, `BPRMF.serving_factors`)."""
    return evaluate_scores(factors.scores, dataset, split, ks, users, device=factors.device, progress=progress)


def evaluate_recommender(
    rec: Recommender,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    users: np.ndarray | None = None,
    progress: bool = False,
) -> RankingResult:
    """A loaded run's metrics, from exactly the scores its `Recommender` serves."""
    return evaluate_factors(rec.factors, rec.dataset, split, ks, users, progress=progress)


def evaluate_model(
    model: DVBPR,
    dataset: Dataset,
    images: ImageBatches | None = None,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    users: np.ndarray | None = None,
    phi: torch.Tensor | None = None,
    progress: bool = False,
) -> RankingResult:
    """A model in memory (training's validation): phi of every item from `images` unless given."""
    if phi is None:
        if images is None:
            raise ValueError("evaluate_model needs phi or images")
        phi = embed_items(model, images, dataset.n_items, progress=progress)
    cold = torch.as_tensor(dataset.cold_items, device=phi.device)
    return evaluate_factors(model.serving_factors(phi, cold), dataset, split, ks, users, progress=progress)


def evaluate_baselines(
    dataset: Dataset,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    bpr_mf: BPRMFConfig | None = None,
    progress: bool = False,
) -> dict[str, RankingResult]:
    """`popularity` and `bpr-mf` (trained here, on the same split and sampler). With a validation
    split BPR-MF is tuned as DVBPR's best.pt is chosen, on validation AUC: its L2 from
    `baselines.L2_GRID` and its epoch (`bpr_mf.l2` is then ignored); without one, `bpr_mf` as given."""
    pop = popularity_scores(dataset)
    results = {"popularity": evaluate_scores(lambda u: pop.expand(len(u), -1), dataset, split, ks, progress=progress)}
    cold = torch.as_tensor(dataset.cold_items)
    if len(dataset.val):
        mf = tune_bpr_mf(
            dataset,
            lambda m: evaluate_factors(m.serving_factors(cold), dataset, "val").metrics["auc"],
            bpr_mf,
            progress=progress,
        )
        if progress:
            tqdm.write(
                f"bpr-mf: L2 {mf.l2_weight:g}, epoch {mf.best_epoch} (validation AUC {mf.best_val_auc:.4f})",
                file=sys.stderr,
            )
    else:
        mf = train_bpr_mf(dataset, bpr_mf, progress=progress)
    results["bpr-mf"] = evaluate_factors(mf.serving_factors(cold), dataset, split, ks, progress=progress)
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per model, one column per metric."""
    names = list(results)
    keys = [k for k in next(iter(results.values())) if k not in ("users", "cold_users")]
    width = max(len(n) for n in names + ["model"])
    cols = [max(len(k), 7) + 2 for k in keys]
    lines = ["model".ljust(width) + "".join(k.rjust(c) for k, c in zip(keys, cols))]
    for name in names:
        row = results[name]
        lines.append(
            name.ljust(width) + "".join(f"{row.get(k, float('nan')):.4f}".rjust(c) for k, c in zip(keys, cols))
        )
    first = results[names[0]]
    lines.append(f"users: {int(first['users'])}, cold users: {int(first['cold_users'])}")
    return "\n".join(lines)


def write_per_user_csv(path: str | Path, result: RankingResult, dataset: Dataset) -> Path:
    table = {k: v for k, v in result.per_user.items() if k != "user"}
    frame = pd.DataFrame({"user_id": dataset.users.to_ids(result.per_user["user"]), **table})
    return atomic_write_text(path, frame.to_csv(index=False))
