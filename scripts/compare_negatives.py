"""Measure which negative pool serves cold items better: `all` items (the paper) or `warm` ones.

Trains two runs that differ only in `--negatives` (same data, seed and budget) and prints their
test metrics side by side. The result decides TrainConfig.negatives' default; see
docs/training.md for the figures.

    python scripts/compare_negatives.py [--data DATA] [--epochs N] [--out runs/negatives]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from dvbpr.config import TrainConfig
from dvbpr.evaluate import evaluate_recommender
from dvbpr.recommender import Recommender
from dvbpr.synth import ensure_default_dataset
from dvbpr.train import train

KEYS = ("auc", "auc_cold", "auc_cold_among_cold", "recall@20", "ndcg@20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="dataset folder (default: data/default)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run")
    parser.add_argument("--out", default="runs/negatives", help="folder for the two runs")
    parser.add_argument("--seed", type=int, default=0, help="seed shared by both runs")
    args = parser.parse_args()
    data = args.data or str(ensure_default_dataset())
    results = {}
    for pool in ("all", "warm"):
        run = Path(args.out) / pool
        shutil.rmtree(run, ignore_errors=True)
        train(TrainConfig(data=data, out=str(run), epochs=args.epochs, negatives=pool, seed=args.seed))
        rec = Recommender.from_run(run, device="cpu")
        metrics = evaluate_recommender(rec).metrics
        results[pool] = {k: round(float(metrics[k]), 4) for k in KEYS}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
