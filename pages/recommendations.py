"""Recommendations: a user's history, their top 20, the held-out test item and why items rank.

The test item's rank, hit and AUC are the user's row of the Evaluate page's evaluation
(loaders.ranking), so the two pages always agree. A toggle overlays on the test item and the top
20 where in each image the user's visual score comes from (loaders.explanations).
"""

from __future__ import annotations

import random

import numpy as np
import streamlit as st

from ui import grid, loaders, maps, shell, state, style

K = 20


def _pick_random(options: list[str]) -> None:
    current = st.session_state.get("rec_user")
    choices = [u for u in options if u != current] or options
    st.session_state["rec_user"] = random.choice(choices)


def _user_picker(rec, ranking) -> tuple[str, int]:
    users = rec.users()
    per_user = ranking.per_user
    hit_users = set(rec.dataset.users.to_ids(per_user["user"][per_user["best_rank"] <= K]))
    # widths that fit the button's and the toggle's labels in a 1400 px wide window
    c1, c2, c3, c4 = st.columns([2.5, 1.6, 2, 3.5], vertical_alignment="bottom")
    only_hits = c4.toggle(
        f"Only users whose test item is a hit@{K}",
        key="rec_only_hits",
        wrap=True,
        help=f"{len(hit_users):,} of {len(users):,} users have their test item in their top {K}",
    )
    options = [u for u in users if u in hit_users] if only_hits else users
    if not options:
        st.warning(f"No user has their test item in the top {K}; showing all users.")
        options = users
    ss = st.session_state
    if ss.get("rec_user") not in options:
        ss["rec_user"] = state.user(options)
    c1.selectbox(
        "User", options, key="rec_user", help="Type to search. Switch to another user to see their recommendations."
    )
    c2.button("Random user", icon=":material/shuffle:", on_click=_pick_random, args=(options,), width="stretch")
    n_hist = c3.slider(
        "History shown", 5, 50, 10, step=5, key="rec_hist", help="Most recent training interactions shown"
    )
    state.set_user(ss["rec_user"])  # shared with the Embeddings page
    return ss["rec_user"], n_hist


def main() -> None:
    style.header(
        "Recommendations",
        "A user's history, the model's top 20 for them, and the held-out test item they actually picked next.",
    )
    rec = loaders.recommender()
    ranking = loaders.ranking("test")
    ds = rec.dataset
    user, n_hist = _user_picker(rec, ranking)

    history = rec.user_history(user)
    val = rec.held_out(user, "val")
    tests = rec.held_out(user, "test")
    top_ids, top_scores = rec.recommend(user, k=K)
    parts = rec.score_breakdown(user, top_ids) if top_ids else {}
    evaluated = loaders.user_ranking(ranking, ds.users.index(user))  # None: no test item
    if evaluated is not None and evaluated["n_targets"] == 1 and len(tests) == 1:
        test_ranks = {tests[0]: int(evaluated["best_rank"])}  # the evaluation's own rank
    else:  # several test items: each one's rank (the evaluation keeps only the best)
        test_ranks = {t: rec.rank_of(user, t, "test") for t in tests}
    n_candidates = ds.n_items - len(set(history)) - len(set(val) - set(history))

    # ---------------------------------------------------------------------------- metrics
    m = st.columns(4)
    m[0].metric("Training interactions", f"{len(history):,}")
    if tests and evaluated is not None:
        rank, auc = int(evaluated["best_rank"]), float(evaluated["auc"])
        m[1].metric(
            "Test item rank",
            f"{rank:,}",
            help=f"Among {n_candidates:,} candidate items "
            "(everything but the user's training and validation items); 1 is best"
            + (" (the best of the user's test items)." if len(tests) > 1 else "."),
            delta=f"of {n_candidates:,}",
            delta_color="off",
            delta_arrow="off",
        )
        m[2].metric(
            f"Hit@{K}",
            "Yes" if rank <= K else "No",
            delta="in the top 20" if rank <= K else "not in the top 20",
            delta_color="normal" if rank <= K else "inverse",
            delta_arrow="off",
        )
        m[3].metric(
            "User AUC",
            f"{auc:.3f}" if np.isfinite(auc) else "n/a",
            help="The share of the other candidate items ranked below the test item, as on "
            "the Evaluate page (its per-user AUC)",
        )
    else:
        m[1].metric("Test item rank", "-", help="This user has no test item.")
        m[2].metric(f"Hit@{K}", "-")
        m[3].metric("User AUC", "-")

    heat = st.toggle(
        "Where the taste looks",
        key="rec_explain",
        help="A heatmap over the test item and the top 20: the pixels that raise this user's visual "
        "score θᵤ·φ(Xᵢ) (gradient × input against a white canvas), hottest where they raise it most",
    )
    overlays = loaders.explanations(user, list(dict.fromkeys(tests[:6] + top_ids))) if heat else {}

    index = ds.items.index
    titles, cats, images = ds.item_titles, ds.item_categories, ds.image_paths

    def title(i: int) -> str:
        return (titles[i] if titles else "") or ds.items.id(i)

    def cat(i: int) -> str:
        return (cats[i] if cats else "") or ""

    # ------------------------------------------------------- ground truth, history, map
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader(
            "Test item", anchor=False, help="The user's held-out next interaction: what the model should rank high."
        )
        if tests:
            cards = []
            for t in tests[:6]:
                i = index(t)
                r = test_ranks[t]
                hit = r <= K
                cards.append(
                    grid.Card(
                        overlays.get(t, images[i]),
                        title(i),
                        [f"{t} · {cat(i)}", f"rank {r:,} of {n_candidates:,}"],
                        badge="hit" if hit else "miss",
                        badge_kind="hit" if hit else "gt",
                        highlight=True,
                        tooltip=f"{title(i)} ({t}) - rank {r}",
                    )
                )
            grid.image_grid(cards, min_px=150)
        else:
            st.caption("This user has no test item.")
        shown = history[::-1][:n_hist]
        st.subheader(
            f"History · last {len(shown)} of {len(history)}",
            anchor=False,
            help="Training interactions, most recent first",
        )
        grid.image_grid(
            [
                grid.Card(
                    images[index(h)],
                    title(index(h)),
                    [f"{h} · {cat(index(h))}"],
                    badge=f"-{k + 1}",
                    tooltip=f"{title(index(h))} ({h})",
                )
                for k, h in enumerate(shown)
            ],
            min_px=112,
            empty="No training interactions.",
        )
    with right:
        st.subheader(
            "On the embedding map", anchor=False, help="UMAP of the learned visual embeddings phi(X_i) of all items"
        )
        _small_map(rec, history, top_ids, tests)

    # -------------------------------------------------------------------- recommendations
    st.subheader(f"Top {K} recommendations", anchor=False)
    nonzero = {name: v for name, v in parts.items() if name != "total" and np.any(np.abs(v) > 0)}
    style.legend(
        {
            "visual θᵤ·φ(Xᵢ)": grid.COLORS["visual"],
            "collaborative γᵤ·γᵢ": grid.COLORS["collaborative"],
            "item bias βᵢ": grid.COLORS["bias"],
            "ground truth": "#e8590c",
        }
        if "collaborative" in nonzero
        else {"visual θᵤ·φ(Xᵢ)": grid.COLORS["visual"], "item bias βᵢ": grid.COLORS["bias"], "ground truth": "#e8590c"}
    )
    test_set = set(tests)
    cards = []
    for r, (item, score) in enumerate(zip(top_ids, top_scores, strict=True), 1):
        i = index(item)
        breakdown = {name: float(v[r - 1]) for name, v in nonzero.items()}
        gt = item in test_set
        explain = ", ".join(f"{n} {v:+.3f}" for n, v in breakdown.items())
        cards.append(
            grid.Card(
                overlays.get(item, images[i]),
                title(i),
                [f"{item} · score {score:.3f}"],
                badge="ground truth" if gt else f"#{r}",
                badge_kind="gt" if gt else "",
                highlight=gt,
                parts=breakdown,
                tooltip=f"#{r} {title(i)} ({item}, {cat(i)}): score {score:.3f} = {explain}",
            )
        )
    grid.image_grid(cards, min_px=140, empty="No candidate items left for this user.")
    if tests and not test_set & set(top_ids):
        st.caption(f"The test item is not in the top {K} (rank {min(test_ranks.values()):,}).")


def _small_map(rec, history: list[str], top_ids: list[str], tests: list[str]) -> None:
    run, _, _ = loaders.recommender_key()
    coords, map_key = loaders.embedding_map(run)
    if coords is None or len(coords) != rec.dataset.n_items:
        st.info(
            "The embedding map of this model is not computed yet. Open the Embeddings page "
            "to compute it (in the background, about a minute).",
            icon=":material/scatter_plot:",
        )
        st.page_link("pages/embeddings.py", label="Open the Embeddings page", icon=":material/arrow_forward:")
        return
    ds = rec.dataset
    hover = loaders.item_hover()
    layers = [
        {"idx": ds.items.indices(history), "name": "history", "color": "#1c7ed6", "size": 7},
        {"idx": ds.items.indices(top_ids), "name": f"top {K}", "color": "#5b4bdb", "size": 9, "symbol": "diamond"},
        {"idx": ds.items.indices(tests), "name": "test item", "color": "#e8590c", "size": 16, "symbol": "star"},
    ]
    picture = maps.cached_catalogue_picture(map_key, coords)
    maps.show(maps.highlight_figure(coords, hover, layers, height=430, picture=picture), key="rec_map")


shell.run_page(main, fragment=True)  # switching users reruns the page body only
