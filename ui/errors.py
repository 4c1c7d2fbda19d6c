"""Errors shown as clear messages with a way forward, never as a traceback."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator

import streamlit as st

from dvbpr.errors import (CheckpointError, DataError, DVBPRError, ImageError, JobError,
                          TrainingError)

log = logging.getLogger("dvbpr.app")

PAGES = {
    "train": ("pages/train.py", "Open the Train page", ":material/model_training:"),
    "data": ("pages/data.py", "Open the Data page", ":material/database:"),
    "embeddings": ("pages/embeddings.py", "Open the Embeddings page", ":material/scatter_plot:"),
}


class Problem(Exception):
    """A condition the person can fix: a message and, optionally, the page where to fix it."""

    def __init__(self, message: str, page: str | None = None, hint: str = ""):
        super().__init__(message)
        self.message, self.page, self.hint = message, page, hint


def _hint_for(exc: DVBPRError) -> tuple[str, str | None]:
    text = str(exc)
    if isinstance(exc, CheckpointError) and "changed since" in text:
        return ("Pick the dataset this model was trained on in the sidebar, or fine-tune the "
                "model on this dataset on the Train page.", "train")
    if isinstance(exc, CheckpointError):
        return "Train a model on the Train page, or pick another model in the sidebar.", "train"
    if isinstance(exc, DataError):
        return "Fix the file named above, or pick or import another dataset on the Data page.", "data"
    if isinstance(exc, ImageError):
        return "Use a JPEG, PNG or WebP image.", None
    if isinstance(exc, TrainingError) and "CUDA" in text:
        return "Choose device auto or cpu.", None
    if isinstance(exc, (TrainingError, JobError)):
        return "", None
    return "", None


def show_problem(message: str, hint: str = "", page: str | None = None) -> None:
    st.error(f"{message}" + (f"  \n{hint}" if hint else ""), icon=":material/error:")
    if page in PAGES:
        path, label, icon = PAGES[page]
        try:
            st.page_link(path, label=label, icon=icon)
        except Exception:  # page links need st.navigation; never fail over a link
            pass


def show_exception(exc: BaseException) -> None:
    """Show any exception as a message; DVBPR errors with a hint, others briefly (logged)."""
    if isinstance(exc, Problem):
        show_problem(exc.message, exc.hint, exc.page)
    elif isinstance(exc, DVBPRError):
        hint, page = _hint_for(exc)
        show_problem(str(exc), hint, page)
    else:
        log.exception("unexpected error in the app")
        show_problem(f"Unexpected error ({type(exc).__name__}): {exc}",
                     "The details are in the server log. Reload the page to try again.")


@contextmanager
def guard() -> Iterator[None]:
    """`with guard():` shows any Exception raised inside as a message and carries on.

    Streamlit's own control flow (st.rerun, st.stop) derives from BaseException and passes."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the whole point: nothing reaches the screen raw
        show_exception(exc)


def run_page(main: Callable[[], None], fragment: bool = False) -> None:
    """Run a page's main function under `guard` (after the shared shell, if app.py did not run
    it in this script run). With `fragment`, the page body is an st.fragment: its own widgets
    rerun only it, not the shell (the sidebar) around it."""
    from . import shell

    shell.ensure()
    if fragment:
        @st.fragment
        def page_body() -> None:
            with guard():  # a fragment rerun calls this function alone: guard it here
                main()

        page_body()
    else:
        with guard():
            main()
