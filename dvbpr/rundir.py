"""The run folder: its file names, and how a run records and finds the dataset it was trained on.

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

import os
from pathlib import Path, PurePosixPath

from .errors import DataError
from .synth import DEFAULT_DATA_DIR, ensure_default_dataset

STATUS, METRICS, CONFIG = "status.json", "metrics.jsonl", "config.json"
BEST, LAST = "best.pt", "last.pt"

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


def find_run_data(run_dir: str | Path, recorded: str | None, explicit: str | Path | None = None,
                  progress: bool = False) -> Path:
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
    raise DataError(f"cannot find the dataset of run {run_dir} (recorded as {recorded!r}); tried: {tried}. "
                    "Pass the dataset folder with --data DATA (Python: data=...).")


def recorded_data(config: dict) -> str | None:
    """The dataset path a run's config (config.json, status.json or a checkpoint's
    train_config) records."""
    value = config.get("data")
    return str(value) if value else None
