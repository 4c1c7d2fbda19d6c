"""Training: BPR over (user, positive, negative) triplets with the CNN in the loop.

One process or many (torchrun sets WORLD_SIZE: DistributedDataParallel, NCCL on CUDA, gloo on
CPU). Rank 0 alone writes RUN_DIR: `last.pt` (resumable), `best.pt` (best validation AUC),
`config.json`, `metrics.jsonl` (one JSON line per log interval and per epoch) and `status.json`
(state, progress, ETA, pid) for the app's live view.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import dataset_signature, find_checkpoint, load_checkpoint, save_checkpoint
from .data import Dataset, load_dataset
from .errors import DVBPRError, TrainingError
from .fsutil import atomic_write_json, is_file_locked, read_json
from .images import ImageStore, to_model_input
from .model import ARCHS, DEFAULT_IMAGE_SIZE, NORMS, TERMS, THETA_INITS, DVBPR, ModelConfig, bpr_loss
from .rundir import BEST, CONFIG, LAST, METRICS, STATUS, find_run_data, relative_to_run
from .sampling import NEGATIVE_POOLS, TripletSampler

LR_SCHEDULES = ("none", "cosine", "plateau")


@dataclass
class TrainConfig:
    """Every training choice; saved in config.json and inside each checkpoint."""

    data: str
    out: str
    arch: str = "auto"  # auto: cnnf on CUDA, cnnf-small on the CPU
    image_size: int = 0  # 0: the architecture's own (224 for cnnf/alexnet, 64 for cnnf-small)
    dim: int = 100
    cf_dim: int = 100
    terms: str = "full"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    l2_cnn: float = 1e-3  # on CNN weights, biases excluded (the original)
    l2_theta: float = 1.0  # on the batch's theta rows (the original)
    l2_cf: float = 1e-3  # on the batch's gamma and beta rows
    negatives: str = "warm"  # measured better for cold items than "all" (docs/training.md)
    in_batch: bool = True  # every image of a batch is also a negative for the batch's other users
    norm: str = "batch"  # BatchNorm in the CNN ("none": the paper's CNN-F)
    theta_init: str = "normal"  # N(0, 0.01); "uniform": U(0, 0.01) as the original code
    dropout: float = 0.5  # on the CNN's hidden fc layers
    lr_schedule: str = "none"
    patience: int = 0  # epochs without validation gain before stopping; 0 = never
    device: str = "auto"
    seed: int = 0
    max_minutes: float = 0.0  # 0 = no limit
    log_every: int = 20  # steps between metrics.jsonl lines
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = end of epoch only
    val_users: int = 0  # validate on a fixed sample of users; 0 = all
    init_from: str = ""
    freeze_cnn: bool = False

    def validate(self) -> None:
        checks = [
            (self.arch in ("auto",) + ARCHS, f"arch must be auto or one of {ARCHS}"),
            (self.terms in TERMS, f"terms must be one of {TERMS}"),
            (self.norm in NORMS, f"norm must be one of {NORMS}"),
            (self.theta_init in THETA_INITS, f"theta init must be one of {THETA_INITS}"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.negatives in NEGATIVE_POOLS, f"negatives must be one of {NEGATIVE_POOLS}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr schedule must be one of {LR_SCHEDULES}"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 2, "batch size must be at least 2"),
            (self.lr > 0, "learning rate must be positive"),
            (self.dim >= 1 and self.cf_dim >= 1, "dimensions must be positive"),
            (min(self.l2_cnn, self.l2_theta, self.l2_cf) >= 0, "L2 coefficients must be >= 0"),
            (self.log_every >= 1, "log interval must be at least 1 step"),  # used as a modulus
            (min(self.checkpoint_every, self.patience, self.val_users, self.max_minutes) >= 0,
             "checkpoint interval, patience, validation users and time limit must be >= 0"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             "device must be auto, cpu or cuda"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)


PRESETS: dict[str, dict[str, Any]] = {
    # The original TensorFlow code's choices (docs/training.md compares them with the defaults).
    "paper": dict(norm="none", theta_init="uniform", in_batch=False, dropout=0.5, l2_theta=1.0,
                  l2_cnn=1e-3, negatives="all", lr=1e-4, batch_size=128),
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("CUDA was requested but no GPU is available here; use --device cpu or auto")
    return torch.device(name)


# ---------------------------------------------------------------------------------- images
class ImageBatches:
    """Gathers float NCHW batches in [-1, 1] on the training device from the uint8 store.

    On CUDA the whole uint8 store moves to the GPU when it fits in a third of free memory, so a
    batch is one index_select; otherwise rows go through pinned host memory.
    """

    def __init__(self, store: ImageStore, device: torch.device):
        self.store, self.device = store, device
        self.resident: torch.Tensor | None = None
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if store.array.nbytes < free / 3:
                self.resident = torch.from_numpy(np.ascontiguousarray(store.array)).to(device)

    def __call__(self, items: np.ndarray) -> torch.Tensor:
        if self.resident is not None:
            rows = self.resident[torch.as_tensor(items, device=self.device)]
        else:
            rows = self.store.batch(items)
            if self.device.type == "cuda":
                rows = rows.pin_memory().to(self.device, non_blocking=True)
        return to_model_input(rows).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def embed_items(model: DVBPR, images: ImageBatches, n_items: int, batch_size: int = 512,
                progress: bool = False) -> torch.Tensor:
    """phi(X_i) for every item, (n_items, K) float32 on the images' device."""
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(range(0, n_items, batch_size), desc="item features", disable=not progress,
                      unit="batch", leave=False):
        idx = np.arange(start, min(start + batch_size, n_items))
        with _autocast(images.device):
            out.append(model.cnn(images(idx)).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.cfg.dim, device=images.device)


def _autocast(device: torch.device):
    # bf16 on GPUs that support it; the CPU stays in float32 (bf16 is slower on most CPUs).
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


# ------------------------------------------------------------------------------ run folder
class RunLog:
    """status.json and metrics.jsonl of a run; a no-op on ranks other than 0. A fresh run (not
    a resume) starts both anew, so a run folder left by a failed start holds no stale lines."""

    def __init__(self, run_dir: Path, active: bool, fresh: bool = False):
        self.run_dir, self.active = run_dir, active
        if active and fresh:
            (run_dir / METRICS).unlink(missing_ok=True)
        self.status: dict[str, Any] = read_json(run_dir / STATUS, {}) if active and not fresh else {}

    def update(self, **fields_: Any) -> None:
        if not self.active:
            return
        self.status.update(fields_, pid=os.getpid(), updated_at=time.time())
        atomic_write_json(self.run_dir / STATUS, self.status)

    def metrics(self, record: dict) -> None:
        if not self.active:
            return
        import json

        with open(self.run_dir / METRICS, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")


def read_status(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / STATUS, {})


def read_metrics(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl as a list; a line cut by a crash mid-write is skipped (only the last can be)."""
    import json

    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# --------------------------------------------------------------------------- distribution
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank)


# ------------------------------------------------------------------------------- building
def build_model(cfg: TrainConfig, dataset: Dataset, device: torch.device) -> tuple[DVBPR, dict | None]:
    """A fresh model, or one initialised from `cfg.init_from` with users and items matched by id
    (new ones keep their fresh parameters). Returns the model and the source checkpoint."""
    arch = cfg.arch if cfg.arch != "auto" else ("cnnf" if device.type == "cuda" else "cnnf-small")
    source = None
    if cfg.init_from:
        source = load_checkpoint(find_checkpoint(cfg.init_from))
        mc = dict(source["model_config"], n_users=dataset.n_users, n_items=dataset.n_items)
    else:
        mc = dict(n_users=dataset.n_users, n_items=dataset.n_items, arch=arch,
                  image_size=cfg.image_size or DEFAULT_IMAGE_SIZE[arch], dim=cfg.dim,
                  cf_dim=cfg.cf_dim, terms=cfg.terms, norm=cfg.norm, theta_init=cfg.theta_init,
                  dropout=cfg.dropout)
    model = DVBPR(ModelConfig(**mc))
    if source is not None:
        _transfer(model, source, dataset)
    return model.to(device), source


def _transfer(model: DVBPR, source: dict, dataset: Dataset) -> None:
    state = source["model"]
    own = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name.startswith("cnn."):
                own[name].copy_(tensor)
        for table, ids_key, idmap in (
            ("theta_users", "user_ids", dataset.users), ("gamma_users", "user_ids", dataset.users),
            ("gamma_items", "item_ids", dataset.items), ("beta_items", "item_ids", dataset.items),
        ):
            key = f"{table}.weight"
            if key not in state or key not in own:
                continue
            old_index = {id_: i for i, id_ in enumerate(source[ids_key])}
            pairs = [(new, old_index[id_]) for new, id_ in enumerate(idmap.ids) if id_ in old_index]
            if pairs:
                new_rows, old_rows = map(torch.tensor, zip(*pairs))
                own[key][new_rows] = state[key][old_rows].to(own[key].dtype)


def make_optimizer(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass per tensor and no temporaries, the same numbers as
    the default implementation and its state dicts load either way (docs/benchmarks.md: 3-10x
    faster optimiser steps on the 2-core CPU, e.g. CNN-F 224 1.9 s -> 0.6 s a step)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def _stretch_cosine(scheduler: Any, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
    """A run resumed with more (or fewer) epochs: the cosine schedule spans the new length, with
    the learning rate it would have at this step had it been planned that way from the start
    (the scheduler's recursive update would otherwise keep the old shape, and stay at 0 once a
    finished schedule is extended)."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        return
    total_steps = max(total_steps, 1)
    if scheduler.T_max == total_steps:
        return
    scheduler.T_max = total_steps
    progress = min(scheduler.last_epoch, total_steps) / total_steps
    for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base_lr - scheduler.eta_min) * (1 + math.cos(math.pi * progress)) / 2
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if cfg.lr_schedule == "plateau":  # stepped once per epoch on validation AUC
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=1)
    return None


# ------------------------------------------------------------------------------- training
class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, checkpoints and stops."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading_main():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    triplets: np.ndarray, images: ImageBatches, cfg: TrainConfig, d: Dist, *,
                    start_step: int, on_step: Callable[[int, float, int], bool],
                    checkpoint: Callable[[int, dict], None] | None = None,
                    first_global_step: int = 0,
                    is_positive: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> float:
    """Steps over this epoch's triplets from `start_step`; returns the mean loss.

    Each global batch of `cfg.batch_size` triplets is split across ranks. The loss is scaled so
    that DDP's gradient averaging reproduces the single-process gradient of the same batch.
    `on_step(step_in_epoch, loss, n_triplets)` returns False to stop early. Every
    `cfg.checkpoint_every` global steps (`first_global_step` is the global index of step 0),
    `checkpoint(step_in_epoch, before)` saves the state reached so far, but only once the
    next step's loss has shown it finite: a diverging run never leaves a broken checkpoint.

    `cfg.in_batch` (needs `is_positive(users, items)`, the sampler's membership test): each
    positive is ranked against every image of the batch that is not one of its user's training
    items, each such pair a BPR triplet: up to 2B - 1 negatives per CNN forward of 2B images
    instead of one, at the cost of a (B, 2B) score matrix.
    """
    core: DVBPR = model.module if hasattr(model, "module") else model
    model.train()
    if cfg.freeze_cnn:  # a frozen CNN keeps its BatchNorm statistics too (and drops no units)
        core.cnn.eval()
    device = images.device
    steps = math.ceil(len(triplets) / cfg.batch_size)
    total, count = 0.0, 0
    for step in range(start_step, steps):
        due = (checkpoint is not None and cfg.checkpoint_every > 0 and step > start_step
               and (first_global_step + step) % cfg.checkpoint_every == 0)
        # The state before this step's forward: its dropout draws and BatchNorm statistics
        # belong to the step that a resume will run again.
        before = {"rng": _rng_state(device), "buffers": {k: b.detach().cpu().clone()
                                                         for k, b in core.named_buffers()}} if due else {}
        batch = triplets[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        local = batch[d.rank::d.world]
        u, i, j = (torch.as_tensor(local[:, c], device=device) for c in range(3))
        candidates = np.concatenate([local[:, 1], local[:, 2]])
        imgs = images(candidates)
        with _autocast(device):
            x_uij = model(u, i, j, imgs, in_batch=cfg.in_batch)
        keep = None
        if cfg.in_batch:  # (B, 2B): the user's own positives are no negatives
            keep = torch.as_tensor(~is_positive(local[:, :1], candidates[None, :]), device=device)
        bpr = bpr_loss(x_uij, keep)
        per_sample = bpr + core.embedding_l2(u, i, j, cfg.l2_theta, cfg.l2_cf)
        cnn_reg = cfg.l2_cnn * core.cnn_l2() if cfg.l2_cnn else 0.0
        loss = (per_sample * d.world + cnn_reg) / len(batch)
        finite = torch.isfinite(loss.detach()).reshape(1).float()
        if d.world > 1:  # all ranks stop together: one left waiting in backward's all-reduce hangs
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite.item()):
            value = loss.item()
            where = value if not math.isfinite(value) else "nan or inf in another process"
            raise TrainingError(f"loss became {where} at step {step} of the epoch; "
                                "the last good checkpoint is kept (try a lower --lr)")
        if due:
            checkpoint(step, before)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            scheduler.step()
        pairs = len(local) if keep is None else int(keep.sum())
        value = float(bpr.detach()) / max(pairs, 1)  # mean -ln sigmoid(x_uij) on this rank
        total += value * pairs
        count += pairs
        if not on_step(step, value, len(batch)):
            break
    return total / max(count, 1)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _set_threads(d: Dist) -> None:
    # torchrun starts one process per rank on the same cores: split them, never oversubscribe.
    # An explicit OMP_NUM_THREADS wins (e.g. 1 on a machine shared with other work).
    if os.environ.get("OMP_NUM_THREADS"):
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(d.world)))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))


class RunLock:
    """One training job per run folder: an exclusive flock held while the process lives (the
    kernel drops it when the process dies, even by SIGKILL)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fh = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise TrainingError(f"run folder {self.path.parent} is in use by another training job")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.fh.close()


def is_locked(run_dir: str | Path) -> bool:
    """True while a training job holds the run folder."""
    return is_file_locked(Path(run_dir) / ".lock")


def resume_config(run_dir: str | Path, data: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The saved config of a run, with `overrides` (e.g. epochs, max_minutes, device) applied;
    its dataset is `data` if given, else found from what the run records (`dvbpr.rundir`)."""
    ckpt_path = Path(run_dir) / LAST
    if not ckpt_path.is_file():
        raise TrainingError(f"nothing to resume: {ckpt_path} does not exist")
    saved = read_json(Path(run_dir) / CONFIG)
    if saved is None:
        saved = load_checkpoint(ckpt_path)["train_config"]
    names = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in saved.items() if k in names}
    saved.update({k: v for k, v in overrides.items() if v is not None})
    saved["data"] = str(find_run_data(run_dir, saved.get("data"), data))
    saved["out"] = str(run_dir)
    return TrainConfig(**saved)


def recorded_config(cfg: TrainConfig, run_dir: Path) -> dict:
    """The config as a run records it (config.json, checkpoints): paths relative to the run
    folder, never absolute, so the folder works wherever it is copied."""
    saved = asdict(cfg)
    saved["data"] = relative_to_run(cfg.data, run_dir)
    saved["out"] = run_dir.name  # a run is always used through its folder; the name says which
    if cfg.init_from:
        saved["init_from"] = relative_to_run(cfg.init_from, run_dir)
    return saved


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          progress_callback: Callable[[float, str], None] | None = None) -> dict:
    """Train (or resume) a run; returns the final status dict. See the module docstring."""
    cfg.validate()
    d = setup_distributed(cfg.device)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and d.world > 1:
        device = torch.device("cuda", d.local_rank)
    _set_threads(d)
    run_dir = Path(cfg.out)
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and any((run_dir / n).exists() for n in (LAST, BEST)):
            raise TrainingError(f"{run_dir} already holds a run: resume it with --resume, or choose another --out")
    # SIGTERM is caught from here on: a stop while the data loads still ends in a checkpoint
    # and state "stopped", not in a killed process.
    with StopRequest() as stop:
        if d.main:
            with RunLock(run_dir):
                return _train(cfg, resume, progress, progress_callback, d, device, run_dir, stop)
        return _train(cfg, resume, progress, progress_callback, d, device, run_dir, stop)


def _train(cfg: TrainConfig, resume: bool, progress: bool, progress_callback, d: Dist,
           device: torch.device, run_dir: Path, stop: StopRequest) -> dict:
    from .evaluate import evaluate_model

    log = RunLog(run_dir, d.main, fresh=not resume)
    show = progress and d.main
    recorded = recorded_config(cfg, run_dir)
    log.update(state="starting", message="loading data", data=recorded["data"], started_at=time.time())
    try:
        resume_ckpt = load_checkpoint(run_dir / LAST) if resume else None
        torch.manual_seed(cfg.seed)
        dataset = load_dataset(cfg.data)
        if resume_ckpt is not None and resume_ckpt["dataset_signature"] != dataset_signature(dataset):
            raise TrainingError(f"the dataset {cfg.data} changed since this run started; "
                                "fine-tune from it with --init-from instead of --resume")
        if resume_ckpt is not None:  # the run's own network, whatever --arch auto or --init-from pick now
            model = DVBPR(ModelConfig(**resume_ckpt["model_config"])).to(device)
        else:
            model, _ = build_model(cfg, dataset, device)
        if d.main:  # rank 0 builds the image cache, the others wait and open it
            store = ImageStore.open(dataset, model.cfg.image_size, progress=show,
                                    progress_callback=progress_callback)
        if d.world > 1:
            dist.barrier()
        if not d.main:
            store = ImageStore.open(dataset, model.cfg.image_size, progress=False)
        images = ImageBatches(store, device)
        if cfg.freeze_cnn:
            model.cnn.requires_grad_(False)
        model = model.to(memory_format=torch.channels_last)
        if resume_ckpt is not None:
            model.load_state_dict(resume_ckpt["model"])
        net: torch.nn.Module = model
        if d.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.lr)
        sampler = TripletSampler(dataset.train, dataset.n_items, cfg.negatives)
        steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        scheduler = _make_scheduler(optimizer, cfg, total_steps)
        start_epoch, start_step, best, stale = 0, 0, -math.inf, 0
        if resume_ckpt is not None:
            ts = resume_ckpt["training_state"]
            optimizer.load_state_dict(ts["optimizer"])
            if scheduler is not None and ts.get("scheduler"):
                scheduler.load_state_dict(ts["scheduler"])
                _stretch_cosine(scheduler, optimizer, total_steps)
            _set_rng_state(ts["rng"], device)
            start_epoch, start_step = resume_ckpt["epoch"], ts["step_in_epoch"]
            best, stale = ts["best"], ts["stale_epochs"]
        if d.main:
            atomic_write_json(run_dir / CONFIG, recorded | {"model": asdict(model.cfg)})
        common = dict(user_ids=dataset.users.ids, item_ids=dataset.items.ids,
                      cold_items=torch.as_tensor(dataset.cold_items),
                      dataset_signature=dataset_signature(dataset), train_config=recorded)

        def save(path: str, epoch: int, step_in_epoch: int, metrics: dict, resumable: bool,
                 before: dict | None = None) -> None:
            if not d.main:
                return
            state = None
            if resumable:
                state = {"optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict() if scheduler is not None else {},
                         "rng": (before or {}).get("rng") or _rng_state(device), "step_in_epoch": step_in_epoch,
                         "best": best, "stale_epochs": stale}
            save_checkpoint(run_dir / path, model, epoch=epoch, step=epoch * steps_per_epoch + step_in_epoch,
                            metrics=metrics, training_state=state,
                            buffers=(before or {}).get("buffers"), **common)

        val_users = _validation_users(dataset, cfg)
        global_step = start_epoch * steps_per_epoch + start_step
        if resume_ckpt is not None and d.main:
            print(f"resuming {run_dir} at epoch {start_epoch + 1}, step {start_step} of {steps_per_epoch}")
            log.metrics({"type": "resume", "epoch": start_epoch, "step": global_step, "time": time.time()})
        clock = {"t0": time.time(), "steps": 0, "triplets": 0, "window_t": time.time(), "window_n": 0}
        deadline = clock["t0"] + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
        bar = tqdm(total=total_steps, initial=global_step, disable=not show, unit="step", desc="train")
        log.update(state="running", message="", epoch=start_epoch, epochs=cfg.epochs, step=global_step,
                   total_steps=total_steps, steps_per_epoch=steps_per_epoch, device=str(device),
                   arch=model.cfg.arch, world_size=d.world, best_val_auc=None if best == -math.inf else best)
        stopped_reason = ""
        last_val: dict = {}
        for epoch in range(start_epoch, cfg.epochs):
            triplets = sampler.epoch(cfg.seed * 1_000_003 + epoch)
            first = start_step if epoch == start_epoch else 0
            position = {"step": first}

            def on_step(step: int, loss: float, n: int) -> bool:
                nonlocal global_step, stopped_reason
                global_step += 1
                position["step"] = step + 1
                clock["triplets"] += n
                clock["window_n"] += n
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
                if global_step % cfg.log_every == 0 or step + 1 == steps_per_epoch:
                    now = time.time()
                    rate = clock["window_n"] / max(now - clock["window_t"], 1e-9)
                    clock["window_t"], clock["window_n"] = now, 0
                    done = global_step - (start_epoch * steps_per_epoch + start_step)
                    eta = (total_steps - global_step) * (now - clock["t0"]) / max(done, 1)
                    log.metrics({"type": "step", "epoch": epoch + 1, "step": global_step, "loss": loss,
                                 "triplets_per_s": rate, "lr": optimizer.param_groups[0]["lr"], "time": now})
                    log.update(epoch=epoch, step=global_step, loss=loss, triplets_per_s=rate, eta_s=eta)
                    if progress_callback:
                        progress_callback(global_step / total_steps, f"epoch {epoch + 1}/{cfg.epochs}")
                want_stop = stop.requested or time.time() > deadline
                if d.world > 1:  # every rank must leave the loop at the same step
                    flag = torch.tensor([float(want_stop)], device=device if device.type == "cuda" else "cpu")
                    dist.all_reduce(flag)
                    want_stop = bool(flag.item())
                if want_stop:
                    stopped_reason = "stop requested" if stop.requested else f"time limit of {cfg.max_minutes} min"
                return not want_stop

            epoch_loss = train_one_epoch(
                net, optimizer, scheduler, triplets, images, cfg, d, start_step=first, on_step=on_step,
                checkpoint=lambda step, before: save(LAST, epoch, step, last_val, resumable=True, before=before),
                first_global_step=epoch * steps_per_epoch, is_positive=sampler.is_positive)
            if stopped_reason:
                save(LAST, epoch, position["step"], last_val, resumable=True)
                break
            last_val = {}
            if d.main:
                phi = embed_items(model, images, dataset.n_items)
                _require_finite(model, phi, f"in epoch {epoch + 1}")
                result = evaluate_model(model, dataset, images, split="val", ks=(20,), users=val_users,
                                        phi=phi)
                last_val = {f"val_{k}": v for k, v in result.metrics.items()}
            val_auc = _broadcast_float(last_val.get("val_auc", float("nan")), d, device)
            improved = math.isnan(val_auc) or val_auc > best  # no validation rows: keep the latest
            if improved:
                best, stale = (best if math.isnan(val_auc) else val_auc), 0
            else:
                stale += 1
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and not math.isnan(val_auc):
                scheduler.step(val_auc)
            record = {"type": "epoch", "epoch": epoch + 1, "step": global_step, "loss": epoch_loss,
                      "time": time.time(), "triplets_per_s": clock["triplets"] / max(time.time() - clock["t0"], 1e-9),
                      **last_val}
            log.metrics(record)
            if improved:
                save(BEST, epoch + 1, 0, record, resumable=False)
            save(LAST, epoch + 1, 0, record, resumable=True)
            log.update(epoch=epoch + 1, step=global_step, loss=epoch_loss, metrics=last_val,
                       best_val_auc=None if best == -math.inf else best)
            if cfg.patience and stale >= cfg.patience:
                stopped_reason = f"early stop: no validation gain in {cfg.patience} epochs"
                break
        bar.close()
        if stopped_reason and not stopped_reason.startswith("early stop"):
            log.update(state="stopped", message=f"{stopped_reason}; resume with --resume", eta_s=None)
        else:
            log.update(state="finished", message=stopped_reason, eta_s=0)
        return read_status(run_dir) if d.main else {}
    except DVBPRError as exc:
        log.update(state="failed", message=str(exc), eta_s=None)
        raise
    except Exception as exc:
        log.update(state="failed", message=f"{type(exc).__name__}: {exc}", eta_s=None)
        raise


def _require_finite(model: DVBPR, phi: torch.Tensor, when: str) -> None:
    """Overflowed weights or item features would make a useless checkpoint: fail instead."""
    if not (bool(torch.isfinite(phi).all()) and all(bool(torch.isfinite(p).all()) for p in model.parameters())):
        raise TrainingError(f"the model's weights or item features became nan or inf {when}; "
                            "the last good checkpoint is kept (try a lower --lr)")


def _broadcast_float(value: float, d: Dist, device: torch.device) -> float:
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return float(t.item())


def _validation_users(dataset: Dataset, cfg: TrainConfig) -> np.ndarray | None:
    """A fixed sample of validation users (all when cfg.val_users is 0)."""
    if not cfg.val_users:
        return None
    users = np.unique(dataset.val[:, 0])
    if len(users) <= cfg.val_users:
        return None
    return np.sort(np.random.default_rng(cfg.seed).choice(users, cfg.val_users, replace=False))
