"""Reference numbers of the DVBPR tutorial on the Wikimedia Commons dataset (test split),
shown beside a model's metrics when the active dataset's name contains "wikimedia"."""

from __future__ import annotations

METRICS = ("auc", "rr", "recall@20", "precision@20", "ndcg@20", "recall@100", "precision@100", "ndcg@100")

_ROWS = {
    "DVBPR": (.83168, .04507, .12152, .00607, .05814, .25695, .00256, .08245),
    "VBPR": (.77846, .02169, .05565, .00278, .02684, .13821, .00138, .04105),
    "ACF": (.80409, .01594, .05473, .00273, .02127, .14935, .00149, .03781),
    "CuratorNet": (.66931, .01955, .03803, .00190, .02226, .07884, .00078, .02943),
}

TUTORIAL = {model: dict(zip(METRICS, values)) for model, values in _ROWS.items()}


def applies(dataset_name: str) -> bool:
    return "wikimedia" in dataset_name.lower()
