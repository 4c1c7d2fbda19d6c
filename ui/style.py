"""The app's CSS, injected once per run."""

from __future__ import annotations

import streamlit as st

CSS = """
<style>
.block-container {padding-top: 2.2rem; padding-bottom: 2rem; max-width: 1600px;}
h1 {font-size: 1.75rem !important; font-weight: 700 !important; letter-spacing: -0.01em;}
h2, h3 {letter-spacing: -0.01em;}
[data-testid="stMetric"] {background: #f7f6fd; border: 1px solid #e6e4f3; border-radius: 10px;
  padding: 0.55rem 0.8rem;}
[data-testid="stMetricValue"] {font-size: 1.45rem;}
.dv-grid {display: grid; gap: 12px; width: 100%;}
.dv-card {background: #fff; border: 1px solid #e6e4f3; border-radius: 10px; padding: 6px 6px 8px;
  box-shadow: 0 1px 2px rgba(30, 20, 80, .04); min-width: 0; position: relative;}
.dv-card.dv-hl {border: 2px solid #e8590c; box-shadow: 0 0 0 3px rgba(232, 89, 12, .15);}
.dv-img {position: relative; width: 100%; aspect-ratio: 1 / 1; border-radius: 6px; overflow: hidden;
  background: #fff;}
.dv-img img {width: 100%; height: 100%; object-fit: contain; display: block;}
.dv-badge {position: absolute; top: 4px; left: 4px; font-size: 11px; font-weight: 600; line-height: 1;
  padding: 3px 6px; border-radius: 999px; background: rgba(29, 27, 44, .78); color: #fff; z-index: 1;}
.dv-badge-gt {background: #e8590c;}
.dv-badge-hit {background: #2b8a3e;}
.dv-badge-new {background: #5b4bdb;}
.dv-title {font-size: 12.5px; font-weight: 600; margin-top: 5px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; color: #1d1b2c;}
.dv-meta {font-size: 11.5px; color: #6b6880; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;}
.dv-bar {display: flex; height: 5px; border-radius: 3px; overflow: hidden; margin-top: 5px; background: #f0eff6;}
.dv-bar span {display: block; height: 100%;}
.dv-parts {font-size: 10.5px; margin-top: 2px; display: flex; gap: 6px; white-space: nowrap; overflow: hidden;
  font-variant-numeric: tabular-nums;}
.dv-strip {display: flex; gap: 4px; flex-wrap: wrap;}
.dv-strip img {border-radius: 4px; border: 1px solid #e6e4f3; object-fit: contain; background: #fff;}
.dv-row {display: grid; grid-template-columns: 36px 120px 90px 1fr; gap: 10px; align-items: center;
  padding: 6px 4px; border-bottom: 1px solid #f0eff6; font-size: 13px;}
.dv-row.dv-head {font-weight: 600; color: #6b6880; font-size: 12px;}
.dv-legend {font-size: 12px; color: #6b6880; display: flex; gap: 14px; flex-wrap: wrap; margin: 2px 0 8px;}
.dv-legend i {display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px;
  vertical-align: -1px;}
.dv-sub {color: #6b6880; font-size: 0.92rem; margin-top: -0.6rem; margin-bottom: 0.8rem;}
</style>
"""


def inject() -> None:
    st.html(CSS)


def header(title: str, subtitle: str = "") -> None:
    """Page title with a one-line description under it."""
    st.title(title, anchor=False)
    if subtitle:
        st.html(f'<div class="dv-sub">{subtitle}</div>')


def legend(entries: dict[str, str]) -> None:
    """A small colour legend: {label: css colour}."""
    items = "".join(f'<span><i style="background:{c}"></i>{label}</span>' for label, c in entries.items())
    st.html(f'<div class="dv-legend">{items}</div>')
