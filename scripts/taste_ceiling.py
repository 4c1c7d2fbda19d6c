"""What taste lifts a perfect model could reach on the generated default dataset.

The taste lifts of `python -m dvbpr evaluate RUN --embedding` compare a model's top 20 with the
users' hidden tastes. This script ranks every user's non-training items by scorers that know
the generator's own sampling weights (docs/training.md, "How far pattern can go"), so that a
lift can be read against what the data allows:

    python scripts/taste_ceiling.py            # the default dataset's configuration (seed 0)

Rows: the generator's full weight (taste x popularity x community), the same with the pattern
effect scaled down, without any pattern knowledge, and with each user's pattern preference
estimated from their training items (what a model could learn at best from the interactions).
"""

from __future__ import annotations

import argparse

import numpy as np

from dvbpr.diagnostics import taste_lifts
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="generator seed (the default dataset: 0)")
    args = parser.parse_args()
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
