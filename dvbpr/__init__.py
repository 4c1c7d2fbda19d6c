"""DVBPR: Deep Visually-aware Bayesian Personalized Ranking (Kang et al., ICDM 2017).

x_ui = beta_i + gamma_u . gamma_i + theta_u . phi(X_i), with phi a CNN trained jointly.
Heavy modules load on first use, so `import dvbpr` stays fast.
"""

import importlib

from .errors import (
    CheckpointError,
    DataError,
    DatasetChangedError,
    DeviceUnavailableError,
    DVBPRError,
    ImageError,
    JobError,
    TrainingError,
    UnknownIdError,
)

__all__ = [
    "CheckpointError",
    "DataError",
    "DatasetChangedError",
    "DeviceUnavailableError",
    "DVBPRError",
    "ImageError",
    "JobError",
    "TrainingError",
    "UnknownIdError",
    "Recommender",
    "load_dataset",
    "Dataset",
    "ImageStore",
    "TrainConfig",
    "train",
    "DVBPR",
    "ModelConfig",
]

_LAZY = {
    "Recommender": "recommender",
    "load_dataset": "data",
    "Dataset": "data",
    "ImageStore": "images",
    "TrainConfig": "config",
    "train": "train",
    "DVBPR": "model",
    "ModelConfig": "model",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'dvbpr' has no attribute {name!r}")
