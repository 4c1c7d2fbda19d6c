"""The sidebar: the dataset and model pickers, with a one-line summary of each; in public mode a
note saying what is turned off."""

from __future__ import annotations

import streamlit as st

from dvbpr.data import load_dataset
from dvbpr.errors import DVBPRError
from dvbpr.fsutil import read_json
from dvbpr.rundir import CONFIG, STATUS

from . import paths, public, state

_W_DATA, _W_MODEL = "_sidebar_data", "_sidebar_model"  # the pickers' widget keys


def _on_model_change() -> None:
    state.set_model(st.session_state[_W_MODEL])


def _on_data_change() -> None:
    state.set_data(st.session_state[_W_DATA])


def render() -> None:
    ss = st.session_state
    datasets, models = paths.list_datasets(), paths.list_models()
    data, model = state.active_data(), state.active_model()
    data_options = datasets + ([data] if data not in datasets else [])
    model_options = models + ([model] if model not in models else [])
    ss[_W_DATA], ss[_W_MODEL] = data, model  # keep the widgets in step with changes made elsewhere
    with st.sidebar:
        if public.public_mode():
            st.info(f"Public mode: {public.DISABLED} are turned off here.", icon=":material/public:")
        if state.url_warning():
            st.warning(state.url_warning(), icon=":material/link_off:")
        st.selectbox(
            "Dataset",
            data_options,
            key=_W_DATA,
            on_change=_on_data_change,
            format_func=lambda n: n if n in datasets else f"{n} (missing)",
            help=f"Dataset folders under {paths.display(paths.data_root())}/",
        )
        if data in datasets:
            summary = _dataset_summary(str(paths.data_root() / data))
            if summary:
                st.caption(summary)
        st.selectbox(
            "Model",
            model_options,
            key=_W_MODEL,
            on_change=_on_model_change,
            format_func=lambda n: n if n in models else f"{n} (no checkpoint)",
            help=f"Run folders under {paths.display(paths.models_root())}/ with a checkpoint",
        )
        if model in models:
            _model_summary(paths.models_root() / model, data)


def _model_summary(run, data: str) -> None:
    status = read_json(run / STATUS, {}) or {}
    config = read_json(run / CONFIG, {}) or {}
    arch = status.get("arch") or (config.get("model") or {}).get("arch") or config.get("arch", "")
    best = status.get("best_val_auc")
    bits = [
        b
        for b in (
            arch,
            f"epoch {status.get('epoch')}/{status.get('epochs')}" if status.get("epochs") else "",
            f"best val AUC {best:.3f}" if isinstance(best, (int, float)) else "",
        )
        if b
    ]
    trained_on = paths.run_dataset_name(run)
    if bits:
        st.caption(" · ".join(bits))
    if trained_on and trained_on != data:
        st.warning(f"This model was trained on **{trained_on}**, not on **{data}**.", icon=":material/warning:")
    elif trained_on is None and paths.run_data_path(run) is not None:
        st.caption(f"Trained on {paths.display(paths.run_data_path(run))}")


@st.cache_data(show_spinner=False, max_entries=64)
def _dataset_summary_cached(path: str, stamp: tuple) -> str:
    try:
        ds = load_dataset(path, check_images=False)
    except DVBPRError:
        return "Invalid dataset (see the Data page)"
    return f"{ds.n_users:,} users · {ds.n_items:,} items · {len(ds.train) + len(ds.val) + len(ds.test):,} interactions"


def _dataset_summary(path: str) -> str:
    return _dataset_summary_cached(path, paths.dataset_stamp(path))
