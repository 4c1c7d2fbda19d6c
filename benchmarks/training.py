"""Training throughput (triplets/s) three ways, same model, same batch, same loss:

* `RealLoop`: the project's training loop, `dvbpr.train.train_one_epoch`, with its
  `ImageBatches` over the memory-mapped uint8 image store and `TripletSampler` epochs;
* `ComputeBound`: the same model's forward, backward and Adam step on one batch already in
  memory (on the device, already scaled): what the loop would reach if data were free;
* `tutorial_pipeline`: the tutorial's way, a `torch.utils.data.DataLoader` whose worker
  processes open, decode, resize and convert each image file with PIL, per sample.

The real loop and the compute bound take turns in rounds (`interleaved`), so the load other
processes put on the machine hits both alike; the best round of each counts. Used by `run.py`
(CPU) and `gpu.py` (CUDA, bf16).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import ensure_repo_on_path

ensure_repo_on_path()

from dvbpr.config import TrainConfig  # noqa: E402
from dvbpr.data import Dataset  # noqa: E402
from dvbpr.distributed import Dist  # noqa: E402
from dvbpr.features import ImageBatches, autocast  # noqa: E402
from dvbpr.images import ImageStore, to_model_input  # noqa: E402
from dvbpr.model import DVBPR, bpr_loss  # noqa: E402
from dvbpr.optim import make_optimizer  # noqa: E402
from dvbpr.sampling import TripletSampler  # noqa: E402
from dvbpr.train import build_model, train_one_epoch  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(
    dataset: Dataset, arch: str, image_size: int, batch: int, device: torch.device, seed: int = 0
) -> tuple[TrainConfig, DVBPR, torch.optim.Optimizer]:
    """The model and optimiser exactly as `dvbpr.train.train` builds them; one sampled negative
    per positive (no in-batch negatives), the loss `ComputeBound` and the tutorial compute."""
    cfg = TrainConfig(
        data=str(dataset.root),
        out="-",
        arch=arch,
        image_size=image_size,
        batch_size=batch,
        device=device.type,
        seed=seed,
        in_batch=False,
    )
    torch.manual_seed(seed)
    model, _ = build_model(cfg, dataset, device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.lr)
    return cfg, model, optimizer


class RealLoop:
    """The project's loop, `train_one_epoch`, over the store; `run(n)` does the next n steps
    (resuming inside the epoch, sampling the next epoch when one ends)."""

    def __init__(
        self,
        dataset: Dataset,
        store: ImageStore,
        arch: str,
        batch: int,
        device: torch.device,
        images: ImageBatches | None = None,
    ):
        self.cfg, self.model, self.optimizer = setup(dataset, arch, store.size, batch, device)
        self.images = images if images is not None else ImageBatches(store, device)  # reuse: CUDA copy
        self.sampler = TripletSampler(dataset.train, dataset.n_items, self.cfg.negatives)
        self.device, self.epoch, self.position = device, 0, 0
        self.triplets = self.sampler.epoch(0)

    def run(self, steps: int) -> float:
        """Seconds for the next `steps` steps."""
        t0 = time.perf_counter()
        done = 0
        while done < steps:
            if self.position * self.cfg.batch_size >= len(self.triplets):
                self.epoch, self.position = self.epoch + 1, 0
                self.triplets = self.sampler.epoch(self.cfg.seed * 1_000_003 + self.epoch)
            for event in train_one_epoch(
                self.model, self.optimizer, None, self.triplets, self.images, self.cfg, Dist(), start_step=self.position
            ):
                done, self.position = done + 1, event.step + 1
                if done == steps:
                    break
        _sync(self.device)
        return time.perf_counter() - t0

    def whole_epoch(self) -> dict[str, Any]:
        """One full epoch from its first step, sampling included."""
        t0 = time.perf_counter()
        triplets = self.sampler.epoch(self.cfg.seed * 1_000_003 + self.epoch + 1)
        steps = sum(
            1 for _ in train_one_epoch(self.model, self.optimizer, None, triplets, self.images, self.cfg, Dist())
        )
        _sync(self.device)
        seconds = time.perf_counter() - t0
        return {"epoch_s": seconds, "steps": steps, "triplets_per_s": len(triplets) / seconds}


def _step(
    model: DVBPR,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    u,
    i,
    j,
    imgs,
    device: torch.device,
    net: torch.nn.Module | None = None,
) -> torch.Tensor:
    """One optimisation step with train_one_epoch's loss (BPR + L2 terms), no host sync.
    `net` runs the forward pass (a compiled model), `model` gives the L2 terms."""
    with autocast(device):
        # `net or model` would call len() on a compiled module (OptimizedModule defines __len__)
        x_uij = (model if net is None else net)(u, i, j, imgs)
    bpr = bpr_loss(x_uij)
    loss = (
        bpr
        + model.embedding_l2(u, i, j, cfg.l2_theta, cfg.l2_cf)
        + (cfg.l2_cnn * model.cnn_l2() if cfg.l2_cnn else 0.0)
    ) / len(u)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return bpr


class ComputeBound:
    """Forward, backward and Adam step on one fixed batch already on the device (optionally
    reading the loss back every step, or through `torch.compile`)."""

    def __init__(
        self,
        dataset: Dataset,
        store: ImageStore,
        arch: str,
        batch: int,
        device: torch.device,
        sync_every_step: bool = False,
        compile_model: bool = False,
    ):
        self.cfg, self.model, self.optimizer = setup(dataset, arch, store.size, batch, device)
        local = TripletSampler(dataset.train, dataset.n_items, self.cfg.negatives).epoch(0)[:batch]
        if len(local) < batch:
            local = local[np.random.default_rng(0).integers(0, len(local), batch)]
        self.u, self.i, self.j = (torch.as_tensor(local[:, c], device=device) for c in range(3))
        rows = store.batch(np.concatenate([local[:, 1], local[:, 2]])).to(device)
        self.imgs = to_model_input(rows).contiguous(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if compile_model else self.model
        self.device, self.sync_every_step = device, sync_every_step

    def run(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            bpr = _step(self.model, self.optimizer, self.cfg, self.u, self.i, self.j, self.imgs, self.device, self.net)
            if self.sync_every_step:
                float(bpr.detach())
        _sync(self.device)
        return time.perf_counter() - t0


def interleaved(runners: dict[str, Any], batch: int, warmup: int, steps: int, rounds: int) -> dict[str, float]:
    """Triplets/s of each runner: after `warmup` steps each, `rounds` rounds of `steps` steps,
    the runners taking turns (ABAB...), so load from other processes hits all of them alike;
    the best round of each counts."""
    for runner in runners.values():
        runner.run(warmup)
    best = {name: float("inf") for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            best[name] = min(best[name], runner.run(steps))
    return {name: steps * batch / seconds for name, seconds in best.items()}


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


def tutorial_pipeline(
    dataset: Dataset,
    image_size: int,
    arch: str,
    batch: int,
    device: torch.device,
    warmup: int,
    steps: int,
    rounds: int,
    workers: int,
) -> dict[str, Any]:
    """DataLoader(num_workers=workers, shuffle) over the tutorial dataset, same model and step
    (the tutorial also reads the loss back every step). One continuous run: `warmup` steps,
    then `rounds` rounds of `steps` steps; the best round counts. Not interleaved with other
    runners, whose rounds the prefetching workers would otherwise slow down."""
    if warmup < 1 or steps < 1 or rounds < 1:
        raise ValueError("warmup, steps and rounds must be at least 1")
    cfg, model, optimizer = setup(dataset, arch, image_size, batch, device)
    triplets = TripletSampler(dataset.train, dataset.n_items, cfg.negatives).epoch(0)
    while len(triplets) < (warmup + steps * rounds) * batch:
        triplets = np.concatenate([triplets, triplets])
    loader = torch.utils.data.DataLoader(
        TutorialTriplets(triplets, dataset.image_paths.strings, image_size),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    stamps = []
    for u, i, j, xi, xj in loader:
        imgs = torch.cat([xi, xj]).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        bpr = _step(model, optimizer, cfg, u.to(device), i.to(device), j.to(device), imgs, device)
        bpr.detach().item()  # the tutorial's running_loss += loss.item()
        stamps.append(time.perf_counter())
        if len(stamps) == warmup + steps * rounds:
            break
    del loader  # stops the workers
    ends = stamps[warmup - 1 :: steps]
    seconds = min(b - a for a, b in zip(ends, ends[1:]))
    return {"triplets_per_s": steps * batch / seconds, "step_s": seconds / steps, "workers": workers}


# ------------------------------------------------------------------------------- section
def training_data(ctx) -> Path:
    """The default dataset (mirrored, so caches stay in the work folder), or a tiny one in smoke."""
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
    for suffix, arch, size, batch, (warmup, steps, rounds) in (
        ("", "cnnf-small", s.small_size, s.small_batch, s.small_steps),
        ("_cnnf224", "cnnf", s.cnnf_size, s.cnnf_batch, s.cnnf_steps),
    ):
        label = f"{arch} {size}px, batch {batch}"
        store = ImageStore.open(dataset, size, progress=False)
        ctx.log(f"train {label}: real loop and compute bound, {rounds} rounds of {steps} steps, taking turns")
        runners = {
            "real": RealLoop(dataset, store, arch, batch, device),
            "bound": ComputeBound(dataset, store, arch, batch, device),
        }
        rates = interleaved(runners, batch, warmup, steps, rounds)
        # the tutorial runs alone and continuously (see tutorial_pipeline): compare it with the
        # real loop run the same way, right before it
        real = runners.pop("real")
        del runners
        alone = steps * batch / min(real.run(steps) for _ in range(rounds))
        del real
        ctx.log(f"train {label}: tutorial pipeline (DataLoader, 2 workers)")
        tut = tutorial_pipeline(dataset, size, arch, batch, device, warmup, steps, rounds, workers=2)
        rows += [
            Row(
                f"train_vs_compute_bound{suffix}",
                rates["real"],
                "triplets/s",
                rates["bound"],
                note=f"{label}; taking turns; goal >= 0.9",
            ),
            Row(
                f"train_vs_tutorial_pipeline{suffix}",
                alone,
                "triplets/s",
                tut["triplets_per_s"],
                note=f"{label}; each alone; tutorial = DataLoader, 2 workers, PIL per sample",
            ),
        ]
    return rows
