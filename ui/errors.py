"""Errors shown as clear messages with a way forward, never as a traceback.

It imports only `ui.problem` and `ui.public` (neither imports it back), so any other module may
use it. The hint shown under a `dvbpr` error is chosen by the error's class (`HINTS`, most
specific first). A hint that proposes what public mode turns off (training, importing) has a
public-mode alternative, shown there instead: a visitor is never sent to a control that is
hidden from them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from dvbpr.errors import (
    CheckpointError,
    DataError,
    DatasetChangedError,
    DeviceUnavailableError,
    DVBPRError,
    ImageError,
)

from .problem import Problem
from .public import public_mode

log = logging.getLogger("dvbpr.app")

PAGES = {
    "train": ("pages/train.py", "Open the Train page", ":material/model_training:"),
    "data": ("pages/data.py", "Open the Data page", ":material/database:"),
    "embeddings": ("pages/embeddings.py", "Open the Embeddings page", ":material/scatter_plot:"),
}

DATASET_CHANGED_HINT = (
    "Pick the dataset this model was trained on in the sidebar, or fine-tune the "
    "model on this dataset on the Train page."
)
DEVICE_HINT = "No GPU was detected on this machine: choose device auto or cpu."
PICK_MODEL = "Pick another model in the sidebar."
PICK_DATASET = "Pick another dataset in the sidebar."
PICK_ITS_DATASET = "Pick the dataset this model was trained on in the sidebar."
DATA_ERROR_HINT = "Fix the file named above, or pick or import another dataset on the Data page."

HINTS: list[tuple[type[BaseException], tuple[str, str | None, str | None]]] = [
    (DatasetChangedError, (DATASET_CHANGED_HINT, "train", PICK_ITS_DATASET)),
    (DeviceUnavailableError, (DEVICE_HINT, None, None)),
    (CheckpointError, ("Train a model on the Train page, or pick another model in the sidebar.", "train", PICK_MODEL)),
    (DataError, (DATA_ERROR_HINT, "data", PICK_DATASET)),
    (ImageError, ("Use a JPEG, PNG or WebP image.", None, None)),
]
"""(error class, (hint, page, public-mode hint or None for the same)), subclasses first: the first
class that matches gives the hint."""


def hint_for(exc: BaseException) -> tuple[str, str | None, str | None]:
    """(hint, page, public-mode hint) shown under the error: what to do and where ("", None, None
    when nothing)."""
    for cls, hint in HINTS:
        if isinstance(exc, cls):
            return hint
    return "", None, None


def show_problem(message: str, hint: str = "", page: str | None = None, public_hint: str | None = None) -> None:
    """An error box with the hint under it and a link to `page`. In public mode `public_hint`,
    when given, replaces the hint and the link (they lead to what is turned off there)."""
    if public_hint is not None and public_mode():
        hint, page = public_hint, None
    st.error(f"{message}" + (f"  \n{hint}" if hint else ""), icon=":material/error:")
    if page in PAGES:
        path, label, icon = PAGES[page]
        try:
            st.page_link(path, label=label, icon=icon)
        except Exception:  # noqa: BLE001 - page links need st.navigation; never fail over a link
            pass


def show_exception(exc: BaseException) -> None:
    """Show any exception as a message; DVBPR errors with a hint, others briefly (logged)."""
    if isinstance(exc, Problem):
        show_problem(exc.message, exc.hint, exc.page, exc.public_hint)
    elif isinstance(exc, DVBPRError):
        show_problem(str(exc), *hint_for(exc))
    else:
        log.exception("unexpected error in the app")
        show_problem(
            f"Unexpected error ({type(exc).__name__}): {exc}",
            "The details are in the server log. Reload the page to try again.",
        )


@contextmanager
def guard() -> Iterator[None]:
    """`with guard():` shows any Exception raised inside as a message and carries on.

    Streamlit's own control flow (st.rerun, st.stop) derives from BaseException and passes."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the whole point: nothing reaches the screen raw
        show_exception(exc)
