"""Training throughput (triplets/s) three ways, same model, same batch, same loss:

* `real_loop`: the project's training loop, `dvbpr.train.train_one_epoch`, with its
  `ImageBatches` over the memory-mapped uint8 image store and `TripletSampler` epochs;
* `compute_bound`: the same model's forward, backward and Adam step on one batch already in
  memory (on the device, already scaled): what the loop would reach if data were free;
* `tutorial_pipeline`: the tutorial's way, a `torch.utils.data.DataLoader` whose worker
  processes open, decode, resize and convert each image file with PIL, per sample.

Used by `run.py` (CPU) and `gpu.py` (CUDA, bf16). Each returns a dict with `triplets_per_s`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import ensure_repo_on_path

ensure_repo_on_path()

from dvbpr.data import Dataset  # noqa: E402
from dvbpr.images import ImageStore, to_model_input  # noqa: E402
from dvbpr.model import DVBPR, bpr_loss  # noqa: E402
from dvbpr.sampling import TripletSampler  # noqa: E402
from dvbpr.train import Dist, ImageBatches, TrainConfig, build_model, train_one_epoch  # noqa: E402

try:  # the optimiser exactly as dvbpr.train.train makes it
    from dvbpr.train import make_optimizer  # noqa: E402
except ImportError:  # a tree from before it existed
    def make_optimizer(params, lr):
        return torch.optim.Adam(params, lr=lr)


def _autocast(device: torch.device):
    # as dvbpr.train: bf16 on GPUs that support it, float32 on the CPU
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(dataset: Dataset, arch: str, image_size: int, batch: int, device: torch.device,
          seed: int = 0) -> tuple[TrainConfig, DVBPR, torch.optim.Optimizer]:
    """The model and optimiser exactly as `dvbpr.train.train` builds them."""
    cfg = TrainConfig(data=str(dataset.root), out="-", arch=arch, image_size=image_size,
                      batch_size=batch, device=device.type, seed=seed)
    torch.manual_seed(seed)
    model, _ = build_model(cfg, dataset, device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.lr)
    return cfg, model, optimizer


def real_loop(dataset: Dataset, store: ImageStore, arch: str, batch: int, device: torch.device,
              warmup: int, steps: int, whole_epoch: bool = False,
              images: ImageBatches | None = None) -> dict[str, Any]:
    """`train_one_epoch` timed from the end of step `warmup` to the end of step warmup + steps
    (or, with `whole_epoch`, one full epoch from its first step, sampling included). `images`
    reuses an `ImageBatches` (on CUDA it holds the whole store on the GPU)."""
    cfg, model, optimizer = setup(dataset, arch, store.size, batch, device)
    images = images if images is not None else ImageBatches(store, device)
    sampler = TripletSampler(dataset.train, dataset.n_items, cfg.negatives)
    stamps: list[float] = []
    want = None if whole_epoch else warmup + steps
    triplets_seen = 0

    def on_step(step: int, loss: float, n: int) -> bool:
        nonlocal triplets_seen
        stamps.append(time.perf_counter())
        triplets_seen += n
        return want is None or len(stamps) < want

    epoch = 0
    t0 = time.perf_counter()
    while True:
        triplets = sampler.epoch(cfg.seed * 1_000_003 + epoch)
        train_one_epoch(model, optimizer, None, triplets, images, cfg, Dist(), start_step=0, on_step=on_step)
        epoch += 1
        if whole_epoch or len(stamps) >= want:
            break
    _sync(device)
    if whole_epoch:
        seconds = time.perf_counter() - t0
        return {"triplets_per_s": triplets_seen / seconds, "epoch_s": seconds, "steps": len(stamps),
                "triplets": triplets_seen}
    seconds = stamps[warmup + steps - 1] - stamps[warmup - 1]
    return {"triplets_per_s": steps * batch / seconds, "step_s": seconds / steps}


def _step(model: DVBPR, optimizer: torch.optim.Optimizer, cfg: TrainConfig, u, i, j, imgs,
          device: torch.device, net: torch.nn.Module | None = None) -> torch.Tensor:
    """One optimisation step with train_one_epoch's loss (BPR + L2 terms), no host sync.
    `net` runs the forward pass (a compiled model), `model` gives the L2 terms."""
    with _autocast(device):
        x_uij = (net or model)(u, i, j, imgs)
    bpr = bpr_loss(x_uij)
    loss = (bpr + model.embedding_l2(u, i, j, cfg.l2_theta, cfg.l2_cf)
            + (cfg.l2_cnn * model.cnn_l2() if cfg.l2_cnn else 0.0)) / len(u)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return bpr


def compute_bound(dataset: Dataset, store: ImageStore, arch: str, batch: int, device: torch.device,
                  warmup: int, steps: int, sync_every_step: bool = False,
                  compile_model: bool = False) -> dict[str, Any]:
    """Forward, backward and Adam step on one fixed batch already on the device."""
    cfg, model, optimizer = setup(dataset, arch, store.size, batch, device)
    rng = np.random.default_rng(0)
    sampler = TripletSampler(dataset.train, dataset.n_items, cfg.negatives)
    local = sampler.epoch(0)[:batch]
    if len(local) < batch:
        local = local[rng.integers(0, len(local), batch)]
    u, i, j = (torch.as_tensor(local[:, c], device=device) for c in range(3))
    rows = store.batch(np.concatenate([local[:, 1], local[:, 2]])).to(device)
    imgs = to_model_input(rows).contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_model else model
    for _ in range(warmup):
        _step(model, optimizer, cfg, u, i, j, imgs, device, net)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        bpr = _step(model, optimizer, cfg, u, i, j, imgs, device, net)
        if sync_every_step:
            float(bpr)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"triplets_per_s": steps * batch / seconds, "step_s": seconds / steps}


class TutorialTriplets(torch.utils.data.Dataset):
    """The tutorial's dataset: each sample opens, decodes, resizes and converts its two image
    files with PIL (in the DataLoader's worker processes)."""

    def __init__(self, triplets: np.ndarray, paths: list[str], size: int):
        self.triplets, self.paths, self.size = triplets, paths, size

    def __len__(self) -> int:
        return len(self.triplets)

    def _image(self, item: int) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        with Image.open(self.paths[item]) as im:
            return to_tensor(im.convert("RGB").resize((self.size, self.size)))  # [0, 1], as the tutorial

    def __getitem__(self, k: int):
        u, i, j = (int(x) for x in self.triplets[k])
        return u, i, j, self._image(i), self._image(j)


def tutorial_pipeline(dataset: Dataset, image_size: int, arch: str, batch: int, device: torch.device,
                      warmup: int, steps: int, workers: int) -> dict[str, Any]:
    """DataLoader(num_workers=workers, shuffle) over the tutorial dataset, same model and step
    (the tutorial also reads the loss back every step)."""
    cfg, model, optimizer = setup(dataset, arch, image_size, batch, device)
    triplets = TripletSampler(dataset.train, dataset.n_items, cfg.negatives).epoch(0)
    while len(triplets) < (warmup + steps) * batch:
        triplets = np.concatenate([triplets, triplets])
    loader = torch.utils.data.DataLoader(
        TutorialTriplets(triplets, dataset.image_paths.strings, image_size), batch_size=batch,
        shuffle=True, num_workers=workers, drop_last=True, pin_memory=device.type == "cuda")
    t0 = None
    done = 0
    for u, i, j, xi, xj in loader:
        if done == warmup:
            _sync(device)
            t0 = time.perf_counter()
        imgs = torch.cat([xi, xj]).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        bpr = _step(model, optimizer, cfg, u.to(device), i.to(device), j.to(device), imgs, device)
        bpr.detach().item()  # the tutorial's running_loss += loss.item()
        done += 1
        if done == warmup + steps:
            break
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"triplets_per_s": steps * batch / seconds, "step_s": seconds / steps, "workers": workers}


# ------------------------------------------------------------------------------- section
def training_data(ctx) -> "Path":
    """The default dataset (mirrored, so caches stay in the work folder), or a tiny one in smoke."""
    from pathlib import Path

    from benchmarks.synthdata import CatalogueSpec, make_catalogue, mirror_dataset

    if ctx.sizes.train_data == "default":
        from dvbpr.synth import ensure_default_dataset

        return mirror_dataset(Path(ensure_default_dataset(progress=False)), ctx.work / "default")
    out = ctx.work / "tiny"
    if not (out / "interactions.csv").is_file():
        make_catalogue(out, CatalogueSpec(60, 200, 480, image_size=48, pool=20), workers=1)
    return out


def section(ctx) -> list:
    from benchmarks.common import Row
    from dvbpr.data import load_dataset

    s = ctx.sizes
    device = torch.device("cpu")
    dataset = load_dataset(training_data(ctx))
    rows = []
    for suffix, arch, size, batch, (warmup, steps) in (
            ("", "cnnf-small", s.small_size, s.small_batch, s.small_steps),
            ("_cnnf224", "cnnf", s.cnnf_size, s.cnnf_batch, s.cnnf_steps)):
        label = f"{arch} {size}px, batch {batch}"
        store = ImageStore.open(dataset, size, progress=False)
        real = bound = 0.0
        for _ in range(s.repeats if not suffix else 1):  # alternate; the best of each resists noise
            ctx.log(f"train {label}: real loop ({warmup}+{steps} steps)")
            real = max(real, real_loop(dataset, store, arch, batch, device, warmup, steps)["triplets_per_s"])
            ctx.log(f"train {label}: compute bound")
            bound = max(bound, compute_bound(dataset, store, arch, batch, device, warmup, steps)["triplets_per_s"])
        ctx.log(f"train {label}: tutorial pipeline (DataLoader, 2 workers)")
        tut = tutorial_pipeline(dataset, size, arch, batch, device, warmup, steps, workers=2)["triplets_per_s"]
        rows += [Row(f"train_vs_compute_bound{suffix}", real, "triplets/s", bound,
                     note=f"{label}; goal >= 0.9"),
                 Row(f"train_vs_tutorial_pipeline{suffix}", real, "triplets/s", tut,
                     note=f"{label}; tutorial = DataLoader, 2 workers, PIL per sample")]
    return rows
