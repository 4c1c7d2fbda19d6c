"""The run folder in one place: its file names, the status and metrics a run writes, the lock
held by its training job, the run's state and listing, and how a run records and finds the
dataset it was trained on (docs/architecture.md shows the layout).

A run folder must keep working wherever it is copied, so it never records an absolute path:
the dataset is recorded relative to the run folder (plus its name), and found again, in this
order, through

  1. an explicit dataset folder (`--data`, `Recommender.from_run(run, data=...)`);
  2. the recorded path taken relative to the run folder (a run moved together with its data);
  3. the dataset's name under the data root (`DVBPR_DATA_ROOT`, default `data/` of the
     repository);
  4. the recorded path as given (relative to the working folder, or absolute in old runs).

The dataset found is then checked against the checkpoint's signature by the caller.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import CheckpointError, DataError, DiskFullError, DVBPRError, TrainingError
from .fsutil import append_line, atomic_write_json, atomic_write_text, is_file_locked, read_json, rewrite_json_in_place
from .synth import DEFAULT_DATA_DIR, ensure_default_dataset

STATUS, METRICS, CONFIG = "status.json", "metrics.jsonl", "config.json"
BEST, LAST = "best.pt", "last.pt"
LOG, LOCK, CACHE = "train.log", ".lock", "cache"
TENSORBOARD = "tensorboard"  # TensorBoard event files (dvbpr.tblog)

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The folder that holds `dvbpr/` (the repository in a checkout or an editable install)."""


def data_root() -> Path:
    """Folder of dataset folders: `DVBPR_DATA_ROOT` (read on every call), default `data/`;
    a relative value is taken from the repository root, so it means the same from any folder."""
    path = Path(os.environ.get("DVBPR_DATA_ROOT") or "data").expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def is_dataset_dir(path: Path) -> bool:
    return (path / "interactions.csv").is_file()


def relative_to_run(path: str | Path, run_dir: str | Path) -> str:
    """How a run records a path (its dataset, its --init-from run): relative to the run folder,
    POSIX style, so a run and its data moved together, or a clone holding both, still match."""
    rel = os.path.relpath(Path(path).resolve(), Path(run_dir).resolve())
    return PurePosixPath(*Path(rel).parts).as_posix()


def data_candidates(run_dir: str | Path, recorded: str | None) -> list[Path]:
    """Where a run's dataset may be, in the order they are tried (see the module docstring)."""
    if not recorded:
        return []
    recorded_path = Path(recorded)
    candidates = []
    if not recorded_path.is_absolute():
        candidates.append(Path(run_dir) / recorded_path)
    if recorded_path.name not in ("", ".", ".."):
        candidates.append(data_root() / recorded_path.name)
    candidates.append(recorded_path)
    unique: list[Path] = []
    for path in candidates:
        if path.resolve() not in unique:
            unique.append(path.resolve())
    return unique


def locate_run_data(run_dir: str | Path, recorded: str | None) -> Path | None:
    """The first candidate folder that holds a dataset, or None (nothing is generated)."""
    return next((p for p in data_candidates(run_dir, recorded) if is_dataset_dir(p)), None)


def find_run_data(
    run_dir: str | Path, recorded: str | None, explicit: str | Path | None = None, progress: bool = False
) -> Path:
    """The dataset folder of a run: `explicit` if given, else the first candidate that holds a
    dataset. The default dataset, generated on demand, counts as found when it is a candidate."""
    if explicit is not None:
        path = Path(explicit)
        if path.resolve() == DEFAULT_DATA_DIR:
            return ensure_default_dataset(progress=progress)
        return path
    found = locate_run_data(run_dir, recorded)
    if found is not None:
        return found
    candidates = data_candidates(run_dir, recorded)
    if DEFAULT_DATA_DIR in candidates:
        return ensure_default_dataset(progress=progress)
    tried = "; ".join(str(p) for p in candidates) or "nothing (the run records no dataset)"
    raise DataError(
        f"cannot find the dataset of run {run_dir} (recorded as {recorded!r}); tried: {tried}. "
        "Pass the dataset folder with --data DATA (Python: data=...)."
    )


def recorded_data(config: dict) -> str | None:
    """The dataset path a run's config (config.json, status.json or a checkpoint's
    train_config) records."""
    value = config.get("data")
    return str(value) if value else None


# ------------------------------------------------------------------------------ checkpoints
def checkpoint_path(run_dir: str | Path) -> Path | None:
    """The checkpoint a run is used through: best.pt, else last.pt; None before the first."""
    for name in (BEST, LAST):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def has_checkpoint(run_dir: str | Path) -> bool:
    return checkpoint_path(run_dir) is not None


def find_checkpoint(run_dir: str | Path) -> Path:
    """`checkpoint_path`, or CheckpointError naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    path = checkpoint_path(run_dir)
    if path is None:
        raise CheckpointError(f"run folder {run_dir} has no checkpoint ({BEST} or {LAST}) yet")
    return path


# ---------------------------------------------------------------------- status and metrics
def _metrics_line(record: dict) -> str:
    """One metrics.jsonl line, as appended and as rewritten by a resume."""
    return json.dumps(record, sort_keys=True)


class RunLog:
    """status.json and metrics.jsonl of a run; a no-op on ranks other than 0. A fresh run (not
    a resume) starts both anew, so a run folder left by a failed start holds no stale lines.
    As a context manager, an exception leaving the block is recorded as state "failed", even on
    a disk too full for another atomic write (`failed`)."""

    def __init__(self, run_dir: Path, active: bool, fresh: bool = False):
        self.run_dir, self.active = run_dir, active
        if active and fresh:
            (run_dir / METRICS).unlink(missing_ok=True)
        self.status: dict[str, Any] = read_status(run_dir) if active and not fresh else {}

    def update(self, **fields: Any) -> None:
        if not self.active:
            return
        self.status.update(fields, pid=os.getpid(), updated_at=time.time())
        atomic_write_json(self.run_dir / STATUS, self.status)

    def metrics(self, record: dict) -> None:
        if not self.active:
            return
        append_line(self.run_dir / METRICS, _metrics_line(record))

    def rewind(self, step: int) -> None:
        """Drop the metrics.jsonl lines past `step`: a resume replays the steps an interrupted
        process logged after its last checkpoint, and the curves must not run back on themselves
        (TensorBoard purges the same steps). The file is rewritten atomically."""
        if not self.active:
            return
        records = read_metrics(self.run_dir)
        kept = [r for r in records if r.get("step", 0) <= step]
        if len(kept) < len(records):
            atomic_write_text(self.run_dir / METRICS, "".join(_metrics_line(r) + "\n" for r in kept))

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, Exception):
            self.failed(exc)

    def failed(self, exc: BaseException) -> None:
        """State "failed" with the error's message (its type too when it is not one of ours).
        On a full disk the failed write's temporary file is gone by now, which may make room; if
        not, status.json is rewritten in place, and if even that fails the old one stays (valid)
        and the reason goes to stderr (train.log for a background job): the error that ended
        the run is the one raised, not this one."""
        message = str(exc) if isinstance(exc, DVBPRError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, DiskFullError):
            message += " (resume with --resume: the last checkpoint is kept)"
        try:
            try:
                self.update(state="failed", message=message, eta_s=None)
            except DiskFullError:
                rewrite_json_in_place(self.run_dir / STATUS, self.status)
        except OSError as record_exc:
            print(f"error: cannot record the failure in {self.run_dir / STATUS}: {record_exc}", file=sys.stderr)


def read_status(run_dir: str | Path) -> dict:
    """status.json ({} before a run writes one). A file that is not a JSON object (damaged by
    something else: the writers replace it whole) reads as state "failed", saying so."""
    path = Path(run_dir) / STATUS
    try:
        status = read_json(path, {})
    except (OSError, ValueError) as exc:
        status = f"{type(exc).__name__}: {exc}"
    if not isinstance(status, dict):
        return {"state": "failed", "message": f"{path} is unreadable ({str(status)[:200]})"}
    return status


def read_metrics(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl as a list; a line cut by a crash mid-write is skipped (only the last can be)."""
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


# ------------------------------------------------------------------------------------ lock
class RunLock:
    """One training job per run folder: an exclusive flock held while the process lives (the
    kernel drops it when the process dies, even by SIGKILL)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.fh: Any = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "w")  # held until __exit__
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise self.busy(self.path.parent) from None
        return self

    @staticmethod
    def busy(run_dir: Path) -> TrainingError:
        return TrainingError(f"run folder {run_dir} is in use by another training job")

    def __exit__(self, *exc: Any) -> None:
        self.fh.close()


def is_locked(run_dir: str | Path) -> bool:
    """True while a training job holds the run folder."""
    return is_file_locked(Path(run_dir) / LOCK)


# ------------------------------------------------------------------------- state, listing
def run_state(run_dir: str | Path) -> str:
    """new, starting, running, finished, stopped, failed, or "interrupted" for a run that says
    running but whose process is gone (killed): resume it."""
    state = read_status(run_dir).get("state", "new")
    if state in ("running", "starting") and not is_locked(run_dir):
        return "interrupted"
    return state


@dataclass
class RunSummary:
    name: str
    path: str
    state: str
    data: str
    arch: str
    epoch: int
    epochs: int
    best_val_auc: float | None
    updated_at: float | None
    has_checkpoint: bool

    def as_dict(self) -> dict:
        return asdict(self)


def list_runs(root: str | Path) -> list[RunSummary]:
    """Every run folder directly under `root` (newest first)."""
    root = Path(root)
    runs = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        status = read_status(path)
        has_ckpt = has_checkpoint(path)
        if not status and not has_ckpt:
            continue
        runs.append(
            RunSummary(
                name=path.name,
                path=str(path),
                state=run_state(path),
                data=str(status.get("data", "")),
                arch=str(status.get("arch", "")),
                epoch=int(status.get("epoch", 0) or 0),
                epochs=int(status.get("epochs", 0) or 0),
                best_val_auc=status.get("best_val_auc"),
                updated_at=status.get("updated_at"),
                has_checkpoint=has_ckpt,
            )
        )
    return sorted(runs, key=lambda r: r.updated_at or 0, reverse=True)
