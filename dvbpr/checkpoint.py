"""Checkpoints that describe themselves and load without executing pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
`torch.load(weights_only=True)` reads it:
  format, model_config, train_config, user_ids, item_ids, cold_items, dataset_signature,
  model (state dict), epoch, step, metrics and, in `last.pt` only, the training state
  (optimizer, scheduler, RNG states) that `--resume` needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .fsutil import atomic_save_torch
from .model import DVBPR, ModelConfig
from .rundir import BEST, LAST

FORMAT = "dvbpr-checkpoint-1"


def save_checkpoint(path: str | Path, model: DVBPR, *, train_config: dict, user_ids: list[str],
                    item_ids: list[str], cold_items: torch.Tensor, dataset_signature: str,
                    epoch: int, step: int, metrics: dict, training_state: dict | None = None,
                    buffers: dict[str, torch.Tensor] | None = None) -> Path:
    """Write atomically: a crash or SIGKILL leaves the previous checkpoint intact. `buffers`
    replaces the model's own (e.g. BatchNorm statistics as they were before the current step)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()} | (buffers or {})
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "model_config": asdict(model.cfg),
        "train_config": dict(train_config),
        "user_ids": list(user_ids),
        "item_ids": list(item_ids),
        "cold_items": cold_items.detach().cpu().bool(),
        "dataset_signature": dataset_signature,
        "model": state,
        "epoch": int(epoch),
        "step": int(step),
        "metrics": dict(metrics),
    }
    if training_state is not None:
        ckpt["training_state"] = training_state
    return atomic_save_torch(path, ckpt)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a DVBPR checkpoint (format {FORMAT})")
    return ckpt


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> DVBPR:
    model = DVBPR(ModelConfig(**ckpt["model_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit its own config: {exc}") from exc
    return model.to(device).eval()


def find_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint a run is used through: best.pt, else last.pt."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    for name in (BEST, LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    raise CheckpointError(f"run folder {run_dir} has no checkpoint ({BEST} or {LAST}) yet")


def dataset_signature(dataset) -> str:
    """sha256 of a dataset's ids and splits: what a model depends on. Unlike the image-cache
    fingerprint it ignores file times, so a regenerated identical dataset still matches."""
    h = hashlib.sha256()
    for ids in (dataset.users.ids, dataset.items.ids):
        h.update("\n".join(ids).encode() + b"\0")
    for rows in (dataset.train, dataset.val, dataset.test):
        h.update(rows.astype("<i8").tobytes() + b"\0")
    return h.hexdigest()


def file_hash(path: str | Path) -> str:
    """sha256 of a file, for caches keyed by the exact checkpoint."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
