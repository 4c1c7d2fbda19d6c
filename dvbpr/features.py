"""Item features phi(X_i): the device, image batches from the uint8 store, and the CNN pass.

Training, validation, the recommender and the embedding map all compute phi here, so a
catalogue image and the same image uploaded get the same features (bf16 autocast on GPUs that
support it, float32 on the CPU, channels-last input).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
import torch
from tqdm import tqdm

from .errors import DeviceUnavailableError
from .images import ImageStore, to_model_input
from .model import DVBPR


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`; DeviceUnavailableError when CUDA is
    asked for on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError("CUDA was requested but no GPU is available here; use --device cpu or auto")
    return torch.device(name)


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 on GPUs that support it; the CPU stays in float32 (bf16 is slower on most CPUs)."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


class ImageBatches:
    """Gathers float NCHW batches in [-1, 1] on the training device from the uint8 store.

    On CUDA the whole uint8 store moves to the GPU when it fits in a third of free memory, so a
    batch is one index_select; otherwise rows go through pinned host memory. Build one only to
    read batches (training, computing phi): on CUDA it copies the store.
    """

    def __init__(self, store: ImageStore, device: torch.device):
        self.store, self.device = store, device
        self.resident: torch.Tensor | None = None
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if store.array.nbytes < free / 3:
                self.resident = copy_to_device(store.array, device)

    def __call__(self, items: np.ndarray) -> torch.Tensor:
        if self.resident is not None:
            rows = self.resident[torch.as_tensor(items, device=self.device)]
        else:
            rows = self.store.batch(items)
            if self.device.type == "cuda":
                rows = rows.pin_memory().to(self.device, non_blocking=True)
        return _model_input(rows)


def copy_to_device(array: np.ndarray, device: torch.device, chunk_bytes: int = 256 << 20) -> torch.Tensor:
    """A device copy of the (read-only, memory-mapped) uint8 store, read in chunks of about
    `chunk_bytes`: no host copy of the whole store, and no torch warning about wrapping a
    read-only array (each chunk is copied into writable memory first)."""
    out = torch.empty(array.shape, dtype=torch.uint8, device=device)
    rows = max(1, chunk_bytes // max(1, array[:1].nbytes))
    for start in range(0, len(array), rows):
        out[start : start + rows] = torch.from_numpy(np.array(array[start : start + rows]))
    return out


def _model_input(rows_uint8: torch.Tensor) -> torch.Tensor:
    return to_model_input(rows_uint8).contiguous(memory_format=torch.channels_last)


def _phi(model: DVBPR, batch: torch.Tensor) -> torch.Tensor:
    with autocast(batch.device):
        return model.cnn(batch).float()


@torch.inference_mode()
def embed_items(
    model: DVBPR, images: ImageBatches, n_items: int, batch_size: int = 512, progress: bool = False
) -> torch.Tensor:
    """phi(X_i) for every item, (n_items, K) float32 on the images' device (the CNN in eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(
        range(0, n_items, batch_size), desc="item features", disable=not progress, unit="batch", leave=False
    ):
        out.append(_phi(model, images(np.arange(start, min(start + batch_size, n_items)))))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.cfg.dim, device=images.device)


@torch.inference_mode()
def embed_pixels(model: DVBPR, pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """phi of preprocessed images (uint8 (N, size, size, 3), e.g. from `images.load_image`),
    (N, K) float32 on `device`; the model is expected in eval mode."""
    rows = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    return _phi(model, _model_input(rows))
