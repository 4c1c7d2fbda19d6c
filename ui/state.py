"""The session state shared between pages, behind named accessors: no other module reads or
writes these keys of st.session_state (a page's own widget keys stay in the page).

The active dataset and model live in st.session_state and in the URL (?data=...&model=...).
`init()` runs at the top of every script run: on a session's first run it reads the names from
the query params (validated with dvbpr.fsutil.safe_name, as they become paths), then it writes
them back, so a reload or a shared link opens the same dataset and model. Choosing a model also
selects the dataset it was trained on; choosing a dataset selects the newest model trained on it
when the current model was not.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from . import paths

DATA, MODEL = "active_data", "active_model"
USER = "user"  # the user last shown on the Recommendations or Embeddings page
_URL_WARNING = "_url_warning"
_LEFT_LEGACY_PAGES = "_left_legacy_pages"
_NOTICE = "_notice"


def init() -> None:
    ss = st.session_state
    if MODEL not in ss or DATA not in ss:
        qp_model, qp_data = st.query_params.get("model"), st.query_params.get("data")
        bad = [
            f"{kind} {value!r}"
            for kind, value in (("model", qp_model), ("dataset", qp_data))
            if value is not None and paths.valid_name(value) is None
        ]
        ss[_URL_WARNING] = ("Ignored an invalid name in the address: " + ", ".join(bad)) if bad else ""
        model = paths.valid_name(qp_model) or paths.default_model()
        ss[MODEL] = model
        ss[DATA] = (
            paths.valid_name(qp_data) or paths.run_dataset_name(paths.models_root() / model) or paths.DEFAULT_DATASET
        )
    _sync_url()


def _sync_url() -> None:
    ss = st.session_state
    for key, name in (("model", ss[MODEL]), ("data", ss[DATA])):
        if st.query_params.get(key) != name:
            st.query_params[key] = name


def url_warning() -> str:
    """What was wrong with the names in the address on the session's first run ("" if nothing)."""
    return st.session_state.get(_URL_WARNING, "")


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
        candidates = [m for m in paths.list_models() if paths.run_dataset_name(paths.models_root() / m) == name]
        if candidates:
            newest = max(candidates, key=lambda m: paths.checkpoint_path(paths.models_root() / m).stat().st_mtime)
            ss[MODEL] = newest
    _sync_url()


def user(options: Sequence[str]) -> str:
    """The user to show first among `options`: the one last shown on any page, else the first."""
    last = st.session_state.get(USER)
    return last if last in options else options[0]


def set_user(user_id: str) -> None:
    """Remember the user shown, for the other pages."""
    st.session_state[USER] = user_id


def set_notice(message: str) -> None:
    """A message for the next run to show once (`pop_notice`), e.g. after an action that reruns."""
    st.session_state[_NOTICE] = message


def pop_notice() -> str:
    """The message `set_notice` left ("" if none), shown once."""
    return st.session_state.pop(_NOTICE, "")


def first_legacy_rerun() -> bool:
    """True the first time it is called in a session, False afterwards (see
    shell.leave_legacy_pages_mode)."""
    if st.session_state.get(_LEFT_LEGACY_PAGES):
        return False
    st.session_state[_LEFT_LEGACY_PAGES] = True
    return True
