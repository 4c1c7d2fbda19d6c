"""dvbpr.embedmap on a tiny run: an untrained checkpoint over a tiny synthetic catalogue (no training
needed: the map only needs phi). The first UMAP fit in a process compiles numba (~40 s)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dvbpr import embedmap


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from dvbpr.checkpoint import dataset_signature, save_checkpoint
    from dvbpr.data import load_dataset
    from dvbpr.model import DVBPR, ModelConfig
    from dvbpr.synth import SynthConfig, make_dataset

    base = tmp_path_factory.mktemp("embedmap")
    data = make_dataset(
        base / "data", SynthConfig(n_items=120, n_users=40, mean_interactions=6, image_size=48), progress=False
    )
    ds = load_dataset(data)
    torch.manual_seed(0)
    model = DVBPR(
        ModelConfig(
            n_users=ds.n_users, n_items=ds.n_items, arch="cnnf-small", image_size=32, dim=8, cf_dim=4, terms="full"
        )
    )
    run = base / "run"
    save_checkpoint(
        run / "best.pt",
        model,
        train_config={"data": str(data)},
        user_ids=ds.users.ids,
        item_ids=ds.items.ids,
        cold_items=torch.as_tensor(ds.cold_items),
        dataset_signature=dataset_signature(ds),
        epoch=0,
        step=0,
        metrics={},
    )
    return run


def test_compute_map_shape_status_and_cache_reuse(tiny_run):
    assert embedmap.map_status(tiny_run)["state"] == "missing"
    assert embedmap.load_map(tiny_run) is None
    seen = []
    path = embedmap.compute_map(tiny_run, progress_callback=lambda f, m: seen.append(f))
    coords = embedmap.load_map(tiny_run)
    assert coords.shape == (120, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    assert path.name.startswith("umap_") and path.suffix == ".npz"
    assert seen[-1] == 1.0
    status = embedmap.map_status(tiny_run)
    assert status["state"] == "done" and status["fraction"] == 1.0
    # a second call reuses the file and does not refit
    mtime = path.stat().st_mtime_ns
    t0 = time.time()
    assert embedmap.compute_map(tiny_run) == path
    assert path.stat().st_mtime_ns == mtime and time.time() - t0 < 5
    # the background launcher is a no-op once the map exists
    embedmap.start_map_job(tiny_run)
    assert not list((tiny_run / "cache").glob("*.log"))


def test_compute_map_is_deterministic(tiny_run, tmp_path):
    embedmap.compute_map(tiny_run)
    other = tmp_path / "copy"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("umap_*"))
    embedmap.compute_map(other)
    np.testing.assert_array_equal(embedmap.load_map(tiny_run), embedmap.load_map(other))


def test_sampled_fit_places_every_item(tiny_run, tmp_path):
    other = tmp_path / "sampled"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("umap_*"))
    embedmap.compute_map(other, sample=60)
    coords = embedmap.load_map(other)
    assert coords.shape == (120, 2) and np.isfinite(coords).all()


def test_place_is_inside_the_bounding_box(tiny_run):
    embedmap.compute_map(tiny_run)
    coords = embedmap.load_map(tiny_run)
    phi = np.load(next((tiny_run / "cache").glob("phi_*.npy")))
    lo, hi = coords.min(0), coords.max(0)
    rng = np.random.default_rng(0)
    for phi_new in [phi[3], phi[7] + 0.01 * rng.normal(size=phi.shape[1]), rng.normal(size=phi.shape[1])]:
        x, y = embedmap.place(coords, phi, phi_new, k=10)
        assert lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1]
    # an item's own features land near it (its nearest neighbour is itself)
    x, y = embedmap.place(coords, phi, phi[5], k=1)
    assert np.allclose((x, y), coords[5], atol=1e-5)


def test_status_of_a_dead_job_is_failed(tiny_run, tmp_path):
    other = tmp_path / "dead"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("umap_*"))
    key = embedmap.checkpoint_key(other)
    from dvbpr.fsutil import atomic_write_json

    # a pid that cannot exist and no lock held: the job died
    atomic_write_json(
        other / "cache" / f"umap_{key}.progress.json",
        {"state": "running", "fraction": 0.3, "message": "fitting", "pid": 2**22 + 17},
    )
    assert embedmap.map_status(other)["state"] == "failed"
    atomic_write_json(
        other / "cache" / f"umap_{key}.progress.json",
        {"state": "running", "fraction": 0.3, "message": "fitting", "pid": os.getpid()},
    )
    assert embedmap.map_status(other)["state"] == "running"


def test_no_checkpoint(tmp_path):
    assert embedmap.map_status(tmp_path)["state"] == "no-checkpoint"
    assert embedmap.load_map(tmp_path / "missing") is None


def test_cli_help():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "dvbpr.embedmap", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
    )
    assert out.returncode == 0 and "RUN_DIR" in out.stdout
