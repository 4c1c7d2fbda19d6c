"""TensorBoard event files of a run, beside metrics.jsonl: `tensorboard --logdir runs/`.

Scalars at every log interval (`train/loss`, `train/lr`, `train/triplets_per_s`) and every
epoch (`epoch/loss`, `epoch/triplets_per_s`, and each validation metric as `val/<metric>`), all
against the global step; at the end of training, the embedding projector: phi of up to
`PROJECTOR_ITEMS` items (a fixed random sample) from the checkpoint the run serves (best.pt,
else last.pt), with their item id and category and a sprite of `THUMBNAIL` px thumbnails.
Files go to RUN_DIR/tensorboard/. A resumed run appends there and purges the steps the
interrupted process logged after its checkpoint (SummaryWriter's purge_step), so the curves
have no doubled stretch.

Optional by design: tensorboard is imported on the first write, and when it is missing or any
write fails, one warning says so and logging turns itself off; training goes on. Rank 0 alone
writes (`active`).
"""

from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import Dataset
from .features import embed_pixels
from .images import ImageStore
from .rundir import TENSORBOARD, find_checkpoint

PROJECTOR_ITEMS = 5000
"""Items in the projector at most (a random sample, seed 0): its sprite and TSV files stay small."""

THUMBNAIL = 32
"""Side of an item's thumbnail in the sprite, px (a 5,000-item sprite is 71 x 32 = 2,272 px)."""

_FLUSH_SECS = 30  # how stale the event files may get while a run trains


class TensorBoardLog:
    """Writes a run's TensorBoard events; a no-op when inactive, or once it has turned off."""

    def __init__(self, run_dir: Path, active: bool, fresh: bool = False):
        self.folder = Path(run_dir) / TENSORBOARD
        self.active = active
        self.fresh = fresh
        self._writer: Any = None
        if active and fresh:  # a fresh run starts anew, as metrics.jsonl does
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------ records
    def step(self, record: dict) -> None:
        """A metrics.jsonl step line (`Meter.step_record`) as scalars."""
        self._scalars(
            record["step"], {f"train/{k}": record[k] for k in ("loss", "lr", "triplets_per_s") if k in record}
        )

    def epoch(self, record: dict) -> None:
        """A metrics.jsonl epoch line (`Meter.epoch_record`): the epoch's loss and throughput and
        every validation metric (counts of users left out)."""
        values = {f"epoch/{k}": record[k] for k in ("loss", "triplets_per_s") if k in record}
        for key, value in record.items():
            if key.startswith("val_") and key not in ("val_users", "val_cold_users"):
                values[f"val/{key.removeprefix('val_')}"] = value
        self._scalars(record["step"], values)

    def _scalars(self, step: int, values: dict[str, Any]) -> None:
        def write(writer: Any) -> None:
            for tag, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):  # nan: nothing to draw
                    writer.add_scalar(tag, value, step)

        self._write(write, first_step=step)

    # ---------------------------------------------------------------------------- projector
    def projector(self, run_dir: Path, dataset: Dataset, store: ImageStore, device: torch.device, step: int) -> None:
        """The embedding projector of the checkpoint the run serves (see the module docstring)."""

        def write(writer: Any) -> None:
            model = model_from_checkpoint(load_checkpoint(find_checkpoint(run_dir), device), device)
            items = projector_items(dataset.n_items)
            pixels = np.asarray(store.array[items])
            phi = torch.cat([embed_pixels(model, pixels[s : s + 512], device) for s in range(0, len(items), 512)])
            categories = dataset.item_categories or [""] * dataset.n_items
            writer.add_embedding(
                phi.cpu(),
                metadata=[[_cell(dataset.items.ids[i]), _cell(categories[i])] for i in items],
                metadata_header=["item_id", "category"],
                label_img=thumbnails(pixels),
                global_step=step,
                tag="phi",
            )

        self._write(write)

    # -------------------------------------------------------------------------------- writer
    def _write(self, write: Callable[[Any], None], first_step: int | None = None) -> None:
        """Run `write(writer)`, opening the writer first; any failure turns logging off.

        On resume, the first scalar step written is the first one the interrupted process may
        have logged after its checkpoint (both follow one log schedule): the events it wrote
        from there on are purged. The projector comes last and purges nothing."""
        if not self.active:
            return
        try:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter  # optional: needs tensorboard

                purge = None if self.fresh else first_step
                self._writer = SummaryWriter(str(self.folder), purge_step=purge, flush_secs=_FLUSH_SECS)
            write(self._writer)
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            self.active = False
            warnings.warn(
                f"TensorBoard logging is off for this run ({type(exc).__name__}: {exc}); training goes on "
                "(install the pinned tensorboard for event files)",
                RuntimeWarning,
                stacklevel=3,
            )
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - closing is best effort, the warning was given
                pass
            self._writer = None


def projector_items(n_items: int, limit: int = PROJECTOR_ITEMS) -> np.ndarray:
    """The items shown in the projector: all of them up to `limit`, else a sorted random sample
    (seed 0: the same items in every run of a catalogue)."""
    if n_items <= limit:
        return np.arange(n_items)
    return np.sort(np.random.default_rng(0).choice(n_items, limit, replace=False))


def thumbnails(pixels: np.ndarray, size: int = THUMBNAIL) -> torch.Tensor:
    """uint8 (N, H, W, 3) images as float (N, 3, size, size) in [0, 1] (area-averaged down)."""
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255
    if images.shape[-1] > size:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="area")
    return images


def _cell(text: str) -> str:
    """A value as one TSV cell (tabs and line breaks would split rows and columns)."""
    return " ".join(str(text).split()) or "-"
