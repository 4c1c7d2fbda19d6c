"""What every page shares: page config, CSS, the default dataset on first start, the active
dataset and model (state.init) and the sidebar; and `run_page`, which runs a page's body.

app.py runs `setup()` once per script run and then the page (`with pages_running(): pg.run()`);
each page ends with `shell.run_page(main)`.

Streamlit 1.67 treats a folder named `pages/` next to the main script as a legacy (v1)
multipage app until `st.navigation` has been called once in the server process: a deep link
such as /train on a fresh server runs pages/train.py directly, without app.py (AppTest's
switch_page does the same). `leave_legacy_pages_mode()` switches that off; a page run directly then
reruns through app.py (same page), and when that is not possible (`streamlit run pages/x.py`)
`ensure()` draws the shared shell itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st

from dvbpr.synth import ensure_default_dataset

from . import errors, paths, sidebar, state, style

_local = threading.local()  # script runs of a session happen in its script thread


def _ensure_default_dataset() -> None:
    """Generate DATA_ROOT/default on first start (under a minute), with a progress bar."""
    target = paths.data_root() / paths.DEFAULT_DATASET
    if (target / "interactions.csv").is_file():
        return
    box = st.empty()
    with box.container():
        st.info(
            "Preparing the default dataset (a synthetic fashion catalogue), first start only…",
            icon=":material/hourglass_top:",
        )
        bar = st.progress(0.0, text="starting")
        ensure_default_dataset(
            out_dir=target,
            progress=False,
            progress_callback=lambda f, m: bar.progress(min(max(float(f), 0.0), 1.0), text=m),
        )
    box.empty()


def setup() -> None:
    st.set_page_config(
        page_title="DVBPR Studio", page_icon=":material/styler:", layout="wide", initial_sidebar_state="expanded"
    )
    style.inject()
    with errors.guard():
        _ensure_default_dataset()
    state.init()
    with errors.guard():
        sidebar.render()


@contextmanager
def pages_running() -> Iterator[None]:
    """Marks that the shell ran in this script run (app.py wraps pg.run() in it)."""
    _local.active = True
    try:
        yield
    finally:
        _local.active = False


def leave_legacy_pages_mode() -> bool:
    """Turn off Streamlit's legacy pages/ folder mode. True when the caller should st.rerun()
    (so the run goes through app.py and st.navigation): the mode was on and this session has not
    rerun for it yet. AppTest re-enables the mode before every run; a session flag keeps that
    from costing a rerun (and the widget triggers it would drop) on every run."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without it has no such mode
        return False
    if not getattr(PagesManager, "uses_pages_directory", None):
        return False
    PagesManager.uses_pages_directory = False
    return state.first_legacy_rerun()


def ensure() -> None:
    """Run the shell unless app.py already did in this script run."""
    if not getattr(_local, "active", False):
        if leave_legacy_pages_mode():
            st.rerun()  # again, through app.py and st.navigation, on the same page
        setup()


def run_page(main: Callable[[], None], fragment: bool = False) -> None:
    """Run a page's main function under `errors.guard` (after the shared shell, if app.py did not
    run it in this script run). With `fragment`, the page body is an st.fragment: its own widgets
    rerun only it, not the shell (the sidebar) around it."""
    ensure()
    if fragment:

        @st.fragment
        def page_body() -> None:
            with errors.guard():  # a fragment rerun calls this function alone: guard it here
                main()

        page_body()
    else:
        with errors.guard():
            main()
