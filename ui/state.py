"""The active dataset and model: in st.session_state and in the URL (?data=...&model=...).

`init()` runs at the top of every script run: on a session's first run it reads the names from
the query params (validated with dvbpr.fsutil.safe_name, as they become paths), then it writes
them back, so a reload or a shared link opens the same dataset and model. Choosing a model also
selects the dataset it was trained on; choosing a dataset selects the newest model trained on it
when the current model was not.
"""

from __future__ import annotations

import streamlit as st

from . import paths

DATA, MODEL = "active_data", "active_model"
_W_DATA, _W_MODEL = "_sidebar_data", "_sidebar_model"


def init() -> None:
    ss = st.session_state
    if MODEL not in ss or DATA not in ss:
        qp_model, qp_data = st.query_params.get("model"), st.query_params.get("data")
        bad = [f"{kind} {value!r}" for kind, value in (("model", qp_model), ("dataset", qp_data))
               if value is not None and paths.valid_name(value) is None]
        ss["_url_warning"] = ("Ignored an invalid name in the address: " + ", ".join(bad)) if bad else ""
        model = paths.valid_name(qp_model) or paths.default_model()
        ss[MODEL] = model
        ss[DATA] = paths.valid_name(qp_data) or paths.run_dataset_name(paths.models_root() / model) \
            or paths.DEFAULT_DATASET
    _sync_url()


def _sync_url() -> None:
    ss = st.session_state
    for key, name in (("model", ss[MODEL]), ("data", ss[DATA])):
        if st.query_params.get(key) != name:
            st.query_params[key] = name


def active_model() -> str:
    return st.session_state[MODEL]


def active_data() -> str:
    return st.session_state[DATA]


def set_model(name: str, follow_data: bool = True) -> None:
    """Make `name` the active model (and its training dataset the active dataset)."""
    ss = st.session_state
    ss[MODEL] = name
    if follow_data:
        data = paths.run_dataset_name(paths.models_root() / name)
        if data:
            ss[DATA] = data
    _sync_url()


def set_data(name: str, follow_model: bool = True) -> None:
    """Make `name` the active dataset; if the active model was not trained on it, switch to the
    newest model that was (if any)."""
    ss = st.session_state
    ss[DATA] = name
    if follow_model and paths.run_dataset_name(paths.models_root() / ss[MODEL]) != name:
        candidates = [m for m in paths.list_models()
                      if paths.run_dataset_name(paths.models_root() / m) == name]
        if candidates:
            newest = max(candidates, key=lambda m: paths.checkpoint_path(paths.models_root() / m).stat().st_mtime)
            ss[MODEL] = newest
    _sync_url()


def _on_model_change() -> None:
    set_model(st.session_state[_W_MODEL])


def _on_data_change() -> None:
    set_data(st.session_state[_W_DATA])


def sidebar() -> None:
    """Dataset and model pickers, with a one-line summary of each."""
    from dvbpr.fsutil import read_json

    ss = st.session_state
    datasets, models = paths.list_datasets(), paths.list_models()
    data, model = ss[DATA], ss[MODEL]
    data_options = datasets + ([data] if data not in datasets else [])
    model_options = models + ([model] if model not in models else [])
    ss[_W_DATA], ss[_W_MODEL] = data, model  # keep the widgets in step with changes made elsewhere
    with st.sidebar:
        if ss.get("_url_warning"):
            st.warning(ss["_url_warning"], icon=":material/link_off:")
        st.selectbox("Dataset", data_options, key=_W_DATA, on_change=_on_data_change,
                     format_func=lambda n: n if n in datasets else f"{n} (missing)",
                     help=f"Dataset folders under {paths.display(paths.data_root())}/")
        if data in datasets:
            summary = _dataset_summary(str(paths.data_root() / data))
            if summary:
                st.caption(summary)
        st.selectbox("Model", model_options, key=_W_MODEL, on_change=_on_model_change,
                     format_func=lambda n: n if n in models else f"{n} (no checkpoint)",
                     help=f"Run folders under {paths.display(paths.models_root())}/ with a checkpoint")
        run = paths.models_root() / model
        if model in models:
            status = read_json(run / "status.json", {}) or {}
            config = read_json(run / "config.json", {}) or {}
            arch = status.get("arch") or (config.get("model") or {}).get("arch") or config.get("arch", "")
            bits = [b for b in (arch, f"epoch {status.get('epoch')}/{status.get('epochs')}"
                                if status.get("epochs") else "",
                                f"val AUC {status['best_val_auc']:.3f}"
                                if isinstance(status.get("best_val_auc"), (int, float)) else "") if b]
            trained_on = paths.run_dataset_name(run)
            if bits:
                st.caption(" · ".join(bits))
            if trained_on and trained_on != data:
                st.warning(f"This model was trained on **{trained_on}**, not on **{data}**.",
                           icon=":material/warning:")
            elif trained_on is None and paths.run_data_path(run) is not None:
                st.caption(f"Trained on {paths.display(paths.run_data_path(run))}")


@st.cache_data(show_spinner=False, max_entries=64)
def _dataset_summary_cached(path: str, stamp: tuple) -> str:
    from dvbpr.data import load_dataset
    from dvbpr.errors import DVBPRError

    try:
        ds = load_dataset(path, check_images=False)
    except DVBPRError:
        return "Invalid dataset (see the Data page)"
    return f"{ds.n_users:,} users · {ds.n_items:,} items · {len(ds.train) + len(ds.val) + len(ds.test):,} interactions"


def _dataset_summary(path: str) -> str:
    from . import loaders

    return _dataset_summary_cached(path, loaders.dataset_stamp(path))
