"""Cached loaders. Resources (the Recommender, rankings, datasets) with st.cache_resource keyed by
(run folder, checkpoint mtime, dataset folder); small tables with st.cache_data. The stamps in
the keys come from `paths`. When the dataset's catalogue changes (an item added or removed:
`dvbpr.catalogue`), `recommender()` drops what was computed from the old one and loads the run on
the new one (the run then computes phi of the new items only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from dvbpr.compare import Comparison, compare_runs
from dvbpr.data import load_dataset
from dvbpr.diagnostics import embedding_report as _report
from dvbpr.embedmap import load_map, map_path, place
from dvbpr.errors import DVBPRError
from dvbpr.evaluate import evaluate_baselines, evaluate_recommender
from dvbpr.evaluate_core import RankingResult
from dvbpr.explain import overlay
from dvbpr.images import load_image
from dvbpr.jobs import job_log, run_state
from dvbpr.recommender import ColdItem, Recommender
from dvbpr.rundir import read_metrics, read_status

from . import grid, maps, paths, state
from .errors import PICK_DATASET, PICK_MODEL, Problem

KS = (20, 100)  # the cut-offs of the app's metrics


# ------------------------------------------------------------------------------- datasets
def require_dataset(name: str | None = None) -> Path:
    name = name or state.active_data()
    path = paths.data_root() / name
    if not (path / "interactions.csv").is_file():
        raise Problem(
            f"No dataset in {paths.display(path)}.",
            page="data",
            hint="Import one on the Data page, or pick another dataset in the sidebar.",
            public_hint=PICK_DATASET,
        )
    return path


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=6)
def _dataset(path: str, stamp: tuple):
    return load_dataset(path)


def dataset(path: str | Path):
    return _dataset(str(path), paths.dataset_stamp(path))


@st.cache_data(show_spinner=False, max_entries=32)
def _dataset_tables(path: str, stamp: tuple) -> dict[str, Any]:
    ds = _dataset(path, stamp)
    info = ds.info()
    per_user = (
        np.bincount(ds.train[:, 0], minlength=ds.n_users)
        + np.bincount(ds.val[:, 0], minlength=ds.n_users)
        + np.bincount(ds.test[:, 0], minlength=ds.n_users)
    )
    return {"info": info, "per_user": per_user, "popularity": ds.item_popularity.copy(), "warnings": list(ds.warnings)}


def dataset_tables(path: str | Path) -> dict[str, Any]:
    return _dataset_tables(str(path), paths.dataset_stamp(path))


# ---------------------------------------------------------------------------------- models
def require_run(name: str | None = None) -> tuple[Path, Path]:
    """(run folder, checkpoint) of a model, or a Problem saying what to do."""
    name = name or state.active_model()
    run = paths.models_root() / name
    if not run.is_dir():
        raise Problem(
            f"No model in {paths.display(run)}.",
            page="train",
            hint="Train one on the Train page, or pick another model in the sidebar.",
            public_hint=PICK_MODEL,
        )
    ckpt = paths.checkpoint_path(run)
    if ckpt is None:
        run_st = run_state(run)
        if run_st in ("running", "starting"):
            raise Problem(
                f"The run {name} is still training and has no checkpoint yet.",
                page="train",
                hint="Follow it on the Train page; it is usable after its first epoch.",
            )
        if run_st == "failed":
            reason = read_status(run).get("message") or job_log(run, 3) or "no message"
            raise Problem(
                f"The run {name} failed before writing a checkpoint: {reason}",
                page="train",
                hint="See its log on the Train page, then start a new run.",
                public_hint="Its log is on the Train page. " + PICK_MODEL,
            )
        raise Problem(
            f"No model in {paths.display(run)}: it has no checkpoint (best.pt or last.pt).",
            page="train",
            hint="Train one on the Train page, or pick another model in the sidebar.",
            public_hint=PICK_MODEL,
        )
    return run, ckpt


def _key() -> tuple[str, int, str]:
    run, ckpt = require_run()
    data = require_dataset()
    return str(run), paths.checkpoint_stamp(ckpt), str(data)


@st.cache_resource(show_spinner="Loading the model and its item features (first time only)…", max_entries=3)
def _recommender(run: str, ckpt_mtime: int, data: str) -> Recommender:
    return Recommender.from_run(run, data=data, device="auto")


def recommender() -> Recommender:
    """The Recommender of the active model on the active dataset, as its catalogue is now."""
    run, mtime, data = key = _key()
    trained_on = paths.run_data_path(Path(run))
    try:
        rec = _recommender(run, mtime, data)
        if rec.dataset.files_stamp != paths.dataset_stamp(data):  # items added or removed since
            _forget(key)
            rec = _recommender(run, mtime, data)
        return rec
    except DVBPRError as exc:
        if trained_on is not None and trained_on.resolve() != Path(data).resolve():
            raise Problem(
                f"The model {Path(run).name} was trained on {paths.display(trained_on)} and "
                f"cannot be used with the dataset {Path(data).name}: {exc}",
                page="train",
                hint="Pick its dataset in the sidebar, or fine-tune it on this dataset on the Train page.",
                public_hint="Pick its dataset in the sidebar.",
            ) from None
        raise


def recommender_key() -> tuple[str, int, str]:
    return _key()


def _forget(key: tuple[str, int, str]) -> None:
    """Drop the cached values of `key` that depend on the catalogue (the map's added items are
    keyed by the dataset's stamp, and an upload's scores do not depend on the catalogue)."""
    _recommender.clear(*key)
    for split in ("test", "val"):
        _ranking.clear(*key, split)
    _item_hover.clear(*key)


# ------------------------------------------------------------------------------ evaluation
@st.cache_resource(show_spinner="Ranking every user's test items…", max_entries=3)
def _ranking(run: str, ckpt_mtime: int, data: str, split: str) -> RankingResult:
    """The model's full-ranking evaluation over `split`, as `dvbpr evaluate` computes it."""
    return evaluate_recommender(_recommender(run, ckpt_mtime, data), split=split, ks=KS)


def ranking(split: str = "test") -> RankingResult:
    """RankingResult of the active model over `split` (metrics and per-user arrays), cached.
    The Evaluate page shows its metrics, the Recommendations page one user's row of it."""
    recommender()  # raises a clear Problem first when the model cannot be loaded
    return _ranking(*_key(), split)


def user_ranking(result: RankingResult, user_index: int) -> dict[str, float] | None:
    """One user's row of a RankingResult's per-user arrays ({"auc": ..., "best_rank": ...,
    "n_targets": ...}); None when the user has no held-out item in that split."""
    users = result.per_user["user"]  # sorted: the users with a target, in index order
    row = int(np.searchsorted(users, user_index))
    if row >= len(users) or users[row] != user_index:
        return None
    return {name: values[row].item() for name, values in result.per_user.items()}


@st.cache_data(show_spinner="Diagnosing the item embedding…", max_entries=8)
def _embedding_report(run: str, ckpt_mtime: int, data: str, stamp: tuple) -> dict:
    return _report(_recommender(run, ckpt_mtime, data))


def embedding_report() -> dict:
    """dvbpr.diagnostics.embedding_report of the active model on the active dataset, cached."""
    recommender()  # raises a clear Problem first when the model cannot be loaded
    run, mtime, data = _key()
    return _embedding_report(run, mtime, data, paths.dataset_stamp(data))


@st.cache_resource(show_spinner=False, max_entries=4)
def _baselines(data: str, stamp: tuple, split: str):
    result = evaluate_baselines(_dataset(data, stamp), split=split, ks=KS)
    _baselines_done.add((data, stamp, split))
    return result


_baselines_done: set[tuple] = set()  # keys _baselines has computed (its cache may have dropped some)


def baselines(split: str = "test"):
    data = require_dataset()
    return _baselines(str(data), paths.dataset_stamp(data), split)


def baselines_ready(split: str = "test") -> bool:
    """Whether baselines(split) of the active dataset was computed already (then it returns at
    once, unless its cache dropped it since)."""
    data = require_dataset()
    return (str(data), paths.dataset_stamp(data), split) in _baselines_done


# ------------------------------------------------------------------------------ run records
@st.cache_resource(show_spinner=False, max_entries=4)
def _comparison(run_dirs: tuple, stamps: tuple, data: str, data_stamp: tuple, baselines: bool, k: int) -> Comparison:
    return compare_runs(run_dirs, k=k, baselines=baselines, data=data)


def comparison(runs: Sequence[str], baselines: bool, k: int) -> tuple[Comparison, tuple]:
    """`dvbpr.compare.compare_runs` of runs of the active dataset (names under the models root),
    cached by their checkpoints, metrics and the dataset; and the cache key (for figures)."""
    data = require_dataset()
    run_dirs = tuple(str(paths.models_root() / r) for r in runs)
    stamps = tuple((paths.checkpoint_stamp(paths.checkpoint_path(Path(r))), paths.metrics_stamp(r)) for r in run_dirs)
    key = (run_dirs, stamps, str(data), paths.dataset_stamp(data), baselines, k)
    return _comparison(*key), key


@st.cache_data(show_spinner=False, max_entries=64)
def _metrics(run: str, stamp: tuple) -> list[dict]:
    return read_metrics(run)


def metrics(run: str | Path) -> list[dict]:
    """metrics.jsonl of a run (re-read when the file grows)."""
    stamp = paths.metrics_stamp(run)
    return _metrics(str(run), stamp) if stamp else []


# ------------------------------------------------------------------------------- new images
@st.cache_data(show_spinner=False, max_entries=16)
def _cold_item(key: tuple[str, int, str], raw: bytes, name: str) -> ColdItem:
    return _recommender(*key).cold_item(raw, name=name)


def cold_item(raw: bytes, name: str) -> ColdItem:
    """The image `raw` (file name `name`) through the active model once, cached per image:
    `Recommender.cold_item`, whose result `rank_users`, `similar_items(image=...)` and
    `embedmap.place` (its phi) take without embedding it again. Raises ImageError when it is
    not a usable image."""
    recommender()  # raises a clear Problem first when the model cannot be loaded
    return _cold_item(_key(), raw, name)


@st.cache_data(show_spinner=False, max_entries=16)
def upload_preview(raw: bytes, name: str) -> np.ndarray:
    """The image `raw` to show, 2 x THUMB_PX a side, through load_image like every thumbnail:
    st.image would decode raw bytes at full size (a 3 MB JPEG of 168 megapixels, which load_image
    decodes at 1/8 scale, would take 0.5 GB there). Raises ImageError as `cold_item` does."""
    return load_image(raw, 2 * grid.THUMB_PX, name=name)


# ---------------------------------------------------------------------------- explanations
@st.cache_data(show_spinner="Explaining the images…", max_entries=64)
def _explanations(key: tuple[str, int, str], stamp: tuple, user: str, items: tuple[str, ...]) -> dict[str, str]:
    explained = _recommender(*key).explain_items(user, list(items))
    return {item: grid.encode_jpeg(overlay(e, size=grid.THUMB_PX)) for item, e in zip(items, explained, strict=True)}


def explanations(user: str, items: list[str]) -> dict[str, str]:
    """Item id -> a data URI of its image with the heatmap of what raises the user's visual
    score over it (`Recommender.explain_items`, one pass for all the items), cached."""
    recommender()  # raises a clear Problem first when the model cannot be loaded
    key = _key()
    return _explanations(key, paths.dataset_stamp(key[2]), user, tuple(items))


@st.cache_data(show_spinner="Explaining the image…", max_entries=32)
def _upload_explanation(key: tuple[str, int, str], raw: bytes, name: str, user: str) -> tuple[str, float]:
    explained = _recommender(*key).explain(user, image=_cold_item(key, raw, name))
    return grid.encode_jpeg(overlay(explained, size=2 * grid.THUMB_PX)), explained.visual_score


def upload_explanation(raw: bytes, name: str, user: str) -> tuple[str, float]:
    """(data URI of the heatmap over the image `raw`, the user's visual score of it), cached."""
    recommender()
    return _upload_explanation(_key(), raw, name, user)


# ---------------------------------------------------------------------------- conveniences
@st.cache_resource(show_spinner=False, max_entries=3)
def _item_hover(run: str, ckpt_mtime: int, data: str) -> list[str]:
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
    coords = load_map(run)
    if coords is not None:
        coords.setflags(write=False)  # shared by every session
    return coords


@st.cache_resource(show_spinner=False, max_entries=6)
def _map_with_added_items(path: str, mtime: int, key: tuple[str, int, str], stamp: tuple) -> np.ndarray:
    rec = _recommender(*key)
    coords, phi, trained = _map_coords(path, mtime, key[0]), rec.item_embeddings(), rec.model.cfg.n_items
    added = [place(coords[:trained], phi[:trained], p, k=10) for p in phi[trained:]]
    grown = np.concatenate([coords[:trained], np.asarray(added, dtype=coords.dtype).reshape(-1, 2)])
    grown.setflags(write=False)
    return grown


def embedding_map(run: str | Path) -> tuple[np.ndarray | None, tuple]:
    """(coords, key) of the run's embedding map: coords (n_items, 2), read once per map file
    (None while it is not computed), and a key naming that file and its mtime (for caches).
    For the active run, items added to the catalogue since training (`dvbpr.catalogue`) are
    placed among the model's own items (`embedmap.place`), as an uploaded image is."""
    try:
        path = map_path(run)
        mtime = path.stat().st_mtime_ns
    except (DVBPRError, OSError):
        return None, ()
    coords = _map_coords(str(path), mtime, str(run))
    if coords is None:
        return None, ()
    key = _key()
    if key[0] == str(run):
        rec = recommender()
        if len(coords) != rec.dataset.n_items and len(coords) >= rec.model.cfg.n_items:
            stamp = paths.dataset_stamp(key[2])
            return _map_with_added_items(str(path), mtime, key, stamp), (str(path), mtime, stamp)
    return coords, (str(path), mtime)
