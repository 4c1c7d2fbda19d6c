"""BPR-MF is compared at its best validation epoch, as DVBPR's best.pt is."""

from __future__ import annotations

from pathlib import Path

import torch

from dvbpr.baselines import BPRMF, BPRMFConfig, train_bpr_mf
from dvbpr.data import load_dataset


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
