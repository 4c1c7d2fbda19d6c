"""Time to the embedding map: `python -m dvbpr.embedmap RUN_DIR`, the background job the app
starts, from process start (imports and numba compilation included, as the app sees it) to the
map on disk, with the item features phi already cached in the run (as after the first
recommendation page).

* the default catalogue: phi of the shipped model `models/default` when it exists, else of an
  untrained CNN-F-small over the default images (3,600 items, fitted whole);
* a 350k-item catalogue: synthetic phi (500 Gaussian clusters in 100-d), fitted on the app's
  default sample of 20,000 items, the rest placed with `transform` (as the app does).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO_ROOT, Row, ensure_repo_on_path

ensure_repo_on_path()


def make_run(run_dir: Path, phi: np.ndarray) -> Path:
    """A run folder with an (untrained) checkpoint of the right catalogue size and phi cached
    where `dvbpr.recommender` caches it, so the map job reads phi and fits."""
    import torch

    from dvbpr import embedmap
    from dvbpr.checkpoint import save_checkpoint
    from dvbpr.model import DVBPR, ModelConfig
    from dvbpr.rundir import BEST, CACHE

    shutil.rmtree(run_dir, ignore_errors=True)
    n = len(phi)
    model = DVBPR(ModelConfig(n_users=10, n_items=n, arch="cnnf-small", image_size=64, dim=phi.shape[1]))
    save_checkpoint(
        run_dir / BEST,
        model,
        train_config={"data": "-"},
        user_ids=[f"u{u}" for u in range(10)],
        item_ids=[f"i{i}" for i in range(n)],
        cold_items=torch.zeros(n, dtype=torch.bool),
        dataset_signature="-",
        epoch=0,
        step=0,
        metrics={},
    )
    key = embedmap.checkpoint_key(run_dir)
    (run_dir / CACHE).mkdir(parents=True, exist_ok=True)
    np.save(run_dir / CACHE / f"phi_{Path(BEST).stem}_{key}_synthetic.npy", phi.astype(np.float32))
    return run_dir


def time_map_job(run_dir: Path, sample: int | None = None) -> float:
    """Wall seconds of `python -m dvbpr.embedmap RUN_DIR` (what the app runs in the background)."""
    cmd = [sys.executable, "-m", "dvbpr.embedmap", str(run_dir)] + (["--sample", str(sample)] if sample else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    from dvbpr import embedmap

    coords = embedmap.load_map(run_dir)
    if coords is None or not np.isfinite(coords).all():
        raise RuntimeError(f"no valid map in {run_dir} after the job")
    return seconds


def default_phi(ctx) -> tuple[np.ndarray, str]:
    from dvbpr.rundir import has_checkpoint

    default_run = REPO_ROOT / "models" / "default"
    if ctx.sizes.umap_default and has_checkpoint(default_run):
        from dvbpr.recommender import Recommender

        return Recommender.from_run(default_run, device="cpu").item_embeddings(), "shipped model"
    import torch

    from benchmarks.training import training_data
    from dvbpr.data import load_dataset
    from dvbpr.features import ImageBatches, embed_items
    from dvbpr.images import ImageStore
    from dvbpr.model import DVBPR, ModelConfig

    dataset = load_dataset(training_data(ctx))
    torch.manual_seed(0)
    model = DVBPR(
        ModelConfig(
            n_users=dataset.n_users, n_items=dataset.n_items, arch="cnnf-small", image_size=ctx.sizes.small_size
        )
    ).eval()
    store = ImageStore.open(dataset, ctx.sizes.small_size, progress=False)
    phi = embed_items(model, ImageBatches(store, torch.device("cpu")), dataset.n_items).numpy()
    return phi, "untrained CNN-F-small"


def clustered_phi(n: int, dim: int = 100, clusters: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    return centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)


def section(ctx) -> list[Row]:
    from benchmarks.serving import size_label
    from dvbpr.embedmap import DEFAULT_SAMPLE

    rows = []
    phi, source = default_phi(ctx)
    if not ctx.sizes.umap_default:  # smoke: a 10-item map takes the SVD path, no UMAP
        phi, source = phi[:10], "10 items (smoke)"
    ctx.log(f"embedding map: default catalogue ({len(phi):,} items, {source})")
    seconds = time_map_job(make_run(ctx.work / "umap_default", phi))
    rows.append(
        Row(
            "umap_default_s",
            seconds,
            "s",
            note=f"{len(phi):,} items, phi of the {source}; includes process start and numba compilation",
        )
    )
    n, sample = ctx.sizes.umap_items, ctx.sizes.umap_sample or DEFAULT_SAMPLE
    ctx.log(f"embedding map: {n:,} synthetic items, fitted on {min(n, sample):,}")
    seconds = time_map_job(make_run(ctx.work / "umap_large", clustered_phi(n)), sample)
    note = f"{n:,} items: fit on {min(n, sample):,}, transform the rest"
    if n < 350_000 or sample != DEFAULT_SAMPLE:
        note = f"REDUCED: {note}"
    rows.append(Row(f"umap_{size_label(n)}_s", seconds, "s", note=note))
    return rows
