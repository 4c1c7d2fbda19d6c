"""Public mode: the app on a public address, where anyone who can open the page is a visitor.

Switched on by the environment variable DVBPR_PUBLIC (or a root key of the same name in
.streamlit/secrets.toml) set to anything but "", 0, false, no or off. Either one is enough; a
secrets file that exists but cannot be read counts as on (fail closed).

In public mode the pages hide every server-side action a stranger must not trigger, and the code
that performs each one calls `refuse` first, so a widget message crafted for a hidden control
still changes nothing: importing a dataset from a folder or file of the server, starting,
stopping or resuming training (fine-tunes included), adding an item to a catalogue, computing a
failed embedding map again. What a visitor chooses for their own session (the dataset and model
they look at, the user, uploads scored against the model) stays, as do browsing, the map and
evaluation. A failed run's log (the server's folders and command lines) is not shown there.
Without it the app is as it always was.
"""

from __future__ import annotations

import logging
import os

import streamlit as st
from streamlit import config

from .problem import Problem

KEY = "DVBPR_PUBLIC"
_OFF = {"", "0", "false", "no", "off"}
DISABLED = (
    "importing datasets from the server, starting, stopping or resuming training, and adding items to a catalogue"
)

log = logging.getLogger("dvbpr.app")


def _on(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in _OFF


def _secret() -> object:
    """The secrets file's DVBPR_PUBLIC (None when unset or when there is no secrets file)."""
    try:
        return st.secrets.get(KEY)
    except FileNotFoundError:  # StreamlitSecretNotFoundError: no secrets file, or one it cannot parse
        files = config.get_option("secrets.files") or []  # where st.secrets looks
        if any(os.path.isfile(os.path.expanduser(f)) for f in files):
            log.warning("cannot read the secrets file: public mode is on until it is fixed")
            return True
        return None


def public_mode() -> bool:
    """True when the app runs in public mode (read on every call, so tests can switch it)."""
    if _on(os.environ.get(KEY, "")):
        return True
    secret = _secret()
    return secret is not None and _on(secret)


def refuse(action: str) -> None:
    """Raise a Problem naming `action` in public mode; nothing otherwise. Called right before
    the code that performs a server-side action."""
    if public_mode():
        raise Problem(f"{action} is turned off on this public server.", hint="Ask whoever runs it.")


def note(what: str) -> None:
    """In place of hidden controls: a short line saying what is turned off here."""
    st.caption(f":material/lock: {what} is turned off on this public server.")
