"""Where datasets and models live, listing them, and the stamps that key the app's caches.
No Streamlit here.

Environment variables (read on every call, so tests can change them):
  DVBPR_DATA_ROOT      folder of dataset folders            (default "data")
  DVBPR_MODELS_ROOT    folder of run folders                 (default "models")
  DVBPR_DEFAULT_MODEL  run name used when none is chosen     (default "default")
Relative paths are taken from the repository root, so the app works from any working folder.
A run's checkpoint (`checkpoint_path`, `has_checkpoint`) is found by `dvbpr.rundir`, re-exported here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dvbpr.errors import DVBPRError
from dvbpr.fsutil import read_json, safe_name
from dvbpr.rundir import CONFIG, METRICS, REPO_ROOT, STATUS, data_root, locate_run_data, recorded_data
from dvbpr.rundir import checkpoint_path as checkpoint_path  # best.pt, else last.pt
from dvbpr.rundir import has_checkpoint as has_checkpoint

DEFAULT_DATASET = "default"


def models_root() -> Path:
    path = Path(os.environ.get("DVBPR_MODELS_ROOT") or "models").expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def default_model() -> str:
    return os.environ.get("DVBPR_DEFAULT_MODEL") or "default"


def display(path: Path) -> str:
    """A path as a person reads it, never an absolute path of this machine: relative to the
    repository when inside it, else its last component after an ellipsis."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return f"…/{Path(path).name}"


def valid_name(name: object) -> str | None:
    """`name` if it is a safe single path component, else None."""
    try:
        return safe_name(name) if isinstance(name, str) else None
    except DVBPRError:
        return None


def dataset_dir(name: str) -> Path:
    return data_root() / safe_name(name, "dataset name")


def run_dir(name: str) -> Path:
    return models_root() / safe_name(name, "run name")


def list_datasets() -> list[str]:
    """Folders under the data root holding interactions.csv, sorted (hidden ones skipped)."""
    root = data_root()
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "interactions.csv").is_file()
    )


def list_models() -> list[str]:
    """Run folders under the models root that hold a checkpoint, sorted."""
    root = models_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and has_checkpoint(p))


def run_data_path(run: Path) -> Path | None:
    """The dataset folder a run was trained on (config.json, else status.json), found as
    `dvbpr.rundir` describes; None when it is nowhere to be found."""
    recorded = recorded_data(read_json(run / CONFIG, None) or {}) or recorded_data(read_json(run / STATUS, None) or {})
    try:
        return locate_run_data(run, recorded)
    except OSError:
        return None


def run_dataset_name(run: Path) -> str | None:
    """The name of the run's dataset when it is a folder directly under the data root."""
    path = run_data_path(run)
    if path is None:
        return None
    try:
        if path.resolve().parent == data_root().resolve() and (path / "interactions.csv").is_file():
            return path.name
    except OSError:
        return None
    return None


# ------------------------------------------------------------------------------ cache stamps
# Cheap fingerprints (sizes and modification times) of the files a cached value is computed
# from: part of the cache key, so an entry is recomputed when its files change.
def file_stamp(path: str | os.PathLike) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file; None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def dataset_stamp(path: str | Path) -> tuple:
    """Changes whenever the dataset's CSV files change."""
    return tuple(file_stamp(Path(path) / name) for name in ("interactions.csv", "items.csv"))


def metrics_stamp(run: str | Path) -> tuple:
    """Changes whenever the run's metrics.jsonl changes; () when there is none."""
    return file_stamp(Path(run) / METRICS) or ()


def checkpoint_stamp(checkpoint: str | Path) -> int:
    """The checkpoint file's mtime in ns (a checkpoint is replaced whole, by a rename)."""
    return os.stat(checkpoint).st_mtime_ns


def age(timestamp: float | None) -> str:
    """'3 min ago' style age of a unix time."""
    if not timestamp:
        return "-"
    seconds = max(0.0, time.time() - float(timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"
