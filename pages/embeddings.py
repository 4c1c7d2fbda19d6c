"""Embeddings: a UMAP of the learned visual embeddings phi(X_i), computed in the background."""

from __future__ import annotations

import numpy as np
import streamlit as st

from dvbpr import embedmap
from ui import errors, figures, grid, loaders, maps, paths, public, shell, state, style

MAX_SELECTED = 60


@st.fragment(run_every=2)
def _progress(run: str) -> None:
    """Polls the background map job; reruns the whole page when the map is ready or failed."""
    with errors.guard():
        status = embedmap.map_status(run)
        if status["state"] in ("done", "failed"):
            st.rerun()
        fraction = float(status.get("fraction") or 0.0)
        st.progress(
            min(max(fraction, 0.0), 1.0),
            text=f"Computing the map in the background: {status.get('message') or 'starting'}",
        )
        st.caption("The page stays usable meanwhile; the map is cached on disk for this checkpoint.")


def _selected_indices(event) -> list[int]:
    try:
        points = event.selection.points
    except AttributeError:
        return []
    out = []
    for p in points:
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        if cd is not None:
            out.append(int(cd))
    return list(dict.fromkeys(out))


def main() -> None:
    style.header(
        "Embeddings",
        "Every item placed by a 2-D UMAP of its learned visual embedding "
        "φ(Xᵢ): items that look alike to the model sit together.",
    )
    rec = loaders.recommender()
    run, mtime, data = loaders.recommender_key()
    coords, map_key = loaders.embedding_map(run)
    if coords is None:
        status = embedmap.map_status(run)
        if status["state"] == "failed":
            errors.show_problem(
                f"Computing the map failed: {status.get('message') or 'no message'}",
                f"Try again; if it fails again, run `python -m dvbpr.embedmap {paths.display(run)}` in a terminal "
                "to see the details.",
            )
            # a stranger could relaunch a failing job over and over: only the operator retries
            if public.public_mode():
                public.note("Computing the map again")
            elif st.button("Compute the map again", icon=":material/refresh:"):
                public.refuse("Computing the map again")
                embedmap.start_map_job(run, data)
                st.rerun()
            return
        if status["state"] != "done":
            # also in public mode: one job per checkpoint at a time, and its map serves everyone
            embedmap.start_map_job(run, data)  # no-op when a job is already running
            _progress(run)
            return
        coords, map_key = loaders.embedding_map(run)  # written since
    ds = rec.dataset
    if coords is None or len(coords) != ds.n_items:
        errors.show_problem(
            "The cached map does not match this dataset's items.",
            "Pick the dataset this model was trained on in the sidebar.",
        )
        return
    hover = loaders.item_hover()
    # the figures depend on the map, the model and the dataset: built once per colouring
    key = (map_key, run, mtime, data, paths.dataset_stamp(data))

    tab_map, tab_thumbs = st.tabs([":material/scatter_plot: Map", ":material/grid_view: Thumbnail view"])
    with tab_map:
        c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
        colour = (
            c1.segmented_control(
                "Colour by",
                ["Category", "Popularity", "Cold items", "User's score"],
                default="Category",
                key="emb_colour",
            )
            or "Category"
        )
        if colour == "Category":

            def build():
                values = np.array([c or "(none)" for c in (ds.item_categories or [""] * ds.n_items)], dtype=object)
                return maps.map_figure(coords, hover, "categorical", values)
        elif colour == "Popularity":

            def build():
                return maps.map_figure(
                    coords,
                    hover,
                    "numeric",
                    np.log1p(ds.item_popularity),
                    colour_label="log(1 + training interactions)",
                )
        elif colour == "Cold items":

            def build():
                values = np.where(ds.cold_items, "cold (no training interaction)", "warm").astype(object)
                return maps.map_figure(coords, hover, "categorical", values)
        else:
            users = rec.users()
            ss = st.session_state
            if ss.get("emb_user") not in users:
                ss["emb_user"] = state.user(users)
            user = c2.selectbox("User", users, key="emb_user")
            state.set_user(user)
            colour = (colour, user)

            def build():
                scores = rec.scores([ds.users.index(user)])[0].cpu().numpy()
                return maps.map_figure(coords, hover, "numeric", scores, colour_label=f"score for {user}")

        fig = figures.cached_figure("embeddings", key + (colour,), build)
        st.caption(
            f"{ds.n_items:,} items. Drag a box or lasso (or click a point) to see the selected "
            "items below; scroll to zoom."
        )
        event = maps.show(fig, key="emb_map", on_select="rerun", selection_mode=("points", "box", "lasso"))
        chosen = _selected_indices(event)
        if chosen:
            st.subheader(f"Selected · {len(chosen):,} item{'s' if len(chosen) != 1 else ''}", anchor=False)
            if len(chosen) > MAX_SELECTED:  # an even sample, not the first trace's items
                keep = np.random.default_rng(0).choice(len(chosen), MAX_SELECTED, replace=False)
                chosen = [chosen[k] for k in sorted(keep)]
                st.caption(f"Showing {MAX_SELECTED} of them, sampled at random.")
            grid.image_grid(grid.catalogue_cards(ds, chosen), min_px=120)
        else:
            st.caption("No selection yet.")
    with tab_thumbs:
        cells = st.slider(
            "Grid cells across",
            16,
            64,
            36,
            step=4,
            key="emb_cells",
            help="Each cell shows the item nearest to its centre on the map",
        )
        canvas = maps.mosaic(rec.store.array, loaders.recommender_key(), coords, cells=cells, px=40)
        st.image(canvas, caption="The item images laid out by the map (one image per occupied cell)", width="stretch")


shell.run_page(main)
