"""Evaluate: the active model's test metrics beside the baselines, curves and per-user AUC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ui import errors, loaders, maps, reference, style

COLUMNS = {"auc": "AUC", "auc_cold": "AUC (cold)", "rr": "RR", "recall@20": "R@20",
           "precision@20": "P@20", "ndcg@20": "nDCG@20", "recall@100": "R@100",
           "precision@100": "P@100", "ndcg@100": "nDCG@100", "coverage@20": "Coverage@20"}
CHART_METRICS = ["auc", "rr", "recall@20", "ndcg@20", "recall@100", "ndcg@100"]
MODEL_COLOURS = {"dvbpr": "#5b4bdb", "popularity": "#b0adc4", "bpr-mf": "#18a38a"}


def _table(results: dict[str, dict[str, float]]) -> pd.DataFrame:
    rows = {name: {label: m.get(key, np.nan) for key, label in COLUMNS.items()} for name, m in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def main() -> None:
    style.header("Evaluate", "Full-ranking metrics on the test split: every held-out item ranked "
                 "against the whole catalogue (training and validation items excluded).")
    rec = loaders.recommender()
    ds = rec.dataset
    result = loaders.ranking("test")
    m = result.metrics
    c = st.columns(5)
    c[0].metric("AUC", f"{m['auc']:.4f}")
    c[1].metric("Recall@20", f"{m.get('recall@20', np.nan):.4f}")
    c[2].metric("nDCG@20", f"{m.get('ndcg@20', np.nan):.4f}")
    c[3].metric("Cold-item AUC", f"{m['auc_cold']:.4f}" if np.isfinite(m.get("auc_cold", np.nan)) else "n/a",
                help="Users whose test item has no training interaction")
    c[4].metric("Users evaluated", f"{int(m['users']):,}", help=f"{int(m['cold_users']):,} with a cold test item")

    st.subheader("Model and baselines", anchor=False)
    slot = st.empty()  # the model alone first; with the baselines once they are computed (below)
    with slot.container():
        _comparison({"dvbpr": m})
    note = st.empty()

    if reference.applies(ds.name):
        st.subheader("Tutorial reference (Wikimedia Commons)", anchor=False)
        ref = pd.DataFrame.from_dict(
            {name: {COLUMNS[k]: v for k, v in row.items()} for name, row in reference.TUTORIAL.items()},
            orient="index")
        ref.loc["this model (dvbpr)"] = [m.get(k, np.nan) for k in reference.METRICS]
        st.dataframe(ref.style.format("{:.5f}"), width="stretch")

    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Per-user AUC", anchor=False)
        auc = result.per_user["auc"]
        auc = auc[np.isfinite(auc)]
        hist = go.Figure(go.Histogram(x=auc, nbinsx=40, marker_color="#5b4bdb",
                                      hovertemplate="AUC %{x}<br>%{y} users<extra></extra>"))
        hist.add_vline(x=float(np.mean(auc)) if len(auc) else 0.5, line_dash="dot", line_color="#e8590c",
                       annotation_text=f"mean {np.mean(auc):.3f}" if len(auc) else "")
        hist.update_layout(height=320, margin=dict(l=4, r=4, t=24, b=4), xaxis_title="AUC of the user's "
                           "test item", yaxis_title="users", plot_bgcolor="#fbfbfe", bargap=0.04)
        st.plotly_chart(hist, config={"displaylogo": False}, key="ev_hist")
    with right:
        st.subheader("Validation metrics over epochs", anchor=False)
        run, _, _ = loaders.recommender_key()
        epochs = [r for r in loaders.metrics(run) if r.get("type") == "epoch"]
        keys = [k for k in ("val_auc", "val_recall@20", "val_ndcg@20", "val_rr")
                if any(isinstance(r.get(k), (int, float)) for r in epochs)]
        if not keys:
            st.caption("This run has no per-epoch validation records.")
        else:
            curves = go.Figure()
            for n, k in enumerate(keys):
                pts = [(r["epoch"], r[k]) for r in epochs if isinstance(r.get(k), (int, float))]
                curves.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                            name=k.removeprefix("val_"), line=dict(color=maps.PALETTE[n])))
            curves.update_xaxes(dtick=1)
            curves.update_layout(height=320, margin=dict(l=4, r=4, t=24, b=4), xaxis_title="epoch",
                                 plot_bgcolor="#fbfbfe", legend=dict(orientation="h", y=1.12, x=0))
            st.plotly_chart(curves, config={"displaylogo": False}, key="ev_curves")

    try:
        with note, st.spinner("Training BPR-MF and evaluating the baselines (once per dataset; on a "
                              "busy CPU this can take a few minutes)…", show_time=True):
            baselines = loaders.baselines("test")
    except Exception as exc:  # noqa: BLE001 - the model's numbers stay on screen
        with note.container():
            errors.show_exception(exc)
        return
    note.empty()
    with slot.container():
        _comparison({"dvbpr": m, **{name: r.metrics for name, r in baselines.items()}})


def _comparison(table: dict[str, dict[str, float]]) -> None:
    frame = _table(table)
    st.dataframe(frame.style.format("{:.5f}", na_rep="-").highlight_max(axis=0, color="#e5e1ff"),
                 width="stretch")
    fig = go.Figure()
    for name in table:
        fig.add_trace(go.Bar(name=name, x=[COLUMNS[k] for k in CHART_METRICS],
                             y=[table[name].get(k, np.nan) for k in CHART_METRICS],
                             marker_color=MODEL_COLOURS.get(name, "#888")))
    fig.update_layout(barmode="group", height=340, margin=dict(l=4, r=4, t=10, b=4), plot_bgcolor="#fbfbfe",
                      legend=dict(orientation="h", y=1.08, x=0), yaxis_title="value")
    st.plotly_chart(fig, config={"displaylogo": False}, key=f"ev_bars_{len(table)}")


errors.run_page(main)
