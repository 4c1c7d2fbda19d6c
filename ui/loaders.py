"""Cached loaders. Resources (the Recommender, rankings, datasets) with st.cache_resource keyed by
(run folder, checkpoint mtime, dataset folder); small tables with st.cache_data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from dvbpr.errors import DVBPRError

from . import paths, state
from .errors import Problem


def dataset_stamp(path: str | Path) -> tuple:
    """Changes whenever the dataset's CSV files change (cache key)."""
    stamp = []
    for name in ("interactions.csv", "items.csv"):
        try:
            st_ = os.stat(Path(path) / name)
            stamp.append((st_.st_size, st_.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


# ------------------------------------------------------------------------------- datasets
def require_dataset(name: str | None = None) -> Path:
    name = name or state.active_data()
    path = paths.data_root() / name
    if not (path / "interactions.csv").is_file():
        raise Problem(f"No dataset in {paths.display(path)}.",
                      page="data", hint="Import one on the Data page, or pick another dataset in the sidebar.")
    return path


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=6)
def _dataset(path: str, stamp: tuple):
    from dvbpr.data import load_dataset

    return load_dataset(path)


def dataset(path: str | Path):
    return _dataset(str(path), dataset_stamp(path))


@st.cache_data(show_spinner=False, max_entries=32)
def _dataset_tables(path: str, stamp: tuple) -> dict[str, Any]:
    ds = _dataset(path, stamp)
    info = ds.info()
    per_user = np.bincount(ds.train[:, 0], minlength=ds.n_users) \
        + np.bincount(ds.val[:, 0], minlength=ds.n_users) + np.bincount(ds.test[:, 0], minlength=ds.n_users)
    return {"info": info, "per_user": per_user, "popularity": ds.item_popularity.copy(),
            "warnings": list(ds.warnings)}


def dataset_tables(path: str | Path) -> dict[str, Any]:
    return _dataset_tables(str(path), dataset_stamp(path))


# ---------------------------------------------------------------------------------- models
def require_run(name: str | None = None) -> tuple[Path, Path]:
    """(run folder, checkpoint) of a model, or a Problem saying what to do."""
    from dvbpr.jobs import job_log, run_state

    name = name or state.active_model()
    run = paths.models_root() / name
    if not run.is_dir():
        raise Problem(f"No model in {paths.display(run)}: train one on the Train page.",
                      page="train", hint="Or pick another model in the sidebar.")
    ckpt = paths.checkpoint_path(run)
    if ckpt is None:
        run_st = run_state(run)
        if run_st in ("running", "starting"):
            raise Problem(f"The run {name} is still training and has no checkpoint yet.",
                          page="train", hint="Follow it on the Train page; it is usable after its first epoch.")
        if run_st == "failed":
            from dvbpr.train import read_status

            reason = read_status(run).get("message") or job_log(run, 3) or "no message"
            raise Problem(f"The run {name} failed before writing a checkpoint: {reason}",
                          page="train", hint="See its log on the Train page, then start a new run.")
        raise Problem(f"No model in {paths.display(run)}: it has no checkpoint (best.pt or last.pt).",
                      page="train", hint="Train one on the Train page, or pick another model in the sidebar.")
    return run, ckpt


def _key() -> tuple[str, int, str]:
    run, ckpt = require_run()
    data = require_dataset()
    return str(run), ckpt.stat().st_mtime_ns, str(data)


@st.cache_resource(show_spinner="Loading the model and its item features (first time only)…",
                   max_entries=3)
def _recommender(run: str, ckpt_mtime: int, data: str):
    from dvbpr.recommender import Recommender

    return Recommender.from_run(run, data=data, device="auto")


def recommender():
    """The Recommender of the active model on the active dataset."""
    run, mtime, data = _key()
    trained_on = paths.run_data_path(Path(run))
    try:
        return _recommender(run, mtime, data)
    except DVBPRError as exc:
        if trained_on is not None and trained_on.resolve() != Path(data).resolve():
            raise Problem(f"The model {Path(run).name} was trained on {paths.display(trained_on)} and "
                          f"cannot be used with the dataset {Path(data).name}: {exc}",
                          page="train", hint="Pick its dataset in the sidebar, or fine-tune it on this "
                          "dataset on the Train page.") from None
        raise


def recommender_key() -> tuple[str, int, str]:
    return _key()


@st.cache_resource(show_spinner="Ranking every user's test items…", max_entries=3)
def _ranking(run: str, ckpt_mtime: int, data: str, split: str):
    from dvbpr.evaluate import evaluate_model
    from dvbpr.train import ImageBatches

    rec = _recommender(run, ckpt_mtime, data)
    return evaluate_model(rec.model, rec.dataset, ImageBatches(rec.store, rec.device), split=split,
                          ks=(20, 100), phi=rec.phi)


def ranking(split: str = "test"):
    """RankingResult of the active model over `split` (metrics and per-user arrays), cached."""
    recommender()  # raises a clear Problem first when the model cannot be loaded
    return _ranking(*_key(), split)


@st.cache_data(show_spinner="Diagnosing the item embedding…", max_entries=8)
def _embedding_report(run: str, ckpt_mtime: int, data: str, stamp: tuple) -> dict:
    from dvbpr.diagnostics import embedding_report as report

    return report(_recommender(run, ckpt_mtime, data))


def embedding_report() -> dict:
    """dvbpr.diagnostics.embedding_report of the active model on the active dataset, cached."""
    recommender()  # raises a clear Problem first when the model cannot be loaded
    run, mtime, data = _key()
    return _embedding_report(run, mtime, data, dataset_stamp(data))


@st.cache_resource(show_spinner=False,
                   max_entries=4)
def _baselines(data: str, stamp: tuple, split: str):
    from dvbpr.evaluate import evaluate_baselines

    result = evaluate_baselines(_dataset(data, stamp), split=split, ks=(20, 100))
    _baselines_done.add((data, stamp, split))
    return result


_baselines_done: set[tuple] = set()  # keys _baselines has computed (its cache may have dropped some)


def baselines(split: str = "test"):
    data = require_dataset()
    return _baselines(str(data), dataset_stamp(data), split)


def baselines_ready(split: str = "test") -> bool:
    """Whether baselines(split) of the active dataset was computed already (then it returns at
    once, unless its cache dropped it since)."""
    data = require_dataset()
    return (str(data), dataset_stamp(data), split) in _baselines_done


@st.cache_data(show_spinner=False, max_entries=64)
def _metrics(run: str, stamp: tuple) -> list[dict]:
    from dvbpr.train import read_metrics

    return read_metrics(run)


def metrics_stamp(run: str | Path) -> tuple:
    """Changes whenever the run's metrics.jsonl changes (cache key); () when there is none."""
    try:
        st_ = os.stat(Path(run) / "metrics.jsonl")
    except OSError:
        return ()
    return (st_.st_size, st_.st_mtime_ns)


def metrics(run: str | Path) -> list[dict]:
    """metrics.jsonl of a run (re-read when the file grows)."""
    stamp = metrics_stamp(run)
    return _metrics(str(run), stamp) if stamp else []


# ---------------------------------------------------------------------------- conveniences
def item_label(rec, index: int) -> str:
    title = rec.dataset.item_titles[index] if rec.dataset.item_titles else ""
    return title or rec.dataset.items.id(index)


def item_category(rec, index: int) -> str:
    cats = rec.dataset.item_categories
    return (cats[index] if cats else "") or "(none)"


@st.cache_resource(show_spinner=False, max_entries=3)
def _item_hover(run: str, ckpt_mtime: int, data: str) -> list[str]:
    from . import maps

    ds = _recommender(run, ckpt_mtime, data).dataset
    titles = ds.item_titles or [""] * ds.n_items
    cats = ds.item_categories or [""] * ds.n_items
    return maps.hover_texts(ds.items.ids, titles, cats)


def item_hover() -> list[str]:
    """Hover text (title, id, category) of every item of the active model's dataset."""
    return _item_hover(*_key())


# ------------------------------------------------------------------------ embedding map
@st.cache_resource(show_spinner=False, max_entries=6)
def _map_coords(path: str, mtime: int, run: str) -> np.ndarray | None:
    from dvbpr.embedmap import load_map

    coords = load_map(run)
    if coords is not None:
        coords.setflags(write=False)  # shared by every session
    return coords


def embedding_map(run: str | Path) -> tuple[np.ndarray | None, tuple]:
    """(coords, key) of the run's embedding map: coords (n_items, 2), read once per map file
    (None while it is not computed), and a key naming that file and its mtime (for caches)."""
    from dvbpr.embedmap import map_path

    try:
        path = map_path(run)
        mtime = path.stat().st_mtime_ns
    except (DVBPRError, OSError):
        return None, ()
    coords = _map_coords(str(path), mtime, str(run))
    return coords, ((str(path), mtime) if coords is not None else ())
