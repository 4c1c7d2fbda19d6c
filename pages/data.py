"""Data: the datasets under the data root, their statistics and images, and importing new ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dvbpr import importers
from dvbpr.data import load_dataset
from dvbpr.errors import DVBPRError
from dvbpr.fsutil import safe_name
from ui import errors, figures, grid, loaders, paths, public, shell, state, style

SAMPLE = 24


def _overview(datasets: list[str]) -> None:
    rows = []
    for name in datasets:
        path = paths.data_root() / name
        try:
            info = loaders.dataset_tables(path)["info"]
            rows.append(
                {
                    "dataset": name,
                    "users": info["users"],
                    "items": info["items"],
                    "interactions": info["interactions"],
                    "cold items": info["cold_items"],
                    "categories": info["categories"],
                    "status": "ok",
                }
            )
        except DVBPRError as exc:
            rows.append({"dataset": name, "status": f"invalid: {exc}"})
    frame = pd.DataFrame(rows)
    frame["active"] = frame["dataset"] == state.active_data()
    st.dataframe(
        frame, hide_index=True, width="stretch", column_config={"active": st.column_config.CheckboxColumn("active")}
    )


def _histogram(values: np.ndarray, title: str, xlabel: str, log_y: bool = False) -> go.Figure:
    fig = go.Figure(
        go.Histogram(x=values, nbinsx=50, marker_color="#5b4bdb", hovertemplate=xlabel + " %{x}<br>%{y}<extra></extra>")
    )
    fig.update_layout(
        title=dict(text=title, font=dict(size=14)),
        height=280,
        bargap=0.04,
        margin=dict(l=4, r=4, t=36, b=4),
        xaxis_title=xlabel,
        plot_bgcolor=figures.PLOT_BG,
        yaxis=dict(type="log", dtick=1, title="count") if log_y else dict(title="count"),
    )
    return fig


def _categories(counts: dict[str, int]) -> go.Figure:
    cats = sorted(counts, key=counts.get, reverse=True)
    fig = go.Figure(go.Bar(x=[counts[k] for k in cats], y=cats, orientation="h", marker_color="#18a38a"))
    fig.update_layout(
        title=dict(text="Items per category", font=dict(size=14)),
        height=280,
        margin=dict(l=4, r=4, t=36, b=4),
        plot_bgcolor=figures.PLOT_BG,
        yaxis=dict(autorange="reversed"),
    )
    return fig


def _inspect(name: str) -> None:
    path = paths.data_root() / name
    tables = loaders.dataset_tables(path)
    info = tables["info"]
    c = st.columns(4)
    c[0].metric("Users", f"{info['users']:,}")
    c[1].metric("Items", f"{info['items']:,}")
    c[2].metric("Interactions", f"{info['interactions']:,}")
    c[3].metric("Categories", f"{info['categories']:,}")
    c = st.columns(4)
    c[0].metric("Train", f"{info['train']:,}")
    c[1].metric("Validation", f"{info['validation']:,}")
    c[2].metric("Test", f"{info['test']:,}")
    c[3].metric("Cold items", f"{info['cold_items']:,}", help="Catalogue items with no training interaction")
    for warning in tables["warnings"]:
        st.warning(warning, icon=":material/warning:")

    key = (str(path), paths.dataset_stamp(path))  # the charts are drawn once per dataset version
    a, b, cc = st.columns(3)
    with a:
        fig = figures.cached_figure(
            "dt_users", key, lambda: _histogram(tables["per_user"], "Interactions per user", "interactions")
        )
        figures.chart(fig, key="dt_users")
    with b:
        fig = figures.cached_figure(
            "dt_pop",
            key,
            lambda: _histogram(tables["popularity"], "Item popularity (training)", "interactions", log_y=True),
        )
        figures.chart(fig, key="dt_pop")
    with cc:
        counts = info["category_counts"]
        if counts:
            fig = figures.cached_figure("dt_cats", key, lambda: _categories(counts))
            figures.chart(fig, key="dt_cats")
        else:
            st.caption("No categories in items.csv.")

    head, button = st.columns([5, 1], vertical_alignment="bottom")
    head.subheader("Sample of the catalogue", anchor=False)
    if button.button("Shuffle", icon=":material/shuffle:", key="dt_shuffle"):
        st.session_state["dt_seed"] = st.session_state.get("dt_seed", 0) + 1
    ds = loaders.dataset(path)
    rng = np.random.default_rng(st.session_state.get("dt_seed", 0))
    picks = np.sort(rng.choice(ds.n_items, min(SAMPLE, ds.n_items), replace=False))
    grid.image_grid(grid.catalogue_cards(ds, picks), min_px=112)


# ------------------------------------------------------------------------------- importing
def _target(name: str) -> Path:
    """The new dataset's folder; every import asks for it before reading anything."""
    public.refuse("Importing a dataset")
    safe_name(name.strip(), "dataset name")
    target = paths.data_root() / name.strip()
    if target.exists():
        raise DVBPRError(f"{paths.display(target)} already exists: choose another name")
    return target


def _cannot_import(exc: DVBPRError) -> None:
    """An import's error with the hint for its class; its lines kept (markdown would join them)."""
    errors.show_problem("Cannot import: " + str(exc).replace("\n", "  \n"), errors.hint_for(exc)[0])


def _import_folder() -> None:
    with st.form("imp_folder", border=False):
        src = st.text_input(
            "Dataset folder on this machine",
            key="imp_src",
            help="A folder with interactions.csv, optionally items.csv and images/",
        )
        name = st.text_input("Name", key="imp_name", help=f"Copied to {paths.display(paths.data_root())}/<name>")
        go_ = st.form_submit_button("Validate and import", icon=":material/download:")
    if not go_:
        return
    try:
        if not src.strip():
            raise DVBPRError("give the path of a dataset folder")
        target = _target(name)
    except DVBPRError as exc:
        _cannot_import(exc)
        return
    if _with_progress(lambda cb: importers.import_folder(src.strip(), target, progress_callback=cb)):
        ds = load_dataset(target)
        st.success(f"Imported **{target.name}**: {ds.n_users:,} users, {ds.n_items:,} items.")
        for warning in ds.warnings:
            st.warning(warning)


def _with_progress(run) -> bool:
    bar = st.progress(0.0, text="starting")
    try:
        run(lambda f, m="": bar.progress(min(max(float(f), 0.0), 1.0), text=str(m)))
    except DVBPRError as exc:
        bar.empty()
        _cannot_import(exc)
        return False
    bar.progress(1.0, text="done")
    return True


def _import_kang() -> None:
    with st.form("imp_kang", border=False):
        file = st.text_input("Kang et al. .npy file on this machine", key="imp_npy")
        name = st.text_input("Name", key="imp_npy_name")
        trust = st.checkbox(
            "The file is from a source I trust (it is a Python pickle: loading it can run code)", key="imp_trust"
        )
        skip = st.checkbox("Leave out items without image bytes (and their interactions)", key="imp_skip")
        go_ = st.form_submit_button("Import", icon=":material/download:")
    if go_:
        try:
            target = _target(name)
            if not Path(file.strip()).is_file():
                raise DVBPRError(f"no file at {file.strip() or '(empty)'}")
        except DVBPRError as exc:
            _cannot_import(exc)
            return
        if _with_progress(
            lambda cb: importers.import_kang_npy(
                file.strip(), target, trust_pickle=trust, progress=False, progress_callback=cb, skip_missing_images=skip
            )
        ):
            st.success(f"Imported **{target.name}**.")


def _import_visrec() -> None:
    with st.form("imp_visrec", border=False):
        csv = st.text_input("VisRec interactions CSV on this machine", key="imp_csv")
        images = st.text_input("Images folder", key="imp_imgs")
        name = st.text_input("Name", key="imp_visrec_name")
        go_ = st.form_submit_button("Import", icon=":material/download:")
    if go_:
        try:
            target = _target(name)
            if not Path(csv.strip()).is_file():
                raise DVBPRError(f"no file at {csv.strip() or '(empty)'}")
            if not Path(images.strip()).is_dir():
                raise DVBPRError(f"no folder at {images.strip() or '(empty)'}")
        except DVBPRError as exc:
            _cannot_import(exc)
            return
        if _with_progress(
            lambda cb: importers.import_visrec(
                csv.strip(), images.strip(), target, progress=False, progress_callback=cb
            )
        ):
            st.success(f"Imported **{target.name}**.")


def main() -> None:
    style.header(
        "Data",
        f"Dataset folders under {paths.display(paths.data_root())}/: statistics, images, and importing new ones.",
    )
    datasets = paths.list_datasets()
    if datasets:
        _overview(datasets)
        c1, c2, _ = st.columns([2, 1.3, 3], vertical_alignment="bottom")
        ss = st.session_state
        if ss.get("dt_pick") not in datasets:
            ss["dt_pick"] = state.active_data() if state.active_data() in datasets else datasets[0]
        pick = c1.selectbox("Inspect", datasets, key="dt_pick")
        if pick != state.active_data() and c2.button("Make it the active dataset", icon=":material/check_circle:"):
            state.set_data(pick)
            st.rerun()
        with errors.guard():
            _inspect(pick)
    else:
        errors.show_problem(
            f"No dataset under {paths.display(paths.data_root())}/ yet.", "Import one below.", public_hint=""
        )

    st.subheader("Import a dataset", anchor=False)
    if public.public_mode():
        public.note("Importing datasets")
        return
    tabs = {"Dataset folder": _import_folder, "Kang et al. .npy": _import_kang, "VisRec CSV + images": _import_visrec}
    for tab, form in zip(st.tabs(list(tabs)), tabs.values(), strict=True):
        with tab, errors.guard():
            form()


shell.run_page(main)
