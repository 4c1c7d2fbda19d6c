"""Plotly (WebGL) figures of the embedding map, and the thumbnail mosaic laid out by the map."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#5b4bdb", "#17becf", "#bcbd22", "#8c564b", "#d62728", "#2ca02c", "#7f7f7f"]
BASE = "#c9c6da"


def _layout(fig: go.Figure, height: int, legend: bool = True) -> go.Figure:
    fig.update_layout(
        height=height, margin=dict(l=4, r=4, t=8, b=4), plot_bgcolor="#fbfbfe", paper_bgcolor="#ffffff",
        xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x", scaleratio=1),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0, font=dict(size=11),
                    itemsizing="constant") if legend else None,
        showlegend=legend, dragmode="lasso", hoverlabel=dict(font_size=12), uirevision="map")
    return fig


def hover_texts(ids: Sequence[str], titles: Sequence[str], categories: Sequence[str]) -> list[str]:
    return [f"<b>{t or i}</b><br>{i} · {c or '-'}" for i, t, c in zip(ids, titles, categories)]


def map_figure(coords: np.ndarray, hover: Sequence[str], colour_by: str,
               values: np.ndarray | Sequence[str] | None, height: int = 620,
               colour_label: str = "") -> go.Figure:
    """All items; categorical `values` give one trace per value, numeric ones a colour scale.
    customdata holds the item index, so a selection maps back to items."""
    fig = go.Figure()
    idx = np.arange(len(coords))
    hover = np.asarray(hover, dtype=object)
    if colour_by == "categorical":
        values = np.asarray(values, dtype=object)
        for k, value in enumerate(sorted(set(values.tolist()), key=str)):
            m = values == value
            fig.add_trace(go.Scattergl(
                x=coords[m, 0], y=coords[m, 1], mode="markers", name=str(value), customdata=idx[m],
                text=hover[m], hovertemplate="%{text}<extra></extra>",
                marker=dict(size=5, color=PALETTE[k % len(PALETTE)], opacity=0.8)))
    else:
        values = np.asarray(values, dtype=float)
        fig.add_trace(go.Scattergl(
            x=coords[:, 0], y=coords[:, 1], mode="markers", name="items", customdata=idx,
            text=hover, hovertemplate="%{text}<br>" + colour_label + " %{marker.color:.3g}<extra></extra>",
            marker=dict(size=5, color=values, colorscale="Viridis", opacity=0.85, showscale=True,
                        colorbar=dict(title=dict(text=colour_label, side="right"), thickness=12, len=0.8))))
        return _layout(fig, height, legend=False)
    return _layout(fig, height)


def highlight_figure(coords: np.ndarray, hover: Sequence[str], layers: list[dict],
                     height: int = 360) -> go.Figure:
    """All items in grey, then `layers` on top: {"idx", "name", "color", "size", "symbol"}.
    A layer may give "xy" (an (n, 2) array) instead of "idx" for points not in the catalogue."""
    hover = np.asarray(hover, dtype=object)
    # the grey catalogue layer carries no hover text: a smaller figure to send on every rerun
    fig = go.Figure(go.Scattergl(x=coords[:, 0].round(3), y=coords[:, 1].round(3), mode="markers",
                                 name="catalogue", hoverinfo="skip",
                                 marker=dict(size=4, color=BASE, opacity=0.55)))
    for layer in layers:
        if "xy" in layer:
            xy, text = np.asarray(layer["xy"], dtype=float).reshape(-1, 2), [layer["name"]] * len(layer["xy"])
        else:
            idx = np.asarray(layer["idx"], dtype=int)
            if not len(idx):
                continue
            xy, text = coords[idx], hover[idx]
        fig.add_trace(go.Scattergl(
            x=xy[:, 0], y=xy[:, 1], mode="markers", name=layer["name"], text=text,
            hovertemplate="%{text}<extra>" + layer["name"] + "</extra>",
            marker=dict(size=layer.get("size", 9), color=layer["color"], symbol=layer.get("symbol", "circle"),
                        line=dict(width=1, color="#ffffff"))))
    fig = _layout(fig, height)
    fig.update_layout(dragmode="pan")
    return fig


def show(fig: go.Figure, key: str | None = None, **kwargs):
    return st.plotly_chart(fig, key=key, config={"displaylogo": False, "scrollZoom": True},
                           **kwargs)


@st.cache_data(show_spinner="Laying out thumbnails…", max_entries=8)
def mosaic(_store_array, cache_key: tuple, coords: np.ndarray, cells: int = 36, px: int = 40) -> bytes:
    """The item images laid out by the map: the 2-D coordinates are snapped to a cells x cells
    grid (aspect kept) and each occupied cell shows the item nearest to its centre. JPEG bytes."""
    lo, hi = coords.min(0), coords.max(0)
    span = np.maximum(hi - lo, 1e-9)
    cols = cells
    rows = max(1, int(round(cells * span[1] / span[0]))) if span[0] > 0 else cells
    rows = min(rows, cells * 2)
    gx = np.clip(((coords[:, 0] - lo[0]) / span[0] * cols).astype(int), 0, cols - 1)
    gy = np.clip(((hi[1] - coords[:, 1]) / span[1] * rows).astype(int), 0, rows - 1)  # y up
    centre_x = lo[0] + (gx + 0.5) / cols * span[0]
    centre_y = hi[1] - (gy + 0.5) / rows * span[1]
    dist = (coords[:, 0] - centre_x) ** 2 / span[0] ** 2 + (coords[:, 1] - centre_y) ** 2 / span[1] ** 2
    cell = gy * cols + gx
    order = np.lexsort((dist, cell))  # per cell, nearest first
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    chosen = order[first]
    canvas = Image.new("RGB", (cols * px, rows * px), (251, 251, 254))
    for i in chosen:
        thumb = Image.fromarray(np.asarray(_store_array[i])).resize((px - 2, px - 2), Image.Resampling.BILINEAR)
        canvas.paste(thumb, (int(gx[i]) * px + 1, int(gy[i]) * px + 1))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()
