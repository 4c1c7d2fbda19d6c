"""The training configuration: `TrainConfig`, its presets, and how a run records and resumes it.

Each field carries its help text (and its choices, where it has a fixed set) in its metadata:
`python -m dvbpr train`'s flags and the app's Train page take their help and defaults from
here, so a default is stated once.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint
from .errors import TrainingError
from .fsutil import read_json
from .model import ARCHS, DEFAULT_IMAGE_SIZE, NORMS, TERMS, THETA_INITS, ModelConfig
from .rundir import CONFIG, LAST, find_run_data, relative_to_run
from .sampling import NEGATIVE_POOLS

LR_SCHEDULES = ("none", "cosine", "plateau")
SELECTIONS = ("val-auc", "last")


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    metadata = {"help": help} | ({"choices": choices} if choices else {})
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every training choice; saved in config.json and inside each checkpoint."""

    data: str = field(metadata={"help": "dataset folder"})
    out: str = field(metadata={"help": "run folder to write (checkpoints, metrics, status)"})
    arch: str = _option("auto", "CNN: auto picks cnnf on CUDA and cnnf-small on the CPU", ("auto", *ARCHS))
    image_size: int = _option(
        0, "input resolution in pixels; 0: the architecture's own (224 for cnnf/alexnet, 64 for cnnf-small)"
    )
    dim: int = _option(100, "visual embedding size K")
    cf_dim: int = _option(100, "gamma size")
    terms: str = _option("full", "score terms: visual (original code), visual+cf (tutorial), full", TERMS)
    epochs: int = _option(10, "epochs; one epoch visits every training interaction")
    batch_size: int = _option(128, "triplets per step")
    lr: float = _option(1e-3, "Adam learning rate")
    l2_cnn: float = _option(1e-3, "L2 on CNN weights, biases excluded (as the original)")
    l2_theta: float = _option(1.0, "L2 on the batch's theta rows (as the original)")
    l2_cf: float = _option(1e-3, "L2 on the batch's gamma and beta rows")
    negatives: str = _option(
        "warm",
        "negative pool: warm items only (better on cold items, see docs/training.md) or all items (the paper)",
        NEGATIVE_POOLS,
    )
    in_batch: bool = _option(
        True,
        "share the batch's sampled negatives: each positive is ranked against every negative image "
        "of its batch (--no-in-batch: one sampled negative per positive, the paper)",
    )
    norm: str = _option("batch", "normalisation in the CNN: batch or none (the paper's CNN-F)", NORMS)
    theta_init: str = _option(
        "normal", "initial theta_u: normal N(0, 0.01) or uniform U(0, 0.01) (the original code)", THETA_INITS
    )
    colour_stream: bool = _option(
        True,
        "phi = shape CNN on hue-randomised images + a learned colour histogram, so that colour "
        "cannot take the whole embedding (--no-colour-stream: one CNN, the paper; on real emoji, "
        "where colour is no taste, it ranked better with a narrower phi, and train notes such data "
        "from how alike in colour each user's items are: docs/training.md)",
    )
    texture: bool = _option(
        False,
        "texture head: the last conv features averaged over the image, projected and added to phi "
        "(cnnf, cnnf-small; see docs/training.md for what it gains and costs)",
    )
    crop_agreement: float = _option(
        0.0,
        "weight of a self-supervised texture loss: two random half-side crops of each of half the "
        "batch's positive images, each with its own hue, must find each other among the batch's "
        "through the shape CNN's averaged conv features (0 = off; cnnf, cnnf-small; docs/training.md)",
    )
    augment: bool = _option(
        False,
        "light augmentation of the training images: a random left-right flip and a shift of up to "
        "1/8 of the side (docs/training.md)",
    )
    dropout: float = _option(0.5, "dropout on the CNN's hidden fc layers")
    lr_schedule: str = _option("none", "learning-rate schedule (plateau follows validation AUC)", LR_SCHEDULES)
    select: str = _option(
        "val-auc",
        "the epoch best.pt keeps: the best validation AUC, or the last (a schedule such as cosine "
        "ends where it is meant to, and validation AUC can be flat long before; docs/training.md)",
        SELECTIONS,
    )
    patience: int = _option(0, "early stop after N epochs without validation gain (0 = off)")
    device: str = _option("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    seed: int = _option(0, "random seed")
    max_minutes: float = _option(0.0, "stop (resumably) after this many minutes (0 = no limit)")
    log_every: int = _option(20, "steps between metrics.jsonl lines")
    checkpoint_every: int = _option(0, "steps between mid-epoch checkpoints (0 = end of each epoch only)")
    val_users: int = _option(0, "validate on a fixed sample of this many users (0 = all)")
    init_from: str = _option("", "fine-tune from another run folder: users and items matched by id")
    freeze_cnn: bool = _option(False, "train only the embeddings (with --init-from)")

    def model_config(self, n_users: int, n_items: int, device: torch.device) -> ModelConfig:
        """The network this config asks for (a fresh run; `--arch auto`: cnnf on CUDA)."""
        arch = self.arch if self.arch != "auto" else ("cnnf" if device.type == "cuda" else "cnnf-small")
        return ModelConfig(
            n_users=n_users,
            n_items=n_items,
            arch=arch,
            image_size=self.image_size or DEFAULT_IMAGE_SIZE[arch],
            dim=self.dim,
            cf_dim=self.cf_dim,
            terms=self.terms,
            norm=self.norm,
            theta_init=self.theta_init,
            colour_stream=self.colour_stream,
            texture=self.texture,
            crop_head=self.crop_agreement > 0,
            dropout=self.dropout,
        )

    def validate(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise TrainingError(f"{f.name.replace('_', ' ')} must be one of {', '.join(choices)}")
        checks = [
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 2, "batch size must be at least 2"),
            (self.lr > 0, "learning rate must be positive"),
            (self.dim >= 1 and self.cf_dim >= 1, "dimensions must be positive"),
            (min(self.l2_cnn, self.l2_theta, self.l2_cf) >= 0, "L2 coefficients must be >= 0"),
            (self.crop_agreement >= 0, "crop agreement weight must be >= 0"),
            (self.log_every >= 1, "log interval must be at least 1 step"),  # used as a modulus
            (
                min(self.checkpoint_every, self.patience, self.val_users, self.max_minutes) >= 0,
                "checkpoint interval, patience, validation users and time limit must be >= 0",
            ),
            (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                "device must be auto, cpu or cuda",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)


PRESETS: dict[str, dict[str, Any]] = {
    # The original TensorFlow code's choices (docs/training.md compares them with the defaults).
    "paper": dict(
        norm="none",
        theta_init="uniform",
        in_batch=False,
        colour_stream=False,
        dropout=0.5,
        l2_theta=1.0,
        l2_cnn=1e-3,
        negatives="all",
        lr=1e-4,
        batch_size=128,
    ),
}


def option_default(name: str) -> Any:
    """The default of a TrainConfig field (`data` and `out` have none: None)."""
    default = TrainConfig.__dataclass_fields__[name].default
    return None if default is MISSING else default


def option_help(name: str) -> str:
    """A TrainConfig field's help text, with its default: what `dvbpr train --help` shows."""
    text = TrainConfig.__dataclass_fields__[name].metadata["help"]
    default = option_default(name)
    if default is None:
        return text
    shown = ("on" if default else "off") if isinstance(default, bool) else default
    return f"{text} (default: {shown})"


def option_flag(name: str) -> str:
    """The command-line flag of a TrainConfig field: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def cli_args(cfg: TrainConfig) -> list[str]:
    """The `dvbpr train` arguments that reproduce `cfg` (fields at their default left out)."""
    args = ["--data", cfg.data, "--out", cfg.out]
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name in ("data", "out") or value == option_default(f.name):
            continue
        flag = option_flag(f.name)
        args += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return args


def recorded_config(cfg: TrainConfig, run_dir: Path) -> dict:
    """The config as a run records it (config.json, checkpoints): paths relative to the run
    folder, never absolute, so the folder works wherever it is copied."""
    saved = asdict(cfg)
    saved["data"] = relative_to_run(cfg.data, run_dir)
    saved["out"] = run_dir.name  # a run is always used through its folder; the name says which
    if cfg.init_from:
        saved["init_from"] = relative_to_run(cfg.init_from, run_dir)
    return saved


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
