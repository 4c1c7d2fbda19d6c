"""Evaluation speed (users/s): the project's chunked full-ranking evaluation
(`dvbpr.evaluate.evaluate_scores` -> `evaluate_core.evaluate_ranking`) against a per-user loop
that computes the same metrics with `dvbpr.metrics` one user at a time (score vector, mask of
the excluded items, ranks, AUCs, top-k by a full sort), as the tutorial's evaluation does.

Both use the same `score_fn`, and the loop's mean AUC and RR are checked against the
vectorised ones, so the two compute the same thing. Item features phi are computed before
timing (both would share that cost).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.common import Row, ensure_repo_on_path

ensure_repo_on_path()

from dvbpr import metrics  # noqa: E402
from dvbpr.data import Dataset  # noqa: E402
from dvbpr.evaluate import evaluate_scores, split_csr  # noqa: E402

KS = (20, 100)
VECTORISED_RUNS = 3  # median of; the loop runs once (it is long: an average in itself)


@torch.no_grad()
def loop_evaluate(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    users: np.ndarray,
    split: str = "test",
    ks=KS,
    seed: int = 0,
) -> dict[str, float]:
    """The per-user loop: every metric of the vectorised evaluation, one user at a time."""
    users, tp, ti, ep, ei = split_csr(dataset, split, users)
    cold = dataset.cold_items
    n = dataset.n_items
    rng = np.random.default_rng(seed)
    auc, rr = [], []
    for r, u in enumerate(users):
        s = score_fn(torch.tensor([u]))[0].double().numpy()
        targets = ti[tp[r] : tp[r + 1]]
        negative = np.ones(n, bool)
        negative[ei[ep[r] : ep[r + 1]]] = False
        negative[targets] = False
        t_s, n_s = s[targets], s[negative]
        ranks = metrics.target_ranks(t_s, n_s)
        auc.append(metrics.user_auc(t_s, n_s))
        cold_t = cold[targets]
        if cold_t.any():
            metrics.user_auc(t_s[cold_t], n_s)
            metrics.user_auc(t_s[cold_t], s[negative & cold])
        rr.append(metrics.reciprocal_rank(ranks))
        for k in ks:
            metrics.recall_at_k(ranks, len(targets), k)
            metrics.precision_at_k(ranks, k)
            metrics.ndcg_at_k(ranks, len(targets), k)
        metrics.sampled_auc(t_s, n_s, rng, 100)
        candidates = np.where(negative, s, -np.inf)
        candidates[targets] = t_s
        np.argsort(-candidates, kind="stable")[: max(ks)]  # top-k list, for coverage
    return {"auc": float(np.nanmean(auc)), "rr": float(np.mean(rr)), "users": len(users)}


def compare(score_fn, dataset: Dataset, loop_users: int, ctx, label: str) -> tuple[float, float]:
    """(vectorised users/s over every test user, median of VECTORISED_RUNS runs; loop users/s
    over the first `loop_users`, one run)."""
    times = []
    for _ in range(VECTORISED_RUNS):  # one run is short: a single hiccup would decide it
        t0 = time.perf_counter()
        result = evaluate_scores(score_fn, dataset, "test", KS)
        times.append(time.perf_counter() - t0)
    vec_s = float(np.median(times))
    n_users = result.metrics["users"]
    subset = result.per_user["user"][:loop_users]
    t0 = time.perf_counter()
    loop = loop_evaluate(score_fn, dataset, subset)
    loop_s = time.perf_counter() - t0
    same = {k: float(np.nanmean(result.per_user[k][:loop_users])) for k in ("auc", "rr")}
    if any(abs(same[k] - loop[k]) > 1e-6 for k in same):
        ctx.log(f"WARNING {label}: the loop disagrees with the evaluation: {loop} vs {same}")
    ctx.log(f"eval {label}: {n_users} users in {vec_s:.2f} s; loop {loop['users']} users in {loop_s:.2f} s")
    return n_users / vec_s, loop["users"] / loop_s


def section(ctx) -> list[Row]:
    from benchmarks.synthdata import in_memory_dataset
    from benchmarks.training import training_data
    from dvbpr.data import load_dataset
    from dvbpr.features import ImageBatches, embed_items
    from dvbpr.images import ImageStore
    from dvbpr.model import DVBPR, ModelConfig

    s = ctx.sizes
    rows = []
    # 1. the default catalogue with a CNN-F-small DVBPR (phi of every item computed first)
    dataset = load_dataset(training_data(ctx))
    torch.manual_seed(0)
    model = DVBPR(
        ModelConfig(n_users=dataset.n_users, n_items=dataset.n_items, arch="cnnf-small", image_size=s.small_size)
    ).eval()
    store = ImageStore.open(dataset, s.small_size, progress=False)
    phi = embed_items(model, ImageBatches(store, torch.device("cpu")), dataset.n_items)
    cold = torch.as_tensor(dataset.cold_items)
    vec, loop = compare(model.serving_factors(phi, cold).scores, dataset, s.loop_users, ctx, "default")
    label = f"{dataset.n_items:,} items, {dataset.n_users:,} users"
    rows.append(Row("eval_vs_loop", vec, "users/s", loop, note=f"{label}; goal >= 20"))

    # 2. a 100k-item catalogue (synthetic factors: the score function is one matrix product)
    big = in_memory_dataset(s.big_eval_users, s.big_eval_items)
    g = torch.Generator().manual_seed(0)
    users_f = torch.randn(big.n_users, 200, generator=g)
    items_f = torch.randn(big.n_items, 200, generator=g)
    vec, loop = compare(lambda u: users_f[u] @ items_f.T, big, s.big_loop_users, ctx, "big")
    rows.append(
        Row(
            "eval_vs_loop_100k",
            vec,
            "users/s",
            loop,
            note=f"{big.n_items:,} items, {big.n_users:,} users, factors of 200",
        )
    )
    return rows
