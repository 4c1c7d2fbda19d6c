"""The optimiser and its learning-rate schedule, and how a resumed schedule spans a new length."""

from __future__ import annotations

import math
from typing import Any

import torch

from .config import TrainConfig


def make_optimizer(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass per tensor and no temporaries, the same numbers as
    the default implementation, and its state dicts load either way (docs/benchmarks.md)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    if cfg.lr_schedule == "cosine":  # stepped every step
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if cfg.lr_schedule == "plateau":  # stepped once per epoch on validation AUC
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=1)
    return None


def stretch_cosine(scheduler: Any, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
    """A run resumed with more (or fewer) epochs: the cosine schedule spans the new length, with
    the learning rate it would have at this step had it been planned that way from the start
    (the scheduler's recursive update would otherwise keep the old shape, and stay at 0 once a
    finished schedule is extended)."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        return
    total_steps = max(total_steps, 1)
    if scheduler.T_max == total_steps:
        return
    scheduler.T_max = total_steps
    progress = min(scheduler.last_epoch, total_steps) / total_steps
    for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base_lr - scheduler.eta_min) * (1 + math.cos(math.pi * progress)) / 2
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
