"""What DVBPR's score reaches on emoji when phi is the items' labels instead of a CNN's output.

`scripts/taste_ceiling.py --emoji` scores with the generator's own knowledge of every user.
This script asks what a model that has to learn its users from their interactions can reach
when it knows every item perfectly: DVBPR's score `beta_i + gamma_u . gamma_i + theta_u . f_i`
with f_i fixed to the item's labels (one-hot category and subcategory, the attributes the emoji
users' tastes follow), theta, gamma and beta trained with BPR on DVBPR's split and sampler
(shared in-batch negatives from the warm items), the epoch with the best validation AUC kept,
cold items served as DVBPR serves them (gamma_i = 0, the warm items' mean bias). A share of the
items can be given a wrong subcategory (another of the same category, at random), to read the
metrics against how well a phi knows the subcategories (docs/training.md, "What DVBPR's score
can reach on emoji"):

    python scripts/label_ceiling.py data/emoji                # seed 0, about 25 s here (one thread)
    python scripts/label_ceiling.py data/emoji --seed 1 --accuracies 1.0

theta_u acts on f_i directly: DVBPR's linear map from phi to K dimensions adds nothing a user
vector over these features cannot express. A tiny random offset on every feature breaks the
ties between items with the same labels at random (the evaluator counts a tie as a loss).
"""

from __future__ import annotations

import argparse
import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from dvbpr.data import Dataset, load_dataset
from dvbpr.evaluate import evaluate_factors
from dvbpr.model import ServingFactors, bpr_loss, cold_item_bias
from dvbpr.sampling import TripletSampler

METRICS = {
    "AUC": "auc",
    "cold AUC": "auc_cold",
    "cold/cold": "auc_cold_among_cold",
    "warm AUC": "auc_warm",
    "R@20": "recall@20",
}


@dataclass
class FitConfig:
    lr: float = 5e-3
    l2_theta: float = 0.1
    l2_cf: float = 1e-3  # DVBPR's default on gamma and beta
    cf_dim: int = 20
    batch_size: int = 128
    epochs: int = 40  # at most: stops `patience` epochs after the best validation AUC
    patience: int = 3
    seed: int = 0


class FixedFeatureScore(nn.Module):
    """x_ui = beta_i + gamma_u . gamma_i + theta_u . f_i with f_i given and fixed."""

    def __init__(self, n_users: int, features: torch.Tensor, cf_dim: int):
        super().__init__()
        n_items, width = features.shape
        self.register_buffer("features", features)
        self.theta = nn.Parameter(0.01 * torch.randn(n_users, width))
        self.gamma_users = nn.Parameter(0.01 * torch.randn(n_users, cf_dim))
        self.gamma_items = nn.Parameter(0.01 * torch.randn(n_items, cf_dim))
        self.beta = nn.Parameter(torch.zeros(n_items))

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, C) scores of each user against every item of `items`."""
        return (
            self.beta[items][None]
            + self.gamma_users[users] @ self.gamma_items[items].T
            + self.theta[users] @ self.features[items].T
        )

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,) scores of each user against their own item."""
        gamma = (self.gamma_users[users] * self.gamma_items[items]).sum(-1)
        return self.beta[items] + gamma + (self.theta[users] * self.features[items]).sum(-1)

    def l2(self, users: torch.Tensor, items: torch.Tensor, l2_theta: float, l2_cf: float) -> torch.Tensor:
        cf = self.gamma_users[users].pow(2).sum() + self.gamma_items[items].pow(2).sum() + self.beta[items].pow(2).sum()
        return 0.5 * (l2_theta * self.theta[users].pow(2).sum() + l2_cf * cf)

    @torch.inference_mode()
    def serving_factors(self, cold_items: torch.Tensor) -> ServingFactors:
        bias, new_item_bias = cold_item_bias(self.beta.detach(), cold_items)
        gamma = self.gamma_items.detach().masked_fill(cold_items[:, None], 0.0)
        width = self.features.shape[1]
        return ServingFactors.build(
            [self.theta.detach(), self.gamma_users.detach()], [self.features, gamma], bias, new_item_bias, width
        )


def fit(dataset: Dataset, features: torch.Tensor, cfg: FitConfig) -> tuple[FixedFeatureScore, float]:
    """BPR with the batch's sampled negatives shared (as DVBPR's `--in-batch`); returns the model
    of the best validation epoch and its validation AUC."""
    torch.manual_seed(cfg.seed)
    model = FixedFeatureScore(dataset.n_users, features, cfg.cf_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = TripletSampler(dataset.train, dataset.n_items, "warm")
    cold = torch.as_tensor(dataset.cold_items)
    best_auc, best_state, best_epoch = -math.inf, None, 0
    for epoch in range(cfg.epochs):
        triplets = sampler.epoch(cfg.seed * 1_000_003 + epoch)
        for start in range(0, len(triplets), cfg.batch_size):
            batch = triplets[start : start + cfg.batch_size]
            u, i, j = (torch.as_tensor(batch[:, c]) for c in range(3))
            keep = torch.as_tensor(~sampler.is_positive(batch[:, :1], batch[None, :, 2]))
            loss = bpr_loss(model.pair_scores(u, i)[:, None] - model.scores(u, j), keep)
            loss = (loss + model.l2(u, torch.cat([i, j]), cfg.l2_theta, cfg.l2_cf)) / len(u)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        auc = evaluate_factors(model.serving_factors(cold), dataset, "val", ks=(20,)).metrics["auc"]
        if auc > best_auc:
            best_auc, best_state, best_epoch = auc, copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    return model, best_auc


def label_features(
    category: np.ndarray, subcategory: np.ndarray | None, accuracy: float, rng: np.random.Generator
) -> torch.Tensor:
    """One-hot category (and subcategory, a share 1 - `accuracy` of the items given another of
    their category's), centred, with a 1e-3 random offset that breaks ties."""
    columns = [pd.get_dummies(category).to_numpy(float)]
    if subcategory is not None:
        noisy = subcategory.copy()
        within = {c: np.unique(subcategory[category == c]) for c in np.unique(category)}
        for item in np.flatnonzero(rng.random(len(noisy)) >= accuracy):
            others = within[category[item]][within[category[item]] != subcategory[item]]
            if len(others):
                noisy[item] = rng.choice(others)
        columns.append(pd.get_dummies(noisy).to_numpy(float))
    features = np.concatenate(columns, 1)
    features = features - features.mean(0) + 1e-3 * rng.standard_normal(features.shape)
    return torch.as_tensor(features, dtype=torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="an emoji dataset folder (python -m dvbpr make-emoji)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training and of the wrong labels")
    parser.add_argument(
        "--accuracies",
        type=float,
        nargs="+",
        default=[0.63, 0.77, 1.0],
        help="shares of the items whose subcategory the features give right",
    )
    parser.add_argument("--lr", type=float, default=FitConfig.lr, help="Adam's step size")
    parser.add_argument("--l2-theta", type=float, default=FitConfig.l2_theta, help="L2 on the user vectors theta")
    args = parser.parse_args()
    dataset = load_dataset(args.folder, check_images=False)
    items = pd.read_csv(args.folder / "items.csv", dtype=str).set_index("item_id").loc[dataset.items.ids]
    category, subcategory = items["category"].to_numpy(), items["subcategory"].to_numpy()
    rng = np.random.default_rng(args.seed)
    rows = [
        (
            "no item knowledge (a random value per item)",
            torch.as_tensor(1e-3 * rng.standard_normal((dataset.n_items, 1)), dtype=torch.float32),
        ),
        ("category", label_features(category, None, 1.0, rng)),
    ]
    rows += [
        (f"category + subcategory, {a:.0%} right", label_features(category, subcategory, a, rng))
        for a in args.accuracies
    ]
    cfg = FitConfig(lr=args.lr, l2_theta=args.l2_theta, seed=args.seed)
    print(f"lr {cfg.lr:g}, L2 on theta {cfg.l2_theta:g}, seed {cfg.seed}; test split, full ranking")
    print(f"{'features':<46} {'val AUC':>8} " + " ".join(f"{name:>9}" for name in METRICS))
    for name, features in rows:
        model, val_auc = fit(dataset, features, cfg)
        metrics = evaluate_factors(model.serving_factors(torch.as_tensor(dataset.cold_items)), dataset, "test").metrics
        print(f"{name:<46} {val_auc:8.4f} " + " ".join(f"{metrics[key]:9.4f}" for key in METRICS.values()))


if __name__ == "__main__":
    main()
