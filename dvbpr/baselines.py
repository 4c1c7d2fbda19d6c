"""Baselines on the same split and sampler as DVBPR: popularity and BPR-MF.

BPR-MF is x_ui = beta_i + gamma_u . gamma_i (Rendle et al. 2009) trained on the same triplets
as DVBPR. Items without training interactions keep untrained parameters, so they are scored as
DVBPR scores them without its visual term: the mean warm bias and no gamma (i.e. at chance).
Like DVBPR's best.pt, the parameters kept are those of the epoch with the best validation AUC:
a baseline trained past its peak would flatter the model it is compared with. For the same
reason `tune_bpr_mf` also picks its L2 on validation AUC from `L2_GRID`: validation picks 0.1 on
the default data and 1 on emoji (docs/evaluation.md); no single value serves both.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn
from tqdm import tqdm

from .data import Dataset
from .errors import TrainingError
from .model import ServingFactors, bpr_loss, cold_item_bias
from .sampling import TripletSampler


def popularity_scores(dataset: Dataset) -> torch.Tensor:
    """Training interaction counts: the same ranking for every user."""
    return torch.as_tensor(dataset.item_popularity, dtype=torch.float32)


@dataclass
class BPRMFConfig:
    dim: int = 64
    epochs: int = 30  # at most; the best epoch on validation AUC is kept
    patience: int = 3  # stop after this many epochs without a validation gain
    batch_size: int = 1024
    lr: float = 5e-3
    l2: float = 1e-3
    negatives: str = "warm"  # the same sampler as DVBPR's default
    seed: int = 0


L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # the L2 values `tune_bpr_mf` tries


class BPRMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.gamma_users = nn.Embedding(n_users, dim)
        self.gamma_items = nn.Embedding(n_items, dim)
        self.beta_items = nn.Embedding(n_items, 1)
        nn.init.normal_(self.gamma_users.weight, std=0.01)
        nn.init.normal_(self.gamma_items.weight, std=0.01)
        nn.init.zeros_(self.beta_items.weight)
        self.best_epoch = 0  # set by train_bpr_mf
        self.best_val_auc = math.nan  # set by train_bpr_mf when it has a validation score
        self.l2_weight = math.nan  # the L2 coefficient it was trained with, set by train_bpr_mf

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        gu = self.gamma_users(users)
        x_ui = (gu * self.gamma_items(pos)).sum(-1) + self.beta_items(pos).squeeze(-1)
        x_uj = (gu * self.gamma_items(neg)).sum(-1) + self.beta_items(neg).squeeze(-1)
        return x_ui - x_uj

    def l2(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return 0.5 * sum(
            t.pow(2).sum()
            for t in (
                self.gamma_users(users),
                self.gamma_items(pos),
                self.gamma_items(neg),
                self.beta_items(pos),
                self.beta_items(neg),
            )
        )

    @torch.inference_mode()
    def serving_factors(self, cold_items: torch.Tensor) -> ServingFactors:
        """As `DVBPR.serving_factors` without the visual term: cold items get gamma_i = 0 and the
        mean warm bias."""
        bias, new_item_bias = cold_item_bias(self.beta_items.weight.squeeze(-1), cold_items)
        gamma = self.gamma_items.weight.masked_fill(cold_items[:, None], 0.0)
        return ServingFactors.build([self.gamma_users.weight], [gamma], bias, new_item_bias, visual_dim=0)


def train_bpr_mf(
    dataset: Dataset,
    cfg: BPRMFConfig | None = None,
    progress: bool = False,
    val_auc: Callable[[BPRMF], float] | None = None,
) -> BPRMF:
    """Train BPR-MF. With `val_auc` (a model's validation AUC), the returned model holds the
    parameters of its best epoch by it, and stops `cfg.patience` epochs after that; without, the
    last epoch's. The epoch kept is in `best_epoch`, its validation AUC in `best_val_auc` (nan
    without `val_auc`), the L2 it was trained with in `l2_weight`."""
    cfg = cfg or BPRMFConfig()
    torch.manual_seed(cfg.seed)
    model = BPRMF(dataset.n_users, dataset.n_items, cfg.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = TripletSampler(dataset.train, dataset.n_items, cfg.negatives)
    steps = math.ceil(len(sampler) / cfg.batch_size)
    best_auc, best_state, best_epoch = -math.inf, None, cfg.epochs
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="bpr-mf", disable=not progress, leave=False):
        triplets = torch.as_tensor(sampler.epoch(cfg.seed * 1_000_003 + epoch - 1))
        for step in range(steps):
            u, i, j = triplets[step * cfg.batch_size : (step + 1) * cfg.batch_size].T
            loss = (bpr_loss(model(u, i, j)) + cfg.l2 * model.l2(u, i, j)) / len(u)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if val_auc is None:
            continue
        auc = val_auc(model)
        if auc > best_auc:
            best_auc, best_state, best_epoch = auc, copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
        model.best_val_auc = best_auc
    model.best_epoch, model.l2_weight = best_epoch, cfg.l2
    return model.eval()


def tune_bpr_mf(
    dataset: Dataset,
    val_auc: Callable[[BPRMF], float],
    cfg: BPRMFConfig | None = None,
    l2_grid: Sequence[float] = L2_GRID,
    progress: bool = False,
) -> BPRMF:
    """`train_bpr_mf` once per L2 of `l2_grid` (the rest of `cfg` fixed); the model with the best
    validation AUC is returned (the first on a tie), its L2 in `l2_weight`."""
    if not l2_grid:
        raise TrainingError("tune_bpr_mf needs at least one L2 value in l2_grid")
    cfg = cfg or BPRMFConfig()
    best: BPRMF | None = None
    for l2 in tqdm(l2_grid, desc="bpr-mf L2", disable=not progress, leave=False):
        model = train_bpr_mf(dataset, replace(cfg, l2=l2), progress=progress, val_auc=val_auc)
        if best is None or model.best_val_auc > best.best_val_auc:
            best = model
    return best
