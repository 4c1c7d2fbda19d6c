"""Reference numbers of the DVBPR tutorial on the Wikimedia Commons dataset (test split),
shown beside a model's metrics when the active dataset's name contains "wikimedia"."""

from __future__ import annotations

METRICS = ("auc", "rr", "recall@20", "precision@20", "ndcg@20", "recall@100", "precision@100", "ndcg@100")

_ROWS = {
    "DVBPR": (0.83168, 0.04507, 0.12152, 0.00607, 0.05814, 0.25695, 0.00256, 0.08245),
    "VBPR": (0.77846, 0.02169, 0.05565, 0.00278, 0.02684, 0.13821, 0.00138, 0.04105),
    "ACF": (0.80409, 0.01594, 0.05473, 0.00273, 0.02127, 0.14935, 0.00149, 0.03781),
    "CuratorNet": (0.66931, 0.01955, 0.03803, 0.00190, 0.02226, 0.07884, 0.00078, 0.02943),
}

TUTORIAL = {model: dict(zip(METRICS, values, strict=True)) for model, values in _ROWS.items()}


def applies(dataset_name: str) -> bool:
    return "wikimedia" in dataset_name.lower()
