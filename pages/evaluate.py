"""Evaluate: the active model's test metrics beside the baselines, curves and per-user AUC; and
runs of the dataset compared side by side (dvbpr.compare), with bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dvbpr.compare import Comparison, PairedDiff
from dvbpr.diagnostics import colour_note, colour_summary
from ui import errors, figures, loaders, paths, public, reference, shell, state, style

COLUMNS = {
    "auc": "AUC",
    "auc_cold": "AUC (cold)",
    "auc_warm": "AUC (warm)",
    "rr": "RR",
    "recall@20": "R@20",
    "precision@20": "P@20",
    "ndcg@20": "nDCG@20",
    "recall@100": "R@100",
    "precision@100": "P@100",
    "ndcg@100": "nDCG@100",
    "coverage@20": "Coverage@20",
}
CHART_METRICS = ["auc", "rr", "recall@20", "ndcg@20", "recall@100", "ndcg@100"]
MODEL_COLOURS = {"dvbpr": "#5b4bdb", "popularity": "#b0adc4", "bpr-mf": "#18a38a"}
NA = "n/a"  # a missing metric in the tables
PANEL = dict(height=320, margin=dict(l=4, r=4, t=24, b=4), plot_bgcolor=figures.PLOT_BG)  # the half-width charts
COMPARE_K = 20  # the comparison's cut-off: Recall@20 gets a confidence interval beside AUC
COMPARE_COLUMNS = {key: COLUMNS[key] for key in ("auc", "auc_cold", "rr", "recall@20", "ndcg@20", "coverage@20")}
W_CMP_RUNS, W_CMP_BASELINES = "ev_cmp_runs", "ev_cmp_baselines"  # the comparison's widgets
CMP_SHOWN = "ev_cmp_shown"  # (runs, baselines) of the comparison last asked for, shown until the next


def _table(results: dict[str, dict[str, float]], columns: dict[str, str] = COLUMNS) -> pd.DataFrame:
    rows = {name: {label: m.get(key, np.nan) for key, label in columns.items()} for name, m in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index").astype(float)


def _styled(frame: pd.DataFrame, digits: int = 5, highlight: bool = True):
    """The table as st.dataframe shows it: values as text with `digits` decimals and "n/a" for a
    missing one (st.dataframe shows any missing number as "None", whatever the format), the best
    value of each column shaded."""
    text = frame.apply(lambda col: col.map(lambda v: NA if not np.isfinite(v) else f"{v:.{digits}f}"))
    best = frame.eq(frame.max(axis=0)) if highlight else pd.DataFrame(False, frame.index, frame.columns)
    css = np.where(best, "background-color: #e5e1ff", np.where(frame.isna(), "color: #8a87a3", ""))
    return text.style.apply(lambda _: pd.DataFrame(css, index=frame.index, columns=frame.columns), axis=None)


def _show_table(frame: pd.DataFrame, index_label: str, digits: int = 5, highlight: bool = True) -> None:
    config = {column: st.column_config.TextColumn(alignment="right") for column in frame.columns}
    config["_index"] = st.column_config.TextColumn(
        index_label, width=max(90, 8 * max([len(str(i)) for i in frame.index] + [len(index_label)]) + 24)
    )
    st.dataframe(_styled(frame, digits, highlight), width="stretch", column_config=config)


def main() -> None:
    style.header(
        "Evaluate",
        "Full-ranking metrics on the test split: every held-out item ranked "
        "against the whole catalogue (training and validation items excluded).",
    )
    rec = loaders.recommender()
    ds = rec.dataset
    result = loaders.ranking("test")
    m = result.metrics
    c = st.columns(5)
    c[0].metric("AUC", f"{m['auc']:.4f}")
    c[1].metric("Recall@20", f"{m.get('recall@20', np.nan):.4f}")
    c[2].metric("nDCG@20", f"{m.get('ndcg@20', np.nan):.4f}")
    c[3].metric(
        "Cold-item AUC",
        f"{m['auc_cold']:.4f}" if np.isfinite(m.get("auc_cold", np.nan)) else "n/a",
        help="Users whose test item has no training interaction",
    )
    c[4].metric("Users evaluated", f"{int(m['users']):,}", help=f"{int(m['cold_users']):,} with a cold test item")

    run, _, data = key = loaders.recommender_key()
    key += (paths.dataset_stamp(data),)  # what the numbers below are computed from
    st.subheader(
        "Model and baselines",
        anchor=False,
        help="Trained here on the same split and triplet sampler. Popularity: training interaction "
        "counts. BPR-MF: its L2 (0.001 to 1) and its epoch chosen on validation AUC, as this "
        "model's best.pt is (docs/evaluation.md).",
    )
    ready = loaders.baselines_ready("test")
    slot = st.empty()  # the model alone first (unless the baselines are cached), then with them
    if not ready:
        with slot.container():
            _comparison({"dvbpr": m}, key)
    note = st.empty()

    if reference.applies(ds.name):
        st.subheader("Tutorial reference (Wikimedia Commons)", anchor=False)
        ref = pd.DataFrame.from_dict(
            {name: {COLUMNS[k]: v for k, v in row.items()} for name, row in reference.TUTORIAL.items()}, orient="index"
        )
        ref.loc["this model (dvbpr)"] = [m.get(k, np.nan) for k in reference.METRICS]
        _show_table(ref.astype(float), "model", highlight=False)

    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Per-user AUC", anchor=False)
        hist = figures.cached_figure("ev_hist", key, lambda: _auc_histogram(result.per_user["auc"]))
        figures.chart(hist, key="ev_hist")
    with right:
        st.subheader("Validation metrics over epochs", anchor=False)
        curves = figures.cached_figure(
            "ev_curves", (run, paths.metrics_stamp(run)), lambda: _curves(loaders.metrics(run))
        )
        if curves is None:
            st.caption("This run has no per-epoch validation records.")
        else:
            figures.chart(curves, key="ev_curves")

    _embedding_health()
    _compare_runs()

    try:
        with (
            note,
            st.spinner(
                "Training BPR-MF (one model per L2, the best on validation kept) and evaluating "
                "the baselines (once per dataset; on a busy CPU this can take a few minutes)…",
                show_time=True,
            ),
        ):
            baselines = loaders.baselines("test")
    except Exception as exc:  # noqa: BLE001 - the model's numbers stay on screen
        with note.container():
            errors.show_exception(exc)
        return
    note.empty()
    with slot.container():
        _comparison({"dvbpr": m, **{name: r.metrics for name, r in baselines.items()}}, key)


def _embedding_health() -> None:
    """Whether phi (the CNN's item embedding) is collapsed, and what its neighbourhoods encode
    (dvbpr.diagnostics.embedding_report)."""
    st.subheader("Embedding health", anchor=False)
    try:
        r = loaders.embedding_report()
    except Exception as exc:  # noqa: BLE001 - the metrics above stay on screen
        errors.show_exception(exc)
        return
    pr, K, dup = r["participation_ratio"], r["K"], r["near_duplicate_share"]
    shares = r["variance_share"]
    metrics = [
        (
            "Participation ratio",
            f"{pr:.1f} of {K}",
            "Effective number of dimensions of the visual embedding phi: (sum s²)² / sum s⁴ of its "
            "singular values; 1 for a line, K when every dimension is used equally",
        ),
        (
            "Near-duplicate pairs",
            f"{dup:.2%}",
            f"Share of item pairs whose embeddings have cosine > {r['near_duplicate_threshold']:g}",
        ),
    ]
    metrics += [
        (
            f"Variance in top {k}",
            f"{share:.1%}",
            f"Share of phi's variance in its top {k} principal component" + ("s" if k != "1" else ""),
        )
        for k, share in shares.items()
    ]
    per_row = 3  # the labels stay whole at a third of the page
    for start in range(0, len(metrics), per_row):
        for col, (label, value, help_text) in zip(st.columns(per_row), metrics[start : start + per_row]):
            col.metric(label, value, help=help_text)
    if r["collapsed"]:  # participation ratio under 10 or over 1% near duplicates
        st.warning(
            f"The visual embedding looks collapsed: it uses about {pr:.1f} of its {K} dimensions and "
            f"{dup:.1%} of item pairs are near duplicates. Similar items, the embedding map and "
            "cold-start rankings can only tell items apart along those few directions."
        )
    dead = r.get("dead_units") or {}
    if dead:
        st.caption(
            f"Dead ReLU units (never active on {r['dead_unit_images']} catalogue images): "
            + ", ".join(f"{name} {share:.0%}" for name, share in dead.items())
        )
    colour = r.get("colour_coherence")
    if colour:
        st.caption(
            f"Colour in the data: {colour_summary(colour)}. Similarity: the Bhattacharyya coefficient of "
            "two colour histograms, background left out."
        )
        note = colour_note(colour, r.get("colour_stream", False))
        if note:
            st.info(note + ".")
    agreement = r.get("neighbour_agreement") or {}
    probes = r.get("linear_probe") or {}
    st.markdown("**What phi encodes**")
    if agreement:
        rows = {
            name: {
                "neighbour": f"{a['agreement']:.1%}",
                "chance": f"{a['chance']:.1%}",
                "ratio": f"{a['agreement'] / a['chance']:.2f}" if a["chance"] else NA,
                "linear read-out": f"{probes[name]['accuracy']:.1%}" if name in probes else NA,
                "majority": f"{probes[name]['majority']:.1%}" if name in probes else NA,
                "items": f"{a['items']:,}",
            }
            for name, a in agreement.items()
        }
        _text_table(rows, "column")
        st.caption(
            "Neighbour: share of items whose nearest item by cosine of phi has the same value, against "
            "two random items (chance). Linear read-out: held-out accuracy of a softmax regression from "
            "phi, against always guessing the commonest value: a user's θ can only use what lies along "
            "straight directions."
        )
    else:
        st.caption("items.csv has no column with a few repeated values to compare neighbours on.")
    lifts = r.get("taste_lifts")
    if lifts:
        k = r.get("taste_k", 20)
        st.markdown(f"**Hidden tastes in the top-{k} lists**")
        rows = {
            name: {
                f"top-{k}": f"{t['top_share']:.1%}",
                "catalogue": f"{t['catalogue_share']:.1%}",
                "lift": f"{t['lift']:.2f}",
                "interactions": f"{t['interactions_share']:.1%}",
                "interactions' lift": f"{t['interactions_lift']:.2f}",
            }
            for name, t in lifts.items()
        }
        _text_table(rows, "taste")
        st.caption(
            "Share of a user's recommendations in their hidden favourite values, against the "
            "catalogue's share (lift = ratio); the training interactions' own lift is what a model "
            "could learn."
        )


def _compare_runs() -> None:
    """Runs of the active dataset side by side: metrics, validation curves, per-user AUC, and
    each run's paired per-user difference to the first with a bootstrap interval."""
    st.subheader("Compare runs", anchor=False)
    data = loaders.require_dataset()
    runs = [r for r in paths.list_models() if paths.run_dataset_name(paths.models_root() / r) == data.name]
    if len(runs) < 2:
        train_more = " Train another on the Train page (another seed, architecture or schedule)."
        more = "" if public.public_mode() else train_more
        st.info(
            f"Comparing needs at least two runs trained on {data.name}; there is {len(runs)}.{more}",
            icon=":material/compare_arrows:",
        )
        return
    active = state.active_model()
    default = [active, *[r for r in runs if r != active]][:2] if active in runs else runs[:2]
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    chosen = left.multiselect(
        "Runs",
        runs,
        default=default,
        key=W_CMP_RUNS,
        help="Runs of this dataset; the first chosen is the reference every other run is compared with",
    )
    baselines = right.checkbox("With baselines", key=W_CMP_BASELINES, help="Also popularity and BPR-MF (trained once)")
    if st.button("Compare", key="ev_cmp_go", icon=":material/compare_arrows:", disabled=len(chosen) < 2):
        st.session_state[CMP_SHOWN] = (tuple(chosen), baselines)
    shown = st.session_state.get(CMP_SHOWN)
    if not shown or not set(shown[0]) <= set(runs):
        st.caption("Choose two or more runs and press Compare.")
        return
    try:
        with st.spinner(f"Evaluating {len(shown[0])} runs on every test user…", show_time=True):
            c, key = loaders.comparison(shown[0], shown[1], COMPARE_K)
    except Exception as exc:  # noqa: BLE001 - the rest of the page stays on screen
        errors.show_exception(exc)
        return
    _show_table(_table(c.metrics, COMPARE_COLUMNS), "run")
    rows = {
        name: {
            column: cell
            for metric, label in (("auc", "AUC"), (f"recall@{c.k}", f"R@{c.k}"))
            for column, cell in _diff_cells(c.diffs[name][metric], label, c.level).items()
        }
        for name in c.names[1:]
    }
    st.markdown(f"**Difference to {c.reference}, user by user**")
    _text_table(rows, "run")
    st.caption(
        f"Mean over the {len(c.users):,} test users of (run - {c.reference}), with a {c.level:.0%} percentile "
        f"bootstrap interval ({c.n_boot:,} resamples of the users). An interval that excludes 0 is a "
        "difference larger than the choice of users explains."
    )
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**Validation AUC over epochs**")
        curves = figures.cached_figure("ev_cmp_curves", key, lambda: _overlaid_curves(c))
        if curves is None:
            st.caption("None of these runs has per-epoch validation records.")
        else:
            figures.chart(curves, key="ev_cmp_curves")
    with right:
        st.markdown("**Per-user test AUC**")
        figures.chart(figures.cached_figure("ev_cmp_auc", key, lambda: _auc_boxes(c)), key="ev_cmp_auc")


def _diff_cells(d: PairedDiff, label: str, level: float) -> dict[str, str]:
    """A difference as table cells: its mean, its interval and what the interval says."""
    if not d.users:
        return {f"{label} diff": NA, f"{label} {level:.0%} CI": NA, f"{label}: verdict": NA}
    verdict = ("better" if d.low > 0 else "worse") if d.excludes_zero else "within noise"
    return {
        f"{label} diff": f"{d.mean:+.4f}",
        f"{label} {level:.0%} CI": f"[{d.low:+.4f}, {d.high:+.4f}]",
        f"{label}: verdict": verdict,
    }


def _overlaid_curves(c: Comparison) -> go.Figure | None:
    """Validation AUC per epoch, one line per run (None when no run recorded any)."""
    fig = go.Figure()
    for n, (name, records) in enumerate(c.curves.items()):
        pts = [(r["epoch"], r["val_auc"]) for r in records if "val_auc" in r]
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    mode="lines+markers",
                    name=name,
                    line=dict(color=figures.PALETTE[n % len(figures.PALETTE)]),
                )
            )
    if not fig.data:
        return None
    fig.update_xaxes(dtick=1)
    fig.update_layout(
        **PANEL,
        xaxis_title="epoch",
        yaxis_title="validation AUC",
        legend=dict(orientation="h", y=1.12, x=0),
    )
    return fig


def _auc_boxes(c: Comparison) -> go.Figure:
    """The distribution of per-user test AUC, one box per run (its mean dashed)."""
    fig = go.Figure()
    for n, name in enumerate(c.names):
        auc = c.per_user[name]["auc"]
        fig.add_trace(
            go.Box(
                y=auc[np.isfinite(auc)],
                name=name,
                boxmean=True,
                marker_color=MODEL_COLOURS.get(name, figures.PALETTE[n % len(figures.PALETTE)]),
            )
        )
    fig.update_layout(
        **PANEL,
        yaxis_title="AUC of the user's test item",
        showlegend=False,
    )
    return fig


def _text_table(rows: dict[str, dict[str, str]], index_label: str) -> None:
    frame = pd.DataFrame.from_dict(rows, orient="index")
    config = {column: st.column_config.TextColumn(alignment="right") for column in frame.columns}
    config["_index"] = st.column_config.TextColumn(index_label)
    st.dataframe(frame, width="stretch", column_config=config)


def _auc_histogram(auc: np.ndarray) -> go.Figure:
    auc = auc[np.isfinite(auc)]
    hist = go.Figure(
        go.Histogram(x=auc, nbinsx=40, marker_color="#5b4bdb", hovertemplate="AUC %{x}<br>%{y} users<extra></extra>")
    )
    hist.add_vline(
        x=float(np.mean(auc)) if len(auc) else 0.5,
        line_dash="dot",
        line_color="#e8590c",
        annotation_text=f"mean {np.mean(auc):.3f}" if len(auc) else "",
    )
    hist.update_layout(
        **PANEL,
        xaxis_title="AUC of the user's test item",
        yaxis_title="users",
        bargap=0.04,
    )
    return hist


def _curves(records: list[dict]) -> go.Figure | None:
    """The validation metrics per epoch (None when the run recorded none)."""
    epochs = [r for r in records if r.get("type") == "epoch"]
    keys = [
        k
        for k in ("val_auc", "val_recall@20", "val_ndcg@20", "val_rr")
        if any(isinstance(r.get(k), (int, float)) for r in epochs)
    ]
    if not keys:
        return None
    curves = go.Figure()
    for n, k in enumerate(keys):
        pts = [(r["epoch"], r[k]) for r in epochs if isinstance(r.get(k), (int, float))]
        curves.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="lines+markers",
                name=k.removeprefix("val_"),
                line=dict(color=figures.PALETTE[n]),
            )
        )
    curves.update_xaxes(dtick=1)
    curves.update_layout(
        **PANEL,
        xaxis_title="epoch",
        legend=dict(orientation="h", y=1.12, x=0),
    )
    return curves


def _comparison(table: dict[str, dict[str, float]], key: tuple) -> None:
    """The metrics table and bar chart of `table`; `key` names what it was computed from."""
    _show_table(_table(table), "model")
    fig = figures.cached_figure("ev_bars", key + tuple(table), lambda: _bars(table))
    figures.chart(fig, key=f"ev_bars_{len(table)}")


def _bars(table: dict[str, dict[str, float]]) -> go.Figure:
    fig = go.Figure()
    for name in table:
        fig.add_trace(
            go.Bar(
                name=name,
                x=[COLUMNS[k] for k in CHART_METRICS],
                y=[table[name].get(k, np.nan) for k in CHART_METRICS],
                marker_color=MODEL_COLOURS.get(name, "#888"),
            )
        )
    fig.update_layout(
        barmode="group",
        height=340,
        margin=dict(l=4, r=4, t=10, b=4),
        legend=dict(orientation="h", y=1.08, x=0),
        yaxis_title="value",
    )
    return fig


shell.run_page(main)
