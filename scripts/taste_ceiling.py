"""What taste lifts a perfect model could reach on the generated default dataset.

The taste lifts of `python -m dvbpr evaluate RUN --embedding` compare a model's top 20 with the
users' hidden tastes. This script ranks every user's non-training items by scorers that know
the generator's own sampling weights (docs/training.md, "How far pattern can go"), so that a
lift can be read against what the data allows:

    python scripts/taste_ceiling.py            # the default dataset's configuration (seed 0)
    python scripts/taste_ceiling.py --emoji data/emoji   # test AUCs an oracle reaches on emoji

Rows: the generator's full weight (taste x popularity x community), the same with the pattern
effect scaled down, without any pattern knowledge, and with each user's pattern preference
estimated from their training items (what a model could learn at best from the interactions).

With `--emoji`, the rows are the full-ranking test metrics (the evaluator of `evaluate`) of
scorers that know the emoji users' hidden tastes and communities (hidden_tastes.json) and each
item's training interactions, with the cold items at the mean log popularity of the warm items
(where `dvbpr.model.cold_item_bias` puts them on its own scale) or of the training interactions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dvbpr.data import load_dataset
from dvbpr.diagnostics import taste_lifts
from dvbpr.emoji import CATEGORY_BOOST as EMOJI_CATEGORY_BOOST
from dvbpr.emoji import COMMUNITY_BOOST, SUBCATEGORY_BOOST
from dvbpr.evaluate import evaluate_scores
from dvbpr.synth import (
    CATEGORIES,
    CATEGORY_BOOST,
    COLOUR_BOOST,
    COLOURS,
    PATTERN_BOOST,
    PATTERNS,
    SynthConfig,
    community_factor,
    likes,
    simulate,
)


def lifts(score: np.ndarray, seen: np.ndarray, tastes: dict, items: dict, k: int = 20) -> dict[str, float]:
    """The taste lifts of every user's top k by `score` (seen items excluded), measured by the
    same `diagnostics.taste_lifts` as a model's (users and items named by their index)."""
    top = np.argsort(-np.where(seen, -np.inf, score), axis=1, kind="stable")[:, :k]
    top_ids = {str(u): [str(i) for i in row] for u, row in enumerate(top)}
    history = {str(u): [str(i) for i in np.flatnonzero(row)] for u, row in enumerate(seen)}
    return {key: row["lift"] for key, row in taste_lifts(top_ids, history, tastes, items).items()}


def emoji_ceiling(folder: Path) -> None:
    """Test metrics of oracle scorers on an emoji dataset folder (see the module docstring)."""
    ds = load_dataset(folder, check_images=False)
    hidden = json.loads((folder / "hidden_tastes.json").read_text())
    items = pd.read_csv(folder / "items.csv", dtype=str).set_index("item_id").loc[ds.items.ids]
    category, subcategory = items["category"].to_numpy(), items["subcategory"].to_numpy()
    pools = {int(c): np.isin(ds.items.ids, ids) for c, ids in hidden["communities"].items()}
    taste = np.ones((ds.n_users, ds.n_items))
    community = np.ones((ds.n_users, ds.n_items))
    for u, user_id in enumerate(ds.users.ids):
        user = hidden["users"][user_id]
        favourite_category = np.isin(category, user["categories"])
        taste[u] = np.where(np.isin(subcategory, user["subcategories"]), SUBCATEGORY_BOOST, 1.0)
        taste[u] = np.where((taste[u] == 1.0) & favourite_category, EMOJI_CATEGORY_BOOST, taste[u])
        community[u] = np.where(pools[user["community"]], COMMUNITY_BOOST, 1.0)
    counts = ds.item_popularity.astype(float)
    warm = counts > 0
    log_pop = np.log(counts + 0.5)
    per_item, per_interaction = log_pop[warm].mean(), (log_pop * counts).sum() / counts.sum()
    jitter = 1e-4 * np.random.default_rng(0).random((ds.n_users, ds.n_items))  # ties at random (float32)
    known = np.log(taste * community)
    popular = np.where(warm, log_pop, per_item)
    rows = [
        ("hidden tastes", np.log(taste)),
        ("tastes x community", known),
        ("popularity, cold at the item mean", np.broadcast_to(popular, taste.shape)),
        ("tastes x community x popularity, cold at the item mean", known + popular),
        ("the same, cold at the interaction mean", known + np.where(warm, log_pop, per_interaction)),
    ]
    names = ("AUC", "cold AUC", "cold/cold", "warm-target AUC", "R@20")
    print(f"{'scorer':<56} " + " ".join(f"{n:>15}" for n in names))
    for name, score in rows:
        table = torch.as_tensor(score + jitter, dtype=torch.float32)
        m = evaluate_scores(lambda users, table=table: table[users.cpu()], ds, "test", ks=(20,)).metrics
        values = (m["auc"], m["auc_cold"], m["auc_cold_among_cold"], m["auc_warm"], m["recall@20"])
        print(f"{name:<56} " + " ".join(f"{v:15.4f}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="generator seed (the default dataset: 0)")
    parser.add_argument(
        "--emoji", type=Path, default=None, help="an emoji dataset folder: print its oracle test metrics instead"
    )
    args = parser.parse_args()
    if args.emoji is not None:
        emoji_ceiling(args.emoji)
        return
    cfg = SynthConfig(seed=args.seed)
    world = simulate(cfg)
    colour = likes(world.user_colours, world.item_colour, len(COLOURS))
    category = likes(world.user_categories, world.item_category, len(CATEGORIES))
    pattern = likes(world.user_patterns, world.item_pattern, len(PATTERNS))
    seen = np.zeros((cfg.n_users, cfg.n_items), bool)  # training items: all but the last two
    for u, seq in enumerate(world.sequences):
        seen[u, seq[:-2]] = True
    # Ties (items equal in every known factor) broken at random, not by item index.
    jitter = 1.0 + 1e-6 * np.random.default_rng(0).random(seen.shape)
    without_pattern = (
        np.where(colour, COLOUR_BOOST, 1.0)
        * np.where(category, CATEGORY_BOOST, 1.0)
        * world.popularity
        * community_factor(world.community_pools, world.user_community, cfg.n_items)
        * jitter
    )
    one_hot = np.eye(len(PATTERNS))[world.item_pattern]
    counts = seen.astype(float) @ one_hot  # each user's training items per pattern
    prior = one_hot.mean(0)
    estimated = ((counts + prior) / (counts.sum(1, keepdims=True) + 1.0) / prior)[:, world.item_pattern]
    rows = [
        (f"pattern effect x{s:.2f}", without_pattern * np.where(pattern, PATTERN_BOOST**s, 1.0))
        for s in (1.0, 0.75, 0.5, 0.25)
    ]
    rows += [
        ("no pattern knowledge", without_pattern),
        ("pattern estimated from training items", without_pattern * estimated),
    ]
    tastes = {
        str(u): {
            "colours": world.user_colours[u],
            "categories": world.user_categories[u],
            "patterns": world.user_patterns[u],
        }
        for u in range(cfg.n_users)
    }
    items = {
        str(i): {"colour": int(c), "category": int(k), "pattern": int(p)}
        for i, (c, k, p) in enumerate(zip(world.item_colour, world.item_category, world.item_pattern))
    }
    names = ("colours", "categories", "patterns")
    print(f"{'scorer (all else as generated)':<40} " + " ".join(f"{t:>10}" for t in names))
    for name, score in rows:
        values = lifts(score, seen, tastes, items)
        print(f"{name:<40} " + " ".join(f"{values[t]:10.2f}" for t in names))


if __name__ == "__main__":
    main()
