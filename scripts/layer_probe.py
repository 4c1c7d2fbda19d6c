"""Where a run's shape network holds each item attribute: a linear read-out per layer.

`evaluate --embedding` reads the attributes from phi. This script reads them from the shape
CNN's own layers: each conv stage's maps averaged over the image (what a texture read-out of
that stage could see), for the run's trained network and for a freshly initialised one of the
same configuration, so that what training taught shows beside what random filters already give
(docs/training.md, "Crop agreement"):

    python scripts/layer_probe.py models/default --columns category,pattern

The read-out is `dvbpr.diagnostics.linear_probe` (held-out accuracy of a softmax regression)
on a fixed sample of catalogue items, their images as the model serves them.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from dvbpr.diagnostics import linear_probe
from dvbpr.features import ImageBatches
from dvbpr.model import DVBPR
from dvbpr.recommender import Recommender


def stage_features(model: DVBPR, images: ImageBatches, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The shape network's maps after every ReLU and pooling of its conv stack, averaged over
    their positions, for the items `rows` (eval mode)."""
    shape = model.shape_cnn
    model.eval()
    layers = list(shape.features)
    names, conv = {}, 0
    for index, layer in enumerate(layers):
        conv += isinstance(layer, nn.Conv2d)
        if isinstance(layer, (nn.ReLU, nn.MaxPool2d)):
            names[index] = f"conv{conv} {'pooled' if isinstance(layer, nn.MaxPool2d) else 'relu'}"
    out: dict[str, list[torch.Tensor]] = {name: [] for name in names.values()}
    with torch.inference_mode():
        for start in range(0, len(rows), 256):
            h = images(rows[start : start + 256])
            for index, layer in enumerate(layers):
                h = layer(h)
                if index in names:
                    out[names[index]].append(h.float().mean(dim=(2, 3)))
    return {name: torch.cat(parts) for name, parts in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder (best.pt, else last.pt)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the one the run records)")
    parser.add_argument("--columns", default="category", help="comma-separated categorical columns of items.csv")
    parser.add_argument("--items", type=int, default=3000, help="catalogue items sampled (seed 0)")
    args = parser.parse_args()
    rec = Recommender.from_run(args.run, data=args.data, device="cpu", top_lists=False)
    table = rec.dataset.item_table()
    columns = [c.strip() for c in args.columns.split(",")]
    missing = [c for c in columns if c not in table]
    if missing:
        parser.error(f"items.csv has no column {', '.join(missing)}")
    n = rec.dataset.n_items
    rows = np.sort(np.random.default_rng(0).choice(n, min(args.items, n), replace=False))
    images = ImageBatches(rec.store, torch.device("cpu"))
    torch.manual_seed(0)
    fresh = DVBPR(rec.model.cfg)
    trained, untrained = stage_features(rec.model, images, rows), stage_features(fresh, images, rows)
    print(f"| layer (averaged maps) | {' | '.join(f'{c}: trained | {c}: fresh' for c in columns)} |")
    print("|---|" + "---|" * (2 * len(columns)))
    for name in trained:
        cells = []
        for column in columns:
            labels = [table[column][i] for i in rows]
            for features in (trained, untrained):
                cells.append(f"{linear_probe(features[name], labels)['accuracy']:.2f}")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
