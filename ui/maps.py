"""The embedding map drawn: Plotly figures of the UMAP coordinates (every item in WebGL, or a few
highlighted items over a picture of the catalogue), that picture, and the thumbnail mosaic laid
out by the map. Generic chart helpers are in `figures`."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageDraw

from .figures import CONFIG, PALETTE, PLOT_BG

BASE = "#c9c6da"
PLOT_BG_RGBA = (*(int(PLOT_BG[k : k + 2], 16) for k in (1, 3, 5)), 255)


def _layout(height: int, legend: bool = True, **extra) -> dict:
    """The maps' layout (equal axis scales, no axes), as a dict: a figure built in one go from
    dicts is validated once, several times faster than update_layout on a built figure."""
    layout = dict(
        height=height,
        margin=dict(l=4, r=4, t=8, b=4),
        plot_bgcolor=PLOT_BG,
        paper_bgcolor="#ffffff",
        xaxis=dict(visible=False),
        yaxis=dict(visible=False, scaleanchor="x", scaleratio=1),
        showlegend=legend,
        dragmode="lasso",
        hoverlabel=dict(font_size=12),
        uirevision="map",
    )
    if legend:
        layout["legend"] = dict(
            orientation="h", yanchor="bottom", y=1.0, x=0, font=dict(size=11), itemsizing="constant"
        )
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(name), dict):
            layout[name] = {**layout[name], **value}
        else:
            layout[name] = value
    return layout


def hover_texts(ids: Sequence[str], titles: Sequence[str], categories: Sequence[str]) -> list[str]:
    return [f"<b>{t or i}</b><br>{i} · {c or '-'}" for i, t, c in zip(ids, titles, categories, strict=True)]


def map_figure(
    coords: np.ndarray,
    hover: Sequence[str],
    colour_by: str,
    values: np.ndarray | Sequence[str] | None,
    height: int = 620,
    colour_label: str = "",
) -> go.Figure:
    """All items; categorical `values` give one trace per value, numeric ones a colour scale.
    customdata holds the item index, so a selection maps back to items."""
    idx = np.arange(len(coords))
    hover = np.asarray(hover, dtype=object)
    if colour_by == "categorical":
        values = np.asarray(values, dtype=object)
        data = []
        for k, value in enumerate(sorted(set(values.tolist()), key=str)):
            m = values == value
            data.append(
                dict(
                    type="scattergl",
                    x=coords[m, 0],
                    y=coords[m, 1],
                    mode="markers",
                    name=str(value),
                    customdata=idx[m],
                    text=hover[m],
                    hovertemplate="%{text}<extra></extra>",
                    marker=dict(size=5, color=PALETTE[k % len(PALETTE)], opacity=0.8),
                )
            )
        return go.Figure(data=data, layout=_layout(height))
    values = np.asarray(values, dtype=float)
    data = [
        dict(
            type="scattergl",
            x=coords[:, 0],
            y=coords[:, 1],
            mode="markers",
            name="items",
            customdata=idx,
            text=hover,
            hovertemplate="%{text}<br>" + colour_label + " %{marker.color:.3g}<extra></extra>",
            marker=dict(
                size=5,
                color=values,
                colorscale="Viridis",
                opacity=0.85,
                showscale=True,
                colorbar=dict(title=dict(text=colour_label, side="right"), thickness=12, len=0.8),
            ),
        )
    ]
    return go.Figure(data=data, layout=_layout(height, legend=False))


def catalogue_picture(coords: np.ndarray, px: int = 900, dot: float = 10.0, pad: float = 0.04) -> dict:
    """Every item as a grey dot on the plot background, drawn once into a small PNG (a data URI):
    the backdrop of the highlight maps. A picture instead of a 3,600-point WebGL trace keeps
    those maps cheap to draw in the browser (an SVG plot of a few dozen points).

    Returns {"source": data URI, "x": [x0, x1], "y": [y0, y1]}, the data extent it covers
    (the items' bounding box plus `pad` of it on each side). `px` is its longer side and `dot`
    the dots' diameter, in its pixels (drawn at twice the size and scaled down: smooth edges)."""
    coords = np.asarray(coords, dtype=float).reshape(-1, 2)
    lo, hi = (coords.min(0), coords.max(0)) if len(coords) else (np.zeros(2), np.ones(2))
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - span * pad, hi + span * pad
    span = hi - lo
    ss = 2  # supersampling
    scale = px * ss / span.max()
    w, h = max(ss, int(round(span[0] * scale))), max(ss, int(round(span[1] * scale)))
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer, "RGBA")
    r = dot * ss / 2
    fill = tuple(int(BASE[k : k + 2], 16) for k in (1, 3, 5)) + (140,)  # BASE at opacity 0.55
    for x, y in zip((coords[:, 0] - lo[0]) * scale, (hi[1] - coords[:, 1]) * scale, strict=True):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    picture = Image.alpha_composite(Image.new("RGBA", (w, h), PLOT_BG_RGBA), layer).convert("RGB")
    picture = picture.resize((w // ss, h // ss), Image.Resampling.LANCZOS).quantize(32)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return {
        "source": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
        "x": [float(lo[0]), float(hi[0])],
        "y": [float(lo[1]), float(hi[1])],
    }


@st.cache_data(show_spinner=False, max_entries=8)
def cached_catalogue_picture(map_key: tuple, _coords: np.ndarray) -> dict:
    """catalogue_picture of the map identified by `map_key` (e.g. its file and mtime)."""
    return catalogue_picture(_coords)


def highlight_figure(
    coords: np.ndarray, hover: Sequence[str], layers: list[dict], height: int = 360, picture: dict | None = None
) -> go.Figure:
    """The catalogue in grey (the `picture` of catalogue_picture, drawn here if not given), then
    `layers` on top: {"idx", "name", "color", "size", "symbol"}. A layer may give "xy" (an
    (n, 2) array) instead of "idx" for points not in the catalogue. Only the layers are plotted
    (SVG, with hover text); the grey catalogue is the plot's background picture."""
    picture = picture or catalogue_picture(coords)
    hover = np.asarray(hover, dtype=object)
    # the catalogue's legend entry (the picture itself has none)
    data = [
        dict(
            type="scatter",
            x=[None],
            y=[None],
            mode="markers",
            name="catalogue",
            hoverinfo="skip",
            marker=dict(size=4, color=BASE, opacity=0.55),
        )
    ]
    for layer in layers:
        if "xy" in layer:
            xy, text = np.asarray(layer["xy"], dtype=float).reshape(-1, 2), [layer["name"]] * len(layer["xy"])
        else:
            idx = np.asarray(layer["idx"], dtype=int)
            if not len(idx):
                continue
            xy, text = coords[idx], hover[idx]
        data.append(
            dict(
                type="scatter",
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                name=layer["name"],
                text=text,
                hovertemplate="%{text}<extra>" + layer["name"] + "</extra>",
                marker=dict(
                    size=layer.get("size", 9),
                    color=layer["color"],
                    symbol=layer.get("symbol", "circle"),
                    line=dict(width=1, color="#ffffff"),
                ),
            )
        )
    (x0, x1), (y0, y1) = picture["x"], picture["y"]
    return go.Figure(
        data=data,
        layout=_layout(
            height,
            dragmode="pan",
            xaxis=dict(range=[x0, x1]),
            yaxis=dict(range=[y0, y1]),
            images=[
                dict(
                    source=picture["source"],
                    xref="x",
                    yref="y",
                    x=x0,
                    y=y1,
                    sizex=x1 - x0,
                    sizey=y1 - y0,
                    sizing="stretch",
                    layer="below",
                )
            ],
        ),
    )


# WebGL at 1 device pixel per CSS pixel: a browser drawing WebGL in software (no GPU) spends
# ~0.15 s less per map; points stay sharp at the usual pixel density
MAP_CONFIG = {**CONFIG, "scrollZoom": True, "plotGlPixelRatio": 1}


def show(fig: go.Figure, key: str | None = None, **kwargs):
    """st.plotly_chart of a map (scroll to zoom)."""
    return st.plotly_chart(fig, key=key, config=MAP_CONFIG, **kwargs)


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
