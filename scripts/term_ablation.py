"""What each term of a run's score carries: its metrics with terms left out.

DVBPR scores `x_ui = beta_i + gamma_u . gamma_i + theta_u . phi_i`. This script evaluates a run
(validation and test split, full ranking, the evaluator of `python -m dvbpr evaluate`) with the
visual term, the collaborative term or both set to zero, the item bias always kept
(docs/training.md, "What DVBPR's score can reach on emoji"):

    python scripts/term_ablation.py runs/emoji-8min

The terms are trained together, so a row without one of them is not a model anyone trained:
it shows how much of the ranking each term carries in the model as it is, and whether one of
them only corrects the other (a term that lowers the metrics when left alone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dvbpr.evaluate import evaluate_factors
from dvbpr.model import ServingFactors
from dvbpr.recommender import Recommender

METRICS = {
    "AUC": "auc",
    "warm AUC": "auc_warm",
    "cold AUC": "auc_cold",
    "cold/cold": "auc_cold_among_cold",
    "R@20": "recall@20",
}


def without_terms(factors: ServingFactors, visual: bool, collaborative: bool) -> ServingFactors:
    """The same factors with the user side of the visual and/or collaborative term zeroed."""
    users = factors.users.clone()
    if not visual:
        users[:, : factors.visual_dim] = 0.0
    if not collaborative:
        users[:, factors.visual_dim :] = 0.0
    return ServingFactors(users, factors.items_t, factors.bias, factors.new_item_bias, factors.visual_dim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (or a checkpoint file)")
    args = parser.parse_args()
    rec = Recommender.from_run(args.run)
    rows = {
        "full score": (True, True),
        "without the visual term": (False, True),
        "without the collaborative term": (True, False),
        "the item bias alone": (False, False),
    }
    print(f"{'score':<32} {'split':<5} " + " ".join(f"{name:>9}" for name in METRICS))
    for name, (visual, collaborative) in rows.items():
        factors = without_terms(rec.factors, visual, collaborative)
        for split in ("val", "test"):
            metrics = evaluate_factors(factors, rec.dataset, split, ks=(20,)).metrics
            values = (metrics.get(key, float("nan")) for key in METRICS.values())
            print(f"{name:<32} {split:<5} " + " ".join(f"{value:9.4f}" for value in values))


if __name__ == "__main__":
    main()
