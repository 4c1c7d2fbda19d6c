"""What every Plotly chart of the app shares: colours, the chart config, and a cache of built
figures (building a figure costs more than sending it, so each is built once per input)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
import streamlit as st

PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#5b4bdb",
    "#17becf",
    "#bcbd22",
    "#8c564b",
    "#d62728",
    "#2ca02c",
    "#7f7f7f",
]
PLOT_BG = "#fbfbfe"
CONFIG = {"displaylogo": False}


@st.cache_resource(show_spinner=False, max_entries=64)
def _cached_figure(kind: str, key: tuple, _build: Callable[[], Any]) -> Any:
    return _build()


def cached_figure(kind: str, key: tuple, build: Callable[[], Any]) -> Any:
    """`build()` (a figure, or a few, or None), memoised on (kind, key): `key` must name everything
    it depends on (e.g. the run and checkpoint, the map file, the colouring). Figures are shared
    by every session: never modify one."""
    return _cached_figure(kind, key, build)


def chart(fig: go.Figure, key: str | None = None, **kwargs):
    """st.plotly_chart with the app's config (no Plotly logo)."""
    return st.plotly_chart(fig, key=key, config=CONFIG, **kwargs)
