"""Training: BPR over (user, positive, negative) triplets with the CNN in the loop.

`train` reads in the order things happen: build the model, optimiser and schedule; on resume,
restore them from `last.pt`; then for each epoch `train_one_epoch` (which yields after every
step, and before a step whose state a mid-epoch checkpoint keeps), validation, the epoch's
checkpoints and log lines, and the stop decisions. One process or many (torchrun:
`dvbpr.distributed`); rank 0 alone writes the run folder (`dvbpr.rundir`): `last.pt`
(resumable), `best.pt` (best validation AUC, or the last epoch with `--select last`),
`config.json`, `metrics.jsonl` and `status.json`, and TensorBoard event files beside them
(`dvbpr.tblog`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import (
    CheckpointWriter,
    checkpoint_fields,
    dataset_signature,
    load_checkpoint,
    rng_state,
    set_rng_state,
    transfer_weights,
)
from .config import TrainConfig, recorded_config
from .data import Dataset, load_dataset
from .diagnostics import colour_coherence, colour_note
from .distributed import (
    Dist,
    StopRequest,
    all_finite,
    any_rank,
    barrier,
    broadcast_float,
    gather_rows,
    process_group,
    set_threads_per_rank,
)
from .errors import TrainingError
from .evaluate import evaluate_model, sample_users
from .features import ImageBatches, autocast, embed_items, resolve_device
from .fsutil import atomic_write_json
from .images import ImageStore
from .model import DVBPR, ModelConfig, bpr_loss, random_flip_shift
from .optim import make_optimizer, make_scheduler, stretch_cosine
from .rundir import BEST, CONFIG, LAST, RunLock, RunLog, find_checkpoint, has_checkpoint, is_locked, read_status
from .sampling import TripletSampler
from .tblog import TensorBoardLog


# ------------------------------------------------------------------------------- building
def build_model(cfg: TrainConfig, dataset: Dataset, device: torch.device) -> tuple[DVBPR, dict | None]:
    """A fresh model, or one initialised from `cfg.init_from` with users and items matched by id
    (new ones keep their fresh parameters). Returns the model and the source checkpoint."""
    if not cfg.init_from:
        return DVBPR(cfg.model_config(dataset.n_users, dataset.n_items, device)).to(device), None
    source = load_checkpoint(find_checkpoint(cfg.init_from))
    sizes = dict(n_users=dataset.n_users, n_items=dataset.n_items, crop_head=cfg.crop_agreement > 0)
    model = DVBPR(ModelConfig(**source["model_config"] | sizes))
    transfer_weights(model, source, dataset.users.ids, dataset.items.ids)
    return model.to(device), source


# ------------------------------------------------------------------------------- one epoch
@dataclass
class StepDone:
    """An optimiser step taken: its index in the epoch, the mean -ln sigmoid(x_uij) over the
    (u, i, j) `pairs` of this rank, and the batch's triplets on all ranks together."""

    step: int
    loss: float
    pairs: int
    triplets: int


@dataclass
class CheckpointDue:
    """A mid-epoch checkpoint is due before `step`: its loss came out finite and nothing is
    updated yet; `rng` and `buffers` (BatchNorm statistics) are as they were before its forward
    pass, which a resume runs again."""

    step: int
    rng: dict
    buffers: dict[str, torch.Tensor]


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    triplets: np.ndarray,
    images: ImageBatches,
    cfg: TrainConfig,
    d: Dist,
    *,
    start_step: int = 0,
    first_global_step: int = 0,
    is_positive: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Iterator[StepDone | CheckpointDue]:
    """Steps over this epoch's triplets from `start_step`, yielding a StepDone after each (leave
    the loop to stop early) and, every `cfg.checkpoint_every` global steps (`first_global_step`
    is the global index of step 0), a CheckpointDue once that step's loss has shown the state
    reached so far finite: a diverging run never leaves a broken checkpoint.

    A global batch of `cfg.batch_size` triplets is split across ranks, its loss scaled so that
    DDP's gradient averaging gives the single-process gradient. `cfg.in_batch` (needs the
    sampler's `is_positive`): the batch's sampled negatives are shared, each positive ranked against
    every j of the batch that is not one of its user's training items, each pair a BPR triplet:
    up to B uniformly drawn negatives per CNN forward instead of one, for a (B, B) score matrix.
    (The batch's positives are not used as negatives: they follow item popularity, and would
    teach the model to push popular items down.)"""
    core: DVBPR = model.module if hasattr(model, "module") else model
    model.train()
    if cfg.freeze_cnn:  # a frozen CNN keeps its BatchNorm statistics too (and drops no units)
        core.cnn.eval()
    device = images.device
    gather = gather_rows(d)
    for step in range(start_step, math.ceil(len(triplets) / cfg.batch_size)):
        due = cfg.checkpoint_every > 0 and step > start_step and (first_global_step + step) % cfg.checkpoint_every == 0
        if due:  # the state before this step's dropout draws and BatchNorm updates
            before = CheckpointDue(
                step, rng_state(device), {k: b.detach().cpu().clone() for k, b in core.named_buffers()}
            )
        batch = triplets[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        local = batch[d.rank :: d.world]
        u, i, j = (torch.as_tensor(local[:, c], device=device) for c in range(3))
        imgs = images(np.concatenate([local[:, 1], local[:, 2]]))
        if cfg.augment:
            imgs = random_flip_shift(imgs)
        with autocast(device):
            x_uij = model(u, i, j, imgs, in_batch=cfg.in_batch)
        keep = None
        if cfg.in_batch:  # (B, B): a shared j that is one of u's positives is no negative
            keep = torch.as_tensor(~is_positive(local[:, :1], local[None, :, 2]), device=device)
        bpr = bpr_loss(x_uij, keep)
        per_sample = bpr + core.embedding_l2(u, i, j, cfg.l2_theta, cfg.l2_cf)
        cnn_reg = cfg.l2_cnn * core.cnn_l2() if cfg.l2_cnn else 0.0
        loss = (per_sample * d.world + cnn_reg) / len(batch)
        if cfg.crop_agreement and not cfg.freeze_cnn:
            # Half the positives: the texture signal at a fraction of a step's cost. As many on every
            # process (the last batch may split unevenly), whose crops are each other's negatives.
            n_crops = max(2, len(batch) // d.world // 2)
            with autocast(device):
                loss = loss + cfg.crop_agreement * core.crop_agreement_loss(imgs[:n_crops], gather=gather)
        if not all_finite(loss, d):  # all ranks stop together: one left waiting in backward hangs
            value = loss.item()
            where = value if not math.isfinite(value) else "nan or inf in another process"
            raise TrainingError(
                f"loss became {where} at step {step} of the epoch; the last good checkpoint is kept (try a lower --lr)"
            )
        if due:
            yield before
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            scheduler.step()
        pairs = len(local) if keep is None else int(keep.sum())
        yield StepDone(step, float(bpr.detach()) / max(pairs, 1), pairs, len(batch))


# -------------------------------------------------------------------------------- progress
class Meter:
    """Throughput and ETA of the steps taken in this process, and the epoch's mean loss."""

    def __init__(self, first_step: int, total_steps: int):
        self.start = self.window_start = time.time()
        self.first_step, self.total_steps = first_step, total_steps
        self.triplets = self.window_triplets = 0
        self.loss_sum, self.loss_count = 0.0, 0

    def new_epoch(self) -> None:
        self.loss_sum, self.loss_count = 0.0, 0

    def update(self, done: StepDone) -> None:
        self.triplets += done.triplets
        self.window_triplets += done.triplets
        self.loss_sum += done.loss * done.pairs
        self.loss_count += done.pairs

    @property
    def epoch_loss(self) -> float:
        return self.loss_sum / max(self.loss_count, 1)

    def step_record(self, epoch: int, step: int, loss: float, lr: float) -> dict:
        """A metrics.jsonl step line; its throughput is over the steps since the previous one."""
        now = time.time()
        rate = self.window_triplets / max(now - self.window_start, 1e-9)
        self.window_start, self.window_triplets = now, 0
        return dict(type="step", epoch=epoch + 1, step=step, loss=loss, triplets_per_s=rate, lr=lr, time=now)

    def epoch_record(self, epoch: int, step: int, val_metrics: dict) -> dict:
        """A metrics.jsonl epoch line: the epoch's mean loss, the throughput since the start."""
        now = time.time()
        rate = self.triplets / max(now - self.start, 1e-9)
        return dict(
            type="epoch", epoch=epoch + 1, step=step, loss=self.epoch_loss, time=now, triplets_per_s=rate, **val_metrics
        )

    def eta(self, step: int) -> float:
        return (self.total_steps - step) * (time.time() - self.start) / max(step - self.first_step, 1)


# ---------------------------------------------------------------------------------- train
def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    progress_callback: Callable[[float, str], None] | None = None,
) -> dict:
    """Train (or resume) a run; returns the final status dict (empty on ranks other than 0).
    `progress_callback(fraction, message)` follows the image cache, then every log interval."""
    cfg.validate()
    with process_group(cfg.device) as d:
        return _train(d, cfg, resume, progress, progress_callback)


def _train(
    d: Dist, cfg: TrainConfig, resume: bool, progress: bool, progress_callback: Callable[[float, str], None] | None
) -> dict:
    """`train` in this process's place among the run's processes."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and d.world > 1:
        device = torch.device("cuda", d.local_rank)
    set_threads_per_rank(d)
    run_dir = Path(cfg.out)
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if is_locked(run_dir):  # busy comes first: "resume it" would only lead here (RunLock settles races)
            raise RunLock.busy(run_dir)
        if not resume and has_checkpoint(run_dir):
            raise TrainingError(f"{run_dir} already holds a run: resume it with --resume, or choose another --out")
    show = progress and d.is_main
    # SIGTERM is caught from here on: a stop while the data loads still ends in a checkpoint and
    # state "stopped", not in a killed process. An exception leaving the block: state "failed".
    with (
        StopRequest() as stop,
        RunLock(run_dir) if d.is_main else nullcontext(),
        RunLog(run_dir, d.is_main, fresh=not resume) as log,
        TensorBoardLog(run_dir, d.is_main, fresh=not resume) as tb,
    ):
        recorded = recorded_config(cfg, run_dir)
        log.update(state="starting", message="loading data", data=recorded["data"], started_at=time.time())

        # build: data, model (the run's own network on resume), images, optimiser, schedule
        resume_ckpt = load_checkpoint(run_dir / LAST) if resume else None
        torch.manual_seed(cfg.seed)
        dataset = load_dataset(cfg.data)
        if resume_ckpt is not None and resume_ckpt["dataset_signature"] != dataset_signature(dataset):
            raise TrainingError(
                f"the dataset {cfg.data} changed since this run started; "
                "fine-tune from it with --init-from instead of --resume"
            )
        if resume_ckpt is not None:
            model = DVBPR(ModelConfig(**resume_ckpt["model_config"])).to(device)
        else:
            model, _ = build_model(cfg, dataset, device)
        if d.is_main:  # rank 0 builds the image cache, the others wait and open it
            store = ImageStore.open(dataset, model.cfg.image_size, progress=show, progress_callback=progress_callback)
        barrier(d)
        if not d.is_main:
            store = ImageStore.open(dataset, model.cfg.image_size, progress=False)
        images = ImageBatches(store, device)
        if d.is_main and resume_ckpt is None and model.cfg.colour_stream:
            note = colour_note(colour_coherence(store.array, dataset.train, seed=cfg.seed), colour_stream=True)
            if note:
                print(f"note: {note}")
                log.update(note=note)  # the app's live view shows it
        if cfg.freeze_cnn:
            model.cnn.requires_grad_(False)
        model = model.to(memory_format=torch.channels_last)
        if resume_ckpt is not None:
            model.load_state_dict(resume_ckpt["model"])
        net: torch.nn.Module = model
        if d.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.lr)
        sampler = TripletSampler(dataset.train, dataset.n_items, cfg.negatives)
        steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        scheduler = make_scheduler(optimizer, cfg, total_steps)

        # resume: optimiser, schedule (stretched to the new length), RNG, position, early stop
        start_epoch, start_step, best, stale = 0, 0, -math.inf, 0
        if resume_ckpt is not None:
            state = resume_ckpt["training_state"]
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
                stretch_cosine(scheduler, optimizer, total_steps)
            set_rng_state(state["rng"], device)
            start_epoch, start_step = resume_ckpt["epoch"], state["step_in_epoch"]
            best, stale = state["best"], state["stale_epochs"]
        if d.is_main:
            atomic_write_json(run_dir / CONFIG, recorded | {"model": asdict(model.cfg)})
        fields = checkpoint_fields(dataset, recorded)
        checkpoints = CheckpointWriter(run_dir, model, optimizer, scheduler, steps_per_epoch, device, d.is_main, fields)
        val_users = sample_users(dataset, "val", cfg.val_users, cfg.seed)
        global_step = start_epoch * steps_per_epoch + start_step
        if resume_ckpt is not None and d.is_main:
            print(f"resuming {run_dir} at epoch {start_epoch + 1}, step {start_step} of {steps_per_epoch}")
            log.rewind(global_step)
            log.metrics({"type": "resume", "epoch": start_epoch, "step": global_step, "time": time.time()})

        meter = Meter(global_step, total_steps)
        deadline = meter.start + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
        bar = tqdm(total=total_steps, initial=global_step, disable=not show, unit="step", desc="train")
        log.update(
            state="running",
            message="",
            epoch=start_epoch,
            epochs=cfg.epochs,
            step=global_step,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            device=str(device),
            arch=model.cfg.arch,
            world_size=d.world,
            best_val_auc=None if best == -math.inf else best,
        )
        stopped, val_metrics = "", {}
        for epoch in range(start_epoch, cfg.epochs):
            step_in_epoch = start_step if epoch == start_epoch else 0
            meter.new_epoch()
            steps = train_one_epoch(
                net,
                optimizer,
                scheduler,
                sampler.epoch(cfg.seed * 1_000_003 + epoch),
                images,
                cfg,
                d,
                start_step=step_in_epoch,
                first_global_step=epoch * steps_per_epoch,
                is_positive=sampler.is_positive,
            )
            for event in steps:
                if isinstance(event, CheckpointDue):  # mid-epoch: the state before this step
                    checkpoints.save(LAST, epoch, event.step, val_metrics, (best, stale), before=event)
                    continue
                global_step, step_in_epoch = global_step + 1, event.step + 1
                meter.update(event)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{event.loss:.4f}")
                if global_step % cfg.log_every == 0 or step_in_epoch == steps_per_epoch:
                    record = meter.step_record(epoch, global_step, event.loss, optimizer.param_groups[0]["lr"])
                    log.metrics(record)
                    tb.step(record)
                    log.update(
                        epoch=epoch,
                        eta_s=meter.eta(global_step),
                        **{k: record[k] for k in ("step", "loss", "triplets_per_s")},
                    )
                    if progress_callback:
                        progress_callback(global_step / total_steps, f"epoch {epoch + 1}/{cfg.epochs}")
                if any_rank(stop.requested or time.time() > deadline, d, device):  # all ranks at one step
                    stopped = "stop requested" if stop.requested else f"time limit of {cfg.max_minutes} min"
                    break
            if stopped:
                checkpoints.save(LAST, epoch, step_in_epoch, val_metrics, (best, stale))
                break

            # validate on rank 0; every rank takes the same decisions from its AUC
            val_metrics = {}
            if d.is_main:
                phi = embed_items(model, images, dataset.n_items)
                _require_finite(model, phi, f"in epoch {epoch + 1}")
                result = evaluate_model(model, dataset, phi=phi, split="val", ks=(20,), users=val_users)
                val_metrics = {f"val_{k}": v for k, v in result.metrics.items()}
            val_auc = broadcast_float(val_metrics.get("val_auc", math.nan), d, device)
            improved = math.isnan(val_auc) or val_auc > best  # no validation rows: keep the latest
            if improved:
                best, stale = (best if math.isnan(val_auc) else val_auc), 0
            else:
                stale += 1
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and not math.isnan(val_auc):
                scheduler.step(val_auc)

            # the epoch's log line and checkpoints, then the stop decision
            record = meter.epoch_record(epoch, global_step, val_metrics)
            log.metrics(record)
            tb.epoch(record)
            if improved or cfg.select == "last":
                checkpoints.save(BEST, epoch + 1, 0, record)
            checkpoints.save(LAST, epoch + 1, 0, record, (best, stale))
            log.update(
                epoch=epoch + 1,
                step=global_step,
                loss=meter.epoch_loss,
                metrics=val_metrics,
                best_val_auc=None if best == -math.inf else best,
            )
            if cfg.patience and stale >= cfg.patience:
                stopped = f"early stop: no validation gain in {cfg.patience} epochs"
                break
        bar.close()
        if not stop.requested:  # the projector takes a while: a stop request wants out now
            tb.projector(run_dir, dataset, store, device, global_step)
        if stopped and not stopped.startswith("early stop"):
            log.update(state="stopped", message=f"{stopped}; resume with --resume", eta_s=None)
        else:
            log.update(state="finished", message=stopped, eta_s=0)
        return read_status(run_dir) if d.is_main else {}


def _require_finite(model: DVBPR, phi: torch.Tensor, when: str) -> None:
    """Overflowed weights or item features would make a useless checkpoint: fail instead."""
    if not (bool(torch.isfinite(phi).all()) and all(bool(torch.isfinite(p).all()) for p in model.parameters())):
        raise TrainingError(
            f"the model's weights or item features became nan or inf {when}; "
            "the last good checkpoint is kept (try a lower --lr)"
        )
