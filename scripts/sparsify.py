"""A sparser copy of a dataset folder: each user keeps their last two interactions and K earlier ones.

Real catalogues often have a few interactions per user where the generated datasets have 18-30.
This keeps every user's chronologically last two rows (the test and validation targets under
the default split) and K of their earlier rows drawn at random, so that a model can be checked
where users have only K training items (docs/training.md, "Sparse users"):

    python scripts/sparsify.py data/emoji /tmp/emoji-6 --keep 6

items.csv and hidden_tastes.json are copied; the images are hard-linked where the file system
allows (else copied), since a dataset's images must lie inside its folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd


def sparsify(interactions: pd.DataFrame, keep: int, seed: int = 0) -> pd.DataFrame:
    """The rows of `interactions` (user_id, item_id, timestamp) that stay: per user the last two
    by timestamp and `keep` of the earlier ones at random, in the original row order."""
    rng = np.random.default_rng(seed)
    timed = interactions.assign(_time=interactions["timestamp"].astype(float))
    kept: list[int] = []
    for _, rows in timed.groupby("user_id", sort=False):  # users in the order they first appear
        rows = rows.sort_values("_time", kind="stable")
        earlier = rows.index[:-2].to_numpy()
        kept += list(rows.index[-2:]) + list(rng.choice(earlier, size=min(keep, len(earlier)), replace=False))
    return interactions.loc[sorted(kept)]


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a dataset folder with interactions.csv (timestamps) and items.csv")
    parser.add_argument("out", type=Path, help="the new dataset folder (must not exist)")
    parser.add_argument("--keep", type=int, default=6, help="earlier interactions kept per user (training items)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rows drawn")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} already exists")
    if args.keep < 1:
        parser.error("--keep must be at least 1")
    interactions = pd.read_csv(args.source / "interactions.csv", dtype=str)
    if "timestamp" not in interactions:
        parser.error(f"{args.source / 'interactions.csv'} has no timestamp column to order each user's rows")
    rows = sparsify(interactions, args.keep, args.seed)
    partial = args.out.with_name(args.out.name + ".partial")  # renamed when complete: no half dataset
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(args.source / "images", partial / "images", copy_function=link_or_copy)
    for name in ("items.csv", "hidden_tastes.json"):
        if (args.source / name).exists():
            shutil.copy2(args.source / name, partial / name)
    rows.to_csv(partial / "interactions.csv", index=False)
    partial.rename(args.out)
    print(
        f"{args.out}: {len(rows):,} of {len(interactions):,} interactions, {args.keep} training items per user at most"
    )


if __name__ == "__main__":
    main()
