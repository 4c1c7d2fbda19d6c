"""Tiny dataset folders for tests, written in the dataset folder format with PIL images.

Import as `from tests.helpers import make_tiny_dataset` (pytest is run from the repository root).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

Row = dict[str, object]


def write_csv(path: Path, rows: Sequence[Row], columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (columns: given, else the keys of the first row)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def item_colour(index: int) -> tuple[int, int, int]:
    """A distinct, deterministic colour per item index, so decoded images can be told apart."""
    return ((index * 67 + 40) % 256, (index * 131 + 90) % 256, (index * 29 + 170) % 256)


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> Path:
    """A solid image with a darker top-left quadrant (so orientation errors would show)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, colour)
    im.paste(tuple(c // 2 for c in colour), (0, 0, size[0] // 2, size[1] // 2))
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[path.suffix[1:].lower()]
    im.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def make_tiny_dataset(
    root: Path,
    *,
    n_users: int = 4,
    n_items: int = 6,
    per_user: int = 3,
    interactions: Sequence[Row] | None = None,
    timestamps: bool = False,
    split_column: bool = False,
    items_csv: bool = True,
    categories: Sequence[str] = ("tops", "shoes"),
    image_format: str = "png",
    image_size: tuple[int, int] = (16, 16),
    skip_images: Iterable[str] = (),
) -> Path:
    """Write a dataset folder at `root` and return it.

    Users `u0..`, items `i0..`; user k interacts with items k, k+1, ... (mod n_items),
    `per_user` of them, one row each in that order, unless `interactions` gives the rows
    (dicts with user_id, item_id and any other columns, written as they are).
    `timestamps` adds increasing unix-second timestamps; `split_column` adds a split column
    (each user's last row test, the one before val, the rest train). `items_csv` writes items.csv
    (item_id, category cycling through `categories`, title). Every item gets an image
    `images/<item_id>.<image_format>` coloured by `item_colour`, except those in `skip_images`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    item_ids = [f"i{j}" for j in range(n_items)]
    if interactions is None:
        rows: list[Row] = []
        for u in range(n_users):
            for k in range(per_user):
                row: Row = {"user_id": f"u{u}", "item_id": item_ids[(u + k) % n_items]}
                if timestamps:
                    row["timestamp"] = 1_700_000_000 + 60 * len(rows)
                if split_column:
                    row["split"] = "test" if k == per_user - 1 else "val" if k == per_user - 2 else "train"
                rows.append(row)
        interactions = rows
    write_csv(root / "interactions.csv", interactions)
    if items_csv:
        write_csv(
            root / "items.csv",
            [
                {"item_id": item, "category": categories[j % len(categories)], "title": f"Item {j}"}
                for j, item in enumerate(item_ids)
            ],
        )
    skip = set(skip_images)
    for j, item in enumerate(item_ids):
        if item not in skip:
            write_image(root / "images" / f"{item}.{image_format}", item_colour(j), image_size)
    return root
