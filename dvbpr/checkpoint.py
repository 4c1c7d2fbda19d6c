"""Checkpoints that describe themselves and load without executing pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
`torch.load(weights_only=True)` reads it:
  format, model_config, train_config, user_ids, item_ids, cold_items, dataset_signature,
  model (state dict), epoch, step, metrics and, in `last.pt` only, the training state
  (optimizer, scheduler, RNG states) that `--resume` needs.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, one_line
from .fsutil import atomic_write
from .model import DVBPR, ModelConfig

FORMAT = "dvbpr-checkpoint-1"


def save_checkpoint(
    path: str | Path,
    model: DVBPR,
    *,
    train_config: dict,
    user_ids: list[str],
    item_ids: list[str],
    cold_items: torch.Tensor,
    dataset_signature: str,
    epoch: int,
    step: int,
    metrics: dict,
    training_state: dict | None = None,
    buffers: dict[str, torch.Tensor] | None = None,
) -> Path:
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
    return atomic_write(path, lambda fh: torch.save(ckpt, fh))


_FIELDS = {
    "model_config": dict,
    "train_config": dict,
    "user_ids": list,
    "item_ids": list,
    "cold_items": torch.Tensor,
    "dataset_signature": str,
    "model": dict,
    "epoch": int,
    "step": int,
    "metrics": dict,
}
"""What every checkpoint holds (`save_checkpoint`), checked on load: a file that lacks any of them
is refused with its name instead of failing later on a missing key."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint written by `save_checkpoint`. CheckpointError, one line naming the file, when it
    is missing, empty, truncated, not a PyTorch archive, holds pickled objects other than tensors
    and plain data (a pickle with code in it: refused by `weights_only=True` before anything in it
    runs) or lacks what a DVBPR checkpoint holds."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    _check_archive(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler met something else
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"refusing checkpoint {path}: it holds pickled Python objects{what}, not only tensors and "
            "plain data; loading them could run code, so nothing in it was loaded"
        ) from None
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(exc)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a DVBPR checkpoint (format {FORMAT})")
    wrong = [f"{key} ({kind.__name__})" for key, kind in _FIELDS.items() if not isinstance(ckpt.get(key), kind)]
    if wrong:
        raise CheckpointError(f"{path} is not a complete DVBPR checkpoint: missing or malformed {', '.join(wrong)}")
    try:
        ModelConfig(**ckpt["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its model_config does not fit this version of dvbpr: {exc}") from None
    return ckpt


def _check_archive(path: Path) -> None:
    """torch.save writes a zip archive; anything else (a bare pickle included) is refused before
    torch sees it, and a cut-off archive is told apart from a foreign file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head and zipfile.is_zipfile(path):
            return
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not head:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty")
    if head == b"PK\x03\x04":  # a zip archive's start without its end (the central directory)
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated (an incomplete copy or write?)")
    if head[0] == 0x80:  # the PROTO opcode every pickle since protocol 2 starts with
        raise CheckpointError(
            f"refusing checkpoint {path}: a bare Python pickle, not a PyTorch checkpoint archive; "
            "loading it could run code, so it was not loaded"
        )
    raise CheckpointError(f"{path} is not a DVBPR checkpoint (not a PyTorch checkpoint archive)")


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> DVBPR:
    model = DVBPR(ModelConfig(**ckpt["model_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit its own config: {one_line(exc)}") from None
    return model.to(device).eval()


def checkpoint_fields(dataset, train_config: dict) -> dict:
    """What every checkpoint of a run on `dataset` holds besides the weights and the progress
    (`save_checkpoint`'s keyword arguments): id maps, cold items, signature, train config."""
    return dict(
        user_ids=dataset.users.ids,
        item_ids=dataset.items.ids,
        cold_items=torch.as_tensor(dataset.cold_items),
        dataset_signature=dataset_signature(dataset),
        train_config=train_config,
    )


@dataclass
class CheckpointWriter:
    """Writes a training run's checkpoints (a no-op on ranks other than 0). Given the early-stop
    counters, a checkpoint is resumable (last.pt): it also holds the optimiser, the schedule, the
    RNG state and the position in the epoch."""

    run_dir: Path
    model: DVBPR
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    device: torch.device
    active: bool
    fields: dict  # `checkpoint_fields`

    def save(
        self,
        name: str,
        epoch: int,
        step_in_epoch: int,
        metrics: dict,
        early_stop: tuple[float, int] | None = None,
        before: Any = None,
    ) -> None:
        """`early_stop`: (best validation AUC, epochs without gain). `before`: the RNG state and
        buffers from before the step a resume runs first (`train.CheckpointDue`), else the
        current ones."""
        if not self.active:
            return
        state = None
        if early_stop is not None:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "rng": before.rng if before else rng_state(self.device),
                "step_in_epoch": step_in_epoch,
                "best": early_stop[0],
                "stale_epochs": early_stop[1],
            }
        save_checkpoint(
            self.run_dir / name,
            self.model,
            epoch=epoch,
            step=epoch * self.steps_per_epoch + step_in_epoch,
            metrics=metrics,
            training_state=state,
            buffers=before.buffers if before else None,
            **self.fields,
        )


def transfer_weights(model: DVBPR, source: dict, user_ids: list[str], item_ids: list[str]) -> None:
    """Initialise `model` from another run's checkpoint (fine-tuning): the CNN as it is, and the
    rows of theta, gamma and beta of the users and items found in `source` by id; new users and
    items keep their fresh parameters."""
    state, own = source["model"], model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name.startswith("cnn.") and name in own:  # a crop head is for training only
                own[name].copy_(tensor)
        for table, ids_key, ids in (
            ("theta_users", "user_ids", user_ids),
            ("gamma_users", "user_ids", user_ids),
            ("gamma_items", "item_ids", item_ids),
            ("beta_items", "item_ids", item_ids),
        ):
            key = f"{table}.weight"
            if key not in state or key not in own:
                continue
            old_index = {id_: i for i, id_ in enumerate(source[ids_key])}
            pairs = [(new, old_index[id_]) for new, id_ in enumerate(ids) if id_ in old_index]
            if pairs:
                new_rows, old_rows = map(torch.tensor, zip(*pairs))
                own[key][new_rows] = state[key][old_rows].to(own[key].dtype)


def rng_state(device: torch.device) -> dict:
    """The RNG states a resumable checkpoint keeps (the CPU's, and the GPU's on CUDA)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def dataset_signature(dataset) -> str:
    """sha256 of a dataset's ids and splits: what a model depends on. Unlike the image-cache
    fingerprint it ignores file times, so a regenerated identical dataset still matches."""
    h = hashlib.sha256()
    for ids in (dataset.users.ids, dataset.items.ids):
        h.update("\n".join(ids).encode() + b"\0")
    for rows in (dataset.train, dataset.val, dataset.test):
        h.update(rows.astype("<i8").tobytes() + b"\0")
    return h.hexdigest()
