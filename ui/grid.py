"""Fast image grids: HTML/CSS cards with cached base64 JPEG thumbnails.

Every thumbnail goes through dvbpr.images.load_image (white square padding, EXIF orientation),
so all images have the same size and look as the model sees them, only sharper. Thumbnails are
memoised per (path, mtime, size), so a warm grid of 30 items renders in milliseconds.
"""

from __future__ import annotations

import base64
import html
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from dvbpr.errors import ImageError
from dvbpr.images import load_image

THUMB_PX = 160
_CACHE_MAX = 20000
_cache: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_lock = threading.Lock()

PLACEHOLDER = (
    "data:image/svg+xml;base64,"
    + base64.b64encode(
        b'<svg xmlns="http://www.w3.org/2000/svg" width="160" height="160">'
        b'<rect width="160" height="160" fill="#eeedf5"/><text x="80" y="86" font-size="14" '
        b'text-anchor="middle" fill="#8a87a3" font-family="sans-serif">no image</text></svg>'
    ).decode()
)

COLORS = {"visual": "#5b4bdb", "collaborative": "#18a38a", "bias": "#b0adc4"}


def encode_jpeg(pixels: np.ndarray | Image.Image, quality: int = 85) -> str:
    im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    buffer = io.BytesIO()
    im.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=False)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumb_uri(path: str | os.PathLike, size: int = THUMB_PX) -> str:
    """A data URI of the image as a size x size JPEG (placeholder when unreadable)."""
    path = str(path)
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return PLACEHOLDER
    key = (path, mtime, size)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        uri = encode_jpeg(load_image(path, size))
    except (ImageError, OSError, ValueError):
        uri = PLACEHOLDER
    with _lock:
        _cache[key] = uri
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)
    return uri


@dataclass
class Card:
    """One tile: an image (path or ready data URI), a title and small caption lines."""

    image: str | Path
    title: str = ""
    lines: Sequence[str] = ()
    badge: str = ""
    badge_kind: str = ""  # "", "hit", "gt", "new"
    highlight: bool = False
    tooltip: str = ""
    parts: dict[str, float] = field(default_factory=dict)  # score breakdown for the stacked bar


def _breakdown_html(parts: dict[str, float]) -> str:
    total_abs = sum(abs(v) for v in parts.values()) or 1.0
    segs, labels = [], []
    for name, value in parts.items():
        share = 100.0 * abs(value) / total_abs
        colour = COLORS.get(name, "#999")
        style = f"width:{share:.1f}%;background:{colour}" + (";opacity:.45" if value < 0 else "")
        segs.append(f'<span style="{style}"></span>')
        short = {"visual": "vis", "collaborative": "cf", "bias": "β"}.get(name, name)
        labels.append(f'<span style="color:{colour}" title="{name} {value:+.4f}">{short}&nbsp;{value:+.2f}</span>')
    return f'<div class="dv-bar">{"".join(segs)}</div><div class="dv-parts">{" ".join(labels)}</div>'


def render(cards: Sequence[Card], min_px: int = 128) -> str:
    tiles = []
    for card in cards:
        src = card.image if isinstance(card.image, str) and card.image.startswith("data:") else thumb_uri(card.image)
        cls = "dv-card" + (" dv-hl" if card.highlight else "")
        badge = (
            (f'<span class="dv-badge dv-badge-{card.badge_kind or "plain"}">{html.escape(card.badge)}</span>')
            if card.badge
            else ""
        )
        lines = "".join(f'<div class="dv-meta">{html.escape(line)}</div>' for line in card.lines)
        bar = _breakdown_html(card.parts) if card.parts else ""
        tip = html.escape(card.tooltip or card.title, quote=True)
        tiles.append(
            f'<div class="{cls}" title="{tip}"><div class="dv-img">{badge}'
            f'<img src="{src}" alt="{tip}" decoding="async"/></div>'
            f'<div class="dv-title">{html.escape(card.title)}</div>{lines}{bar}</div>'
        )
    return (
        f'<div class="dv-grid" style="grid-template-columns:repeat(auto-fill,minmax({min_px}px,1fr))">'
        + "".join(tiles)
        + "</div>"
    )


def image_grid(cards: Sequence[Card], min_px: int = 128, empty: str = "Nothing to show.") -> None:
    if not cards:
        st.caption(empty)
        return
    st.html(render(cards, min_px))


def strip(paths: Sequence[str | Path], px: int = 44, tooltips: Sequence[str] = ()) -> str:
    """A row of small thumbnails (HTML), e.g. a user's history in a table."""
    tips = list(tooltips) + [""] * (len(paths) - len(tooltips))
    imgs = "".join(
        f'<img src="{thumb_uri(p, 96)}" title="{html.escape(t, quote=True)}" style="width:{px}px;height:{px}px"/>'
        for p, t in zip(paths, tips, strict=False)
    )
    return f'<div class="dv-strip">{imgs}</div>'


def catalogue_cards(ds, indices: Sequence[int]) -> list[Card]:
    """Cards of catalogue items: title, id, category, interaction count and cold flag."""
    titles, cats = ds.item_titles, ds.item_categories
    return [
        Card(
            ds.image_paths[i],
            (titles[i] if titles else "") or ds.items.id(i),
            [
                f"{ds.items.id(i)} · {(cats[i] if cats else '') or '-'}",
                f"{int(ds.item_popularity[i])} interactions" + (" · cold" if ds.cold_items[i] else ""),
            ],
        )
        for i in indices
    ]
