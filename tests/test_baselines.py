"""BPR-MF is compared at its best validation epoch and L2, as DVBPR's best.pt is chosen."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dvbpr.baselines import BPRMF, BPRMFConfig, train_bpr_mf, tune_bpr_mf
from dvbpr.data import load_dataset
from dvbpr.errors import TrainingError


def test_bpr_mf_keeps_its_best_validation_epoch_and_stops_after_patience(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    scripted = iter([0.50, 0.70, 0.60, 0.65, 0.55, 0.99])
    states: list[dict[str, torch.Tensor]] = []

    def val_auc(model: BPRMF) -> float:
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    model = train_bpr_mf(dataset, BPRMFConfig(epochs=6, patience=3), val_auc=val_auc)
    assert model.best_epoch == 2
    assert len(states) == 5  # epochs 3, 4 and 5 brought no gain: the sixth (0.99) never ran
    assert not torch.equal(states[1]["gamma_items.weight"], states[4]["gamma_items.weight"])  # it trained on
    for name, value in model.state_dict().items():
        assert torch.equal(value, states[1][name]), name  # and returned epoch 2's parameters


def test_bpr_mf_without_a_validation_score_keeps_its_last_epoch(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    model = train_bpr_mf(dataset, BPRMFConfig(epochs=2))
    assert model.best_epoch == 2


def test_bpr_mf_without_a_validation_score_has_none(tiny_data: Path) -> None:
    model = train_bpr_mf(load_dataset(tiny_data), BPRMFConfig(epochs=1, l2=0.5))
    assert math.isnan(model.best_val_auc) and model.l2_weight == 0.5


def test_tuned_bpr_mf_is_the_l2_with_the_best_validation_auc(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    cfg = BPRMFConfig(epochs=2, patience=5)
    # two epochs per L2, in grid order: the second L2's first epoch is the best of all
    scripted = iter([0.50, 0.60, 0.70, 0.55, 0.65, 0.68])
    model = tune_bpr_mf(dataset, lambda m: next(scripted), cfg, l2_grid=(1e-3, 0.5, 2.0))
    assert (model.l2_weight, model.best_epoch, model.best_val_auc) == (0.5, 1, 0.70)
    alone = train_bpr_mf(dataset, BPRMFConfig(epochs=1, l2=0.5))  # the same seed, the same first epoch
    for name, value in model.state_dict().items():
        assert torch.equal(value, alone.state_dict()[name]), name


def test_tuned_bpr_mf_keeps_the_first_l2_on_a_tie_and_needs_a_grid(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    model = tune_bpr_mf(dataset, lambda m: 0.6, BPRMFConfig(epochs=1), l2_grid=(0.3, 0.1))
    assert model.l2_weight == 0.3
    with pytest.raises(TrainingError, match="l2_grid"):
        tune_bpr_mf(dataset, lambda m: 0.6, l2_grid=())
