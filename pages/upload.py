"""Upload: cold start for a new image - who would like it, what it resembles, where it sits.

The image goes through the CNN once (loaders.cold_item: Recommender.cold_item, cached per image):
its pixels, phi and every user's score serve the user list, the histogram, the similar items and
the map (rank_users, similar_items and embedmap.place take it without embedding it again). For a
user chosen from the list, a heatmap shows where in the image their visual score comes from; an
uploaded image can be added to the catalogue (dvbpr.catalogue.add_item), and the model serves it
at once as a cold item.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dvbpr.catalogue import add_item
from dvbpr.embedmap import place
from dvbpr.errors import DVBPRError, ImageError
from dvbpr.images import FORMAT_NAMES
from ui import errors, figures, grid, loaders, maps, public, shell, state, style

HISTORY_THUMBS = 8
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "gif"]  # what dvbpr.images.load_image reads (GIF: first frame)


def _image_input(rec) -> tuple[bytes, str, str | None] | None:
    """(bytes, name, catalogue item id or None) of the chosen image, or None when none yet."""
    ds = rec.dataset
    source = (
        st.segmented_control(
            "Image source", ["Upload a file", "Catalogue item"], default="Upload a file", key="up_source"
        )
        or "Upload a file"
    )
    if source == "Upload a file":
        upload = st.file_uploader(
            # the limit is the server's own (server.maxUploadSize in .streamlit/config.toml)
            f"An image ({FORMAT_NAMES}, up to {st.get_option('server.maxUploadSize')} MB)",
            type=UPLOAD_TYPES,
            key="up_file",
        )
        if upload is None:
            st.info(
                "Upload an image to see which users the model would show it to, the catalogue "
                "items it resembles and its place on the embedding map.",
                icon=":material/upload:",
            )
            return None
        return upload.getvalue(), upload.name, None
    titles = ds.item_titles
    item = st.selectbox(
        "Catalogue item",
        ds.items.ids,
        key="up_item",
        format_func=lambda i: f"{i} · {(titles[ds.items.index(i)] if titles else '') or ''}",
    )
    path = ds.image_paths[ds.items.index(item)]
    try:
        return path.read_bytes(), path.name, item
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from None


def main() -> None:
    style.header("Upload", "Cold start: score an image the model has never seen against every user.")
    notice = state.pop_notice()
    if notice:
        st.success(notice, icon=":material/add_photo_alternate:")
    rec = loaders.recommender()
    ds = rec.dataset
    chosen = _image_input(rec)
    if chosen is None:
        return
    raw, name, item_id = chosen
    try:
        item = loaders.cold_item(raw, name)
    except ImageError as exc:  # its message names the file and says what is wrong, in one line
        errors.show_problem(str(exc), f"Upload a {FORMAT_NAMES} image.")
        return
    size = item.pixels.shape[0]

    top_col, hist_col = st.columns([2, 3], gap="large")
    with top_col:
        a, b = st.columns(2)
        with a:
            st.markdown("**Your image**" if item_id is None else f"**{item_id}**")
            st.image(loaders.upload_preview(raw, name), width="stretch")
        with b:
            st.markdown("**As the model sees it**")
            st.image(item.pixels, width="stretch", caption=f"{size}×{size}, padded to a white square")
    with hist_col:
        k = st.slider("Users to list", 5, 30, 10, key="up_k")
        users, scores = rec.rank_users(item, k)
        figures.chart(_histogram(item.user_scores, users, scores), key="up_hist")

    st.subheader(
        "Users who would rank it highest",
        anchor=False,
        help="theta_u · phi(image) + the mean item bias, as for a cold item",
    )
    st.html(_user_rows(rec, users, scores))
    _explanation(raw, name, users)
    if item_id is None:
        _add_to_catalogue(rec, raw)

    sim_col, map_col = st.columns([3, 2], gap="large")
    with sim_col:
        st.subheader(
            "Visually most similar catalogue items", anchor=False, help="Nearest items by cosine similarity of phi"
        )
        sim_ids, sims = (
            rec.similar_items(item_id=item_id, k=12) if item_id is not None else rec.similar_items(image=item, k=12)
        )
        titles, cats = ds.item_titles, ds.item_categories
        grid.image_grid(
            [
                grid.Card(
                    ds.image_paths[ds.items.index(i)],
                    (titles[ds.items.index(i)] if titles else "") or i,
                    [f"{i} · {(cats[ds.items.index(i)] if cats else '') or '-'}", f"cosine {s:.4f}"],
                    badge=f"#{r}",
                )
                for r, (i, s) in enumerate(zip(sim_ids, sims, strict=True), 1)
            ],
            min_px=118,
        )
    with map_col:
        st.subheader(
            "On the embedding map",
            anchor=False,
            help="Placed at the similarity-weighted mean of its 10 nearest items' map positions",
        )
        _map(rec, item.phi, sim_ids, item_id)


def _explanation(raw: bytes, name: str, users: list[str]) -> None:
    st.subheader(
        "Where a user's taste looks",
        anchor=False,
        help="The pixels that raise the user's visual score θᵤ·φ(image): gradient × input against a "
        "white canvas, hottest where they raise it most",
    )
    pick, shown = st.columns([1, 3], vertical_alignment="top")
    user = pick.selectbox(
        "User", users, index=None, placeholder="Choose a user from the list above", key="up_explain_user"
    )
    if user is None:
        return
    uri, score = loaders.upload_explanation(raw, name, user)
    with shown:
        grid.image_grid([grid.Card(uri, user, [f"visual score {score:.3f}"], tooltip=f"{name} for {user}")], 220)


def _add_to_catalogue(rec, raw: bytes) -> None:
    if public.public_mode():  # it would change the catalogue every visitor sees
        public.note("Adding images to the catalogue")
        return
    st.subheader(
        "Add to the catalogue",
        anchor=False,
        help="Writes the image and a row of items.csv into the dataset folder. Every model trained on "
        "it serves the item at once as a cold item (its visual term and the mean item bias), without "
        "retraining: in recommendations, on the map and on the Data page.",
    )
    with st.form("up_add", border=False):
        a, b, c, d = st.columns([2, 2, 3, 2], vertical_alignment="bottom")
        item_id = a.text_input("Item id", key="up_add_id", placeholder="default: item-<image hash>")
        category = b.text_input("Category", key="up_add_category")
        title = c.text_input("Title", key="up_add_title")
        submitted = d.form_submit_button("Add to catalogue", icon=":material/add:", width="stretch")
    if not submitted:
        return
    public.refuse("Adding an item to the catalogue")
    try:
        grown = add_item(rec.dataset.root, raw, item_id=item_id.strip() or None, category=category, title=title)
    except DVBPRError as exc:
        errors.show_exception(exc)
        return
    state.set_notice(
        f"Added **{grown.items.ids[-1]}** to the catalogue of {grown.name} ({grown.n_items:,} items). "
        "The model serves it at once as a cold item: in the top 20 of the users who score it above "
        "their last one, on the map and on the Data page."
    )
    st.rerun()


def _histogram(all_scores: np.ndarray, users: list[str], scores: np.ndarray) -> go.Figure:
    fig = go.Figure(
        go.Histogram(
            x=all_scores,
            nbinsx=60,
            marker_color="#c9c6da",
            name="all users",
            hovertemplate="score %{x}<br>%{y} users<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=scores,
            y=np.zeros(len(scores)),
            mode="markers",
            name=f"top {len(users)}",
            text=users,
            hovertemplate="%{text}: %{x:.3f}<extra></extra>",
            marker=dict(color="#e8590c", size=10, symbol="triangle-up"),
        )
    )
    if len(scores):
        fig.add_vline(
            x=float(scores[-1]),
            line_dash="dot",
            line_color="#e8590c",
            annotation_text=f"top {len(users)}",
            annotation_position="top",
        )
    fig.update_layout(
        height=300,
        margin=dict(l=4, r=4, t=30, b=4),
        bargap=0.05,
        showlegend=False,
        xaxis_title=f"predicted score over all {len(all_scores):,} users",
        yaxis_title="users",
        plot_bgcolor=figures.PLOT_BG,
    )
    return fig


def _user_rows(rec, users: list[str], scores: np.ndarray) -> str:
    ds = rec.dataset
    head = (
        '<div class="dv-row dv-head"><div>#</div><div>user</div><div>score</div>'
        f"<div>recent history (last {HISTORY_THUMBS})</div></div>"
    )
    rows = []
    for r, (user, score) in enumerate(zip(users, scores, strict=True), 1):
        history = rec.user_history(user)[::-1][:HISTORY_THUMBS]
        idx = ds.items.indices(history) if history else []
        titles = [(ds.item_titles[i] if ds.item_titles else "") or ds.items.id(i) for i in idx]
        strip = grid.strip([ds.image_paths[i] for i in idx], px=46, tooltips=titles)
        rows.append(
            f'<div class="dv-row"><div>{r}</div><div><b>{html.escape(user)}</b></div>'
            f"<div>{score:.3f}</div><div>{strip}</div></div>"
        )
    return "<div>" + head + "".join(rows) + "</div>"


def _map(rec, phi_new: np.ndarray, sim_ids: list[str], item_id: str | None) -> None:
    run, _, _ = loaders.recommender_key()
    coords, map_key = loaders.embedding_map(run)
    if coords is None or len(coords) != rec.dataset.n_items:
        st.info(
            "The embedding map of this model is not computed yet. Open the Embeddings page to "
            "compute it (in the background, about a minute).",
            icon=":material/scatter_plot:",
        )
        st.page_link("pages/embeddings.py", label="Open the Embeddings page", icon=":material/arrow_forward:")
        return
    x, y = place(coords, rec.item_embeddings(), phi_new, k=10)
    layers = [
        {"idx": rec.dataset.items.indices(sim_ids), "name": "most similar", "color": "#5b4bdb", "size": 8},
        {
            "xy": [[x, y]],
            "name": "this image" if item_id is None else item_id,
            "color": "#e8590c",
            "size": 18,
            "symbol": "star",
        },
    ]
    picture = maps.cached_catalogue_picture(map_key, coords)
    maps.show(maps.highlight_figure(coords, loaders.item_hover(), layers, height=420, picture=picture), key="up_map")


shell.run_page(main)
