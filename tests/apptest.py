"""What the AppTest-driven test files share: the app, opening it on a page with a query, and
checks that no exception reached the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dvbpr.rundir import REPO_ROOT

APP = str(REPO_ROOT / "app.py")
TIMEOUT = 180  # seconds one script run may take (a model loads on the first)


def use_roots(monkeypatch: pytest.MonkeyPatch, roots: dict[str, Path]) -> None:
    """Point the app at a test's data and models roots, with "default" as its model."""
    monkeypatch.setenv("DVBPR_DATA_ROOT", str(roots["data"]))
    monkeypatch.setenv("DVBPR_MODELS_ROOT", str(roots["models"]))
    monkeypatch.setenv("DVBPR_DEFAULT_MODEL", "default")


def open_app(page: str | None = None, **query: str) -> AppTest:
    """The app run once with `query` as its URL query, then switched to `page` (a pages/ file)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)
