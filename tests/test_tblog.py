"""TensorBoard event files beside metrics.jsonl (dvbpr.tblog): read back with TensorBoard's own
reader, appended sensibly on resume, and optional: training goes on, with one warning, when
tensorboard is missing or a write fails."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvbpr.config import TrainConfig
from dvbpr.recommender import Recommender
from dvbpr.rundir import TENSORBOARD, read_metrics
from dvbpr.tblog import THUMBNAIL, TensorBoardLog, projector_items, thumbnails
from dvbpr.train import train

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / TENSORBOARD))
    acc.Reload()
    return acc


def steps_and_values(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_a_run_writes_scalars_and_the_projector(tiny_run: Path, tiny_data: Path) -> None:
    acc = events(tiny_run)
    records = read_metrics(tiny_run)
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/triplets_per_s", "epoch/loss", "epoch/triplets_per_s"} <= tags
    val_keys = {k for k in epochs[0] if k.startswith("val_") and k not in ("val_users", "val_cold_users")}
    finite = {k for k in val_keys if all(math.isfinite(r[k]) for r in epochs)}
    assert {f"val/{k.removeprefix('val_')}" for k in finite} <= tags and "val/recall@20" in tags
    assert not any("users" in t for t in tags)
    # the same numbers as metrics.jsonl, at the same global steps (float32 in the event files)
    assert steps_and_values(acc, "train/loss") == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in steps]
    assert steps_and_values(acc, "val/auc") == [(r["step"], pytest.approx(r["val_auc"], rel=1e-6)) for r in epochs]
    assert steps_and_values(acc, "train/lr")[0][1] == pytest.approx(steps[0]["lr"])

    # the projector: phi of the served checkpoint, item ids and categories, a thumbnail sprite
    folder = tiny_run / TENSORBOARD
    config = (folder / "projector_config.pbtxt").read_text()
    last = epochs[-1]["step"]
    sub = f"{last:05d}/phi"
    assert f'metadata_path: "{sub}/metadata.tsv"' in config and f'image_path: "{sub}/sprite.png"' in config
    rec = Recommender.from_run(tiny_run, device="cpu", top_lists=False)
    lines = (folder / sub / "metadata.tsv").read_text().splitlines()
    assert lines[0] == "item_id\tcategory"
    assert lines[1:] == [f"{i}\t{c}" for i, c in zip(rec.items(), rec.dataset.item_categories)]
    tensors = np.loadtxt(folder / sub / "tensors.tsv", delimiter="\t")
    np.testing.assert_allclose(tensors, rec.item_embeddings(), rtol=1e-4, atol=1e-5)
    side = math.ceil(math.sqrt(rec.dataset.n_items)) * THUMBNAIL
    assert Image.open(folder / sub / "sprite.png").size == (side, side)


def test_resume_appends_without_doubled_steps(tiny_data: Path, tiny_train_kwargs: dict, tmp_path: Path) -> None:
    cfg = dict(tiny_train_kwargs, epochs=2)
    out = tmp_path / "run"
    train(TrainConfig(data=str(tiny_data), out=str(out), **cfg), progress=False)
    train(TrainConfig(data=str(tiny_data), out=str(out), **dict(cfg, epochs=3)), resume=True, progress=False)
    acc = events(out)
    epochs = [r for r in read_metrics(out) if r["type"] == "epoch"]
    assert [s for s, _ in steps_and_values(acc, "val/auc")] == [r["step"] for r in epochs] == [10, 20, 30]
    assert len(list((out / TENSORBOARD).glob("events.out.tfevents.*"))) == 2


def test_resume_purges_what_the_interrupted_process_logged_after_its_checkpoint(tmp_path: Path) -> None:
    with TensorBoardLog(tmp_path, active=True, fresh=True) as tb:  # logged up to step 30, then killed
        for step in range(5, 31, 5):
            tb.step({"step": step, "loss": 1.0})
    with TensorBoardLog(tmp_path, active=True) as tb:  # resumed from the checkpoint at step 20
        for step in (25, 30, 35):
            tb.step({"step": step, "loss": 2.0})
    assert steps_and_values(events(tmp_path), "train/loss") == [
        (5, 1.0),
        (10, 1.0),
        (15, 1.0),
        (20, 1.0),
        (25, 2.0),
        (30, 2.0),
        (35, 2.0),
    ]
    with TensorBoardLog(tmp_path, active=True, fresh=True) as tb:  # a fresh run starts anew
        tb.step({"step": 5, "loss": 3.0})
    assert steps_and_values(events(tmp_path), "train/loss") == [(5, 3.0)]


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    with TensorBoardLog(tmp_path, active=False, fresh=True) as tb:
        tb.step({"step": 1, "loss": 1.0})
        tb.epoch({"step": 1, "loss": 1.0, "val_auc": 0.5})
    assert not (tmp_path / TENSORBOARD).exists()


@pytest.mark.parametrize("failure", ["import", "write"])
def test_training_goes_on_with_one_warning_when_tensorboard_fails(
    failure: str, tiny_data: Path, tiny_train_kwargs: dict, tmp_path: Path, monkeypatch, recwarn
) -> None:
    if failure == "import":
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as without tensorboard
    else:
        from torch.utils.tensorboard import SummaryWriter

        def broken(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    out = tmp_path / "run"
    status = train(TrainConfig(data=str(tiny_data), out=str(out), **dict(tiny_train_kwargs, epochs=2)), progress=False)
    assert status["state"] == "finished" and (out / "best.pt").is_file()
    assert len([r for r in read_metrics(out) if r["type"] == "epoch"]) == 2  # metrics.jsonl unaffected
    warned = [str(w.message) for w in recwarn if "TensorBoard logging is off" in str(w.message)]
    assert len(warned) == 1, warned
    assert ("torch.utils.tensorboard" if failure == "import" else "disk full") in warned[0]
    assert not list((out / TENSORBOARD).glob("*/phi"))  # nothing more after the warning


def test_projector_sample_and_thumbnails() -> None:
    assert np.array_equal(projector_items(48), np.arange(48))
    sample = projector_items(20_000, limit=500)
    assert len(np.unique(sample)) == 500 and np.all(np.diff(sample) > 0) and sample.max() < 20_000
    assert np.array_equal(sample, projector_items(20_000, limit=500))  # the same items in every run
    pixels = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    pixels[1] = 255
    pixels[2, :32] = 255  # top half white: the thumbnail keeps the halves
    thumbs = thumbnails(pixels)
    assert thumbs.shape == (3, 3, THUMBNAIL, THUMBNAIL)
    assert float(thumbs[0].max()) == 0 and float(thumbs[1].min()) == 1
    assert float(thumbs[2, :, : THUMBNAIL // 2].min()) == 1 and float(thumbs[2, :, THUMBNAIL // 2 :].max()) == 0
