"""2-D maps of the learned visual embeddings phi(X_i), computed in the background, cached on disk.

`compute_map(run_dir)` fits UMAP (2 components, cosine metric, fixed `random_state`, so the same
checkpoint always gives the same map) on the item features of a run and writes
`RUN_DIR/cache/umap_<sha16>.npz` (`coords`: float32 (n_items, 2) in the order of the dataset's
items), where `sha16` is the first 16 hex digits of the checkpoint's sha256: a new checkpoint
gets a new map. Catalogues larger than `sample` items are fitted on a seeded random sample of
`sample` items and the remaining items are placed with the fitted model's `transform`.

umap-learn compiles its kernels with numba the first time it runs in a process (~40 s), so the
app runs `python -m dvbpr.embedmap RUN_DIR` as a detached background job (`start_map_job`) and
polls `map_status`. The job reports into `RUN_DIR/cache/umap_<sha16>.progress.json`
(`state`: running / done / failed, `fraction`, `message`, `pid`, `updated_at`) and holds an
exclusive flock on `umap_<sha16>.lock` while it runs (the kernel drops it when the process dies,
even by SIGKILL), so one job per checkpoint runs at a time and a dead job is recognised.

No fitted UMAP model is stored (that would be a pickle). A NEW image is placed on an existing
map by `place`: its k nearest catalogue items in phi space (cosine similarity) and the average of
their 2-D coordinates, weighted by similarity. The point always lies inside the convex hull of
those neighbours, so it is near the looks it resembles.

This module imports umap lazily and never imports streamlit.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import DVBPRError, JobError
from .fsutil import atomic_write_bytes, atomic_write_json, file_hash, is_file_locked, read_json
from .rundir import BEST, CACHE, LAST, find_checkpoint

DEFAULT_SAMPLE = 20000
SEED = 42
N_NEIGHBORS = 15
MIN_DIST = 0.1

ProgressCallback = Callable[[float, str], None]

_hash_memo: dict[tuple[str, int, int], str] = {}


# ----------------------------------------------------------------------------------- files
def checkpoint_key(run_dir: str | Path) -> str:
    """First 16 hex digits of the sha256 of the run's checkpoint (best.pt, else last.pt).

    Memoised on (path, size, mtime), so polling does not re-hash a large checkpoint.
    Raises CheckpointError when the run has no checkpoint.
    """
    path = find_checkpoint(run_dir)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _hash_memo:
        _hash_memo[memo] = file_hash(path)[:16]
    return _hash_memo[memo]


def _paths(run_dir: str | Path, key: str | None = None) -> dict[str, Path]:
    key = key or checkpoint_key(run_dir)
    cache = Path(run_dir) / CACHE
    return {
        "map": cache / f"umap_{key}.npz",
        "progress": cache / f"umap_{key}.progress.json",
        "lock": cache / f"umap_{key}.lock",
        "log": cache / f"umap_{key}.log",
        "key": Path(key),
    }


def map_path(run_dir: str | Path) -> Path:
    """Where the map of the run's current checkpoint is (or will be) stored."""
    return _paths(run_dir)["map"]


def load_map(run_dir: str | Path) -> np.ndarray | None:
    """coords (n_items, 2) float32 of the run's current checkpoint, or None if not computed yet
    (or the run has no checkpoint, or the file is unreadable)."""
    try:
        path = map_path(run_dir)
    except DVBPRError:
        return None
    return _read_coords(path)


def _read_coords(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            coords = np.asarray(npz["coords"], dtype=np.float32)
    except (OSError, KeyError, ValueError):
        return None
    if coords.ndim != 2 or coords.shape[1] != 2:
        return None
    return coords


def _pid_alive(pid: object) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        pid = int(pid)  # type: ignore[arg-type]
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def map_status(run_dir: str | Path) -> dict:
    """The map job of the run's current checkpoint: {"state", "fraction", "message", "pid", ...}.

    state is "done" (the map exists), "running", "failed" (with the reason in "message"),
    "missing" (never started) or "no-checkpoint" (the run has nothing to map yet).
    """
    try:
        paths = _paths(run_dir)
    except DVBPRError as exc:
        return {"state": "no-checkpoint", "fraction": 0.0, "message": str(exc), "pid": None}
    if _read_coords(paths["map"]) is not None:
        return {"state": "done", "fraction": 1.0, "message": "map ready", "pid": None, "path": str(paths["map"])}
    status = read_json(paths["progress"], None)
    if not isinstance(status, dict):
        return {"state": "missing", "fraction": 0.0, "message": "not computed yet", "pid": None}
    status = dict(status)
    if status.get("state") == "running" and not is_file_locked(paths["lock"]):
        if not _pid_alive(status.get("pid")):
            tail = _log_tail(paths["log"])
            status.update(
                state="failed",
                message="the map job's process ended before the map was done (killed, or out of memory)"
                + (f"; its last output: {tail}" if tail else ""),
            )
        # else: just launched, not holding its lock yet
    status.setdefault("fraction", 0.0)
    status.setdefault("message", "")
    return status


def _log_tail(path: Path, lines: int = 3) -> str:
    """The last lines the latest job wrote (each job's output follows its "$ command" line)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    if "\n$ " in text:
        text = text.rsplit("\n$ ", 1)[1].partition("\n")[2]
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


# ------------------------------------------------------------------------------ computing
def _item_features(run_dir: Path, data: str | Path | None) -> np.ndarray:
    """phi of every item: the Recommender's cache of this checkpoint when there is one (named
    phi_<stem>_<checkpoint hash>_<images hash>.npy; the app loads the Recommender, and so
    refreshes it, before it starts a map), else computed through the Recommender."""
    stem = find_checkpoint(run_dir).stem
    cached = sorted((run_dir / CACHE).glob(f"phi_{stem}_{checkpoint_key(run_dir)}_*.npy"))
    if len(cached) == 1:
        try:
            phi = np.load(cached[0], allow_pickle=False)
            if phi.ndim == 2 and len(phi):
                return phi.astype(np.float32, copy=False)
        except (OSError, ValueError):
            pass
    from .recommender import Recommender  # imports torch: only when phi is not cached yet

    rec = Recommender.from_run(run_dir, data=data, device="cpu", top_lists=False)
    return rec.item_embeddings().astype(np.float32)


def _fit_umap(phi: np.ndarray, sample: int, seed: int, report: ProgressCallback) -> np.ndarray:
    n = len(phi)
    if n < 2:
        return np.zeros((n, 2), dtype=np.float32)
    if n <= 10:  # too few points for a neighbour graph: the 2 main axes of the unit vectors
        x = _unit(phi)
        x = x - x.mean(0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        coords = np.zeros((n, 2))
        k = min(2, u.shape[1])
        coords[:, :k] = u[:, :k] * s[:k]
        return coords.astype(np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap  # lazily: heavy import, numba compilation on first fit

    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, sample, replace=False)) if n > sample else np.arange(n)
    model = umap.UMAP(
        n_components=2,
        metric="cosine",
        n_neighbors=min(N_NEIGHBORS, len(fit_idx) - 1),
        min_dist=MIN_DIST,
        random_state=seed,
        low_memory=True,
    )
    expected = 45.0 + len(fit_idx) / 400.0  # seconds: numba compilation dominates small maps
    done = threading.Event()

    def heartbeat() -> None:  # an estimate: UMAP reports no progress of its own
        t0 = time.time()
        while not done.wait(2.0):
            elapsed = time.time() - t0
            report(
                0.10 + 0.75 * (1 - math.exp(-elapsed / expected)) * (0.6 if n > sample else 1.0),
                f"fitting UMAP on {len(fit_idx):,} items ({elapsed:.0f} s; the first map "
                "compiles numba, about a minute)",
            )

    report(0.10, f"fitting UMAP on {len(fit_idx):,} items")
    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = model.fit_transform(phi[fit_idx])
    finally:
        done.set()
        beat.join()
    coords = np.zeros((n, 2), dtype=np.float32)
    coords[fit_idx] = fitted
    rest = np.setdiff1d(np.arange(n), fit_idx)
    chunk = 10000
    for start in range(0, len(rest), chunk):
        part = rest[start : start + chunk]
        report(0.55 + 0.4 * start / len(rest), f"placing the other {len(rest):,} items ({start:,} done)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coords[part] = model.transform(phi[part])
    return coords


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def compute_map(
    run_dir: str | Path,
    data: str | Path | None = None,
    sample: int = DEFAULT_SAMPLE,
    progress_callback: ProgressCallback | None = None,
    seed: int = SEED,
) -> Path:
    """Compute (or reuse) the UMAP map of the run's current checkpoint; returns the .npz path.

    Fits on all items when n_items <= `sample`, else on a seeded random sample of `sample` items
    and `transform`s the rest. Reports progress to `progress_callback(fraction, message)` and to
    the progress JSON. JobError if another process is computing this map right now.
    """
    run_dir = Path(run_dir)
    if sample < 2:
        raise DVBPRError(f"sample must be at least 2, got {sample}")
    paths = _paths(run_dir)
    if _read_coords(paths["map"]) is not None:
        if progress_callback:
            progress_callback(1.0, "map ready (cached)")
        return paths["map"]
    paths["lock"].parent.mkdir(parents=True, exist_ok=True)
    lock = open(paths["lock"], "w")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"a map job for {run_dir} is already running") from None
        if _read_coords(paths["map"]) is not None:  # finished by another job meanwhile
            return paths["map"]
        t0 = time.time()

        def report(fraction: float, message: str, state: str = "running") -> None:
            atomic_write_json(
                paths["progress"],
                {
                    "state": state,
                    "fraction": round(float(fraction), 4),
                    "message": message,
                    "pid": os.getpid(),
                    "started_at": t0,
                    "updated_at": time.time(),
                },
            )
            if progress_callback:
                progress_callback(float(fraction), message)

        try:
            report(0.02, "loading item features")
            phi = _item_features(run_dir, data)
            coords = _fit_umap(phi, sample, seed, report)
            if not np.isfinite(coords).all():
                raise DVBPRError("UMAP produced non-finite coordinates")
            buffer = io.BytesIO()
            np.savez(
                buffer,
                coords=coords.astype(np.float32),
                n_fit=min(len(phi), sample),
                seed=seed,
                checkpoint_sha16=str(paths["key"]),
            )
            atomic_write_bytes(paths["map"], buffer.getvalue())
            for old in paths["map"].parent.glob("umap_*"):  # maps of older checkpoints
                if paths["key"].name not in old.name:
                    old.unlink(missing_ok=True)
            report(1.0, f"map of {len(coords):,} items ready in {time.time() - t0:.0f} s", "done")
        except BaseException as exc:
            message = str(exc) if isinstance(exc, DVBPRError) else f"{type(exc).__name__}: {exc}"
            report(0.0, message, "failed")
            raise
        return paths["map"]
    finally:
        lock.close()


# ------------------------------------------------------------------------------ background
def start_map_job(run_dir: str | Path, data: str | Path | None = None) -> None:
    """Launch `python -m dvbpr.embedmap RUN_DIR [--data DATA]` detached, unless the map of the
    current checkpoint exists or a job computing it is alive. Output goes to cache/umap_<sha16>.log."""
    run_dir = Path(run_dir).resolve()
    paths = _paths(run_dir)
    status = map_status(run_dir)
    if status["state"] == "done" or (
        status["state"] == "running" and (is_file_locked(paths["lock"]) or _pid_alive(status.get("pid")))
    ):
        return
    paths["progress"].parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dvbpr.embedmap", str(run_dir)]
    if data is not None:
        cmd += ["--data", str(Path(data).resolve())]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(paths["log"], "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
        )
    atomic_write_json(
        paths["progress"],
        {
            "state": "running",
            "fraction": 0.0,
            "message": "starting",
            "pid": proc.pid,
            "started_at": time.time(),
            "updated_at": time.time(),
        },
    )


def place(coords: np.ndarray, phi_all: np.ndarray, phi_new: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Where a new item with features `phi_new` (K,) goes on a map: the similarity-weighted mean
    of the 2-D coordinates of its k nearest catalogue items by cosine similarity in phi space."""
    coords = np.asarray(coords, dtype=np.float64)
    phi_all = np.asarray(phi_all, dtype=np.float64)
    phi_new = np.asarray(phi_new, dtype=np.float64).reshape(-1)
    if len(coords) != len(phi_all) or len(coords) == 0:
        raise DVBPRError(
            f"coords ({len(coords)}) and phi_all ({len(phi_all)}) must have the same, non-zero number of items"
        )
    if phi_all.shape[1] != phi_new.shape[0]:
        raise DVBPRError(f"phi_new has {phi_new.shape[0]} features, the catalogue {phi_all.shape[1]}")
    sims = _unit(phi_all) @ (phi_new / max(np.linalg.norm(phi_new), 1e-12))
    k = max(1, min(k, len(sims)))
    top = np.argpartition(-sims, k - 1)[:k]
    weights = np.clip(sims[top], 0.0, None) + 1e-6  # dissimilar neighbours count (almost) nothing
    x, y = (weights[:, None] * coords[top]).sum(0) / weights.sum()
    return float(x), float(y)


# ------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dvbpr.embedmap",
        description="Compute the 2-D UMAP map of a run's visual item embeddings and cache it in "
        "RUN_DIR/cache/umap_<checkpoint-sha16>.npz (the app runs this in the background).",
    )
    parser.add_argument("run_dir", help=f"run folder holding {BEST} or {LAST} (e.g. models/default)")
    parser.add_argument(
        "--data",
        default=None,
        help="dataset folder (default: the one the run was trained on); only read "
        "when the item features are not cached yet",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE,
        help=f"fit UMAP on at most this many items, transform the rest (default {DEFAULT_SAMPLE})",
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"UMAP random_state (default {SEED})")
    args = parser.parse_args(argv)
    try:
        path = compute_map(
            args.run_dir,
            data=args.data,
            sample=args.sample,
            seed=args.seed,
            progress_callback=lambda f, m: print(f"{100 * f:5.1f}%  {m}", flush=True),
        )
    except DVBPRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"map written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
