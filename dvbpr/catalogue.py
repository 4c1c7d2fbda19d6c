"""New items in a dataset's catalogue without retraining: `add_item`, and `remove_item` to undo it.

DVBPR exists for items nobody has bought yet. `add_item` appends one to a dataset folder: its
image as images/<item_id>.<ext>, its row at the end of items.csv, its pixels at the end of every
image cache that was up to date. It has no interaction, so every run trained on the dataset
serves it as a cold item: `Recommender.from_run` accepts a catalogue grown this way, computes phi
of the new items only and inserts them into its cached top lists (`Recommender.add_item` does
the same in a running process).

Each change is atomic, in this order: the image (a new file), then items.csv (replaced whole by a
rename: the commit), then the caches (derived: one left behind is rebuilt when opened). A failure
before the commit removes the image again, so the folder is as it was. One writer at a time: a
lock file in the dataset's .cache folder.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pandas as pd
from PIL import Image

from .data import IMAGES_DIR, INTERACTIONS_FILE, ITEMS_FILE, Dataset, files_stamp, load_dataset
from .errors import DataError, ImageError
from .fsutil import atomic_write_bytes, safe_name
from .images import SUPPORTED_EXTENSIONS, append_to_caches, load_image, remove_from_caches

NewImage = str | os.PathLike | bytes | BinaryIO

_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_LOCK = Path(".cache") / "catalogue.lock"


def add_item(
    data: str | os.PathLike | Dataset,
    image: NewImage,
    item_id: str | None = None,
    category: str = "",
    title: str = "",
    stamps: Sequence[str] | None = None,
) -> Dataset:
    """Add an item with only an image to a dataset folder (`data`: its path, or a Dataset loaded
    from it, reused when the folder has not changed since); returns the grown dataset, whose last
    item is the new one. `stamps`: that Dataset's `image_stamps()` as its caller has them (a
    Recommender's image store), so that a large catalogue's images are not stat'ed again.

    `item_id` becomes a file name, so it must be a safe one (letters, digits, '.', '_', '-');
    by default it is `item-` and the first 10 hex digits of the image's sha256, so adding the
    same image twice is refused like any id already in the catalogue. ImageError when the image
    is not a JPEG, PNG or WebP that decodes; DataError when the id is taken or a file images/<id>.*
    exists already."""
    raw, ext = _read_image(image)
    category, title = _cell(category, "category"), _cell(title, "title")
    with _one_writer(Path(data.root if isinstance(data, Dataset) else data)) as root:
        before = _current(data, root)
        root = before.root  # absolute, as the dataset's image paths are
        if item_id is None:
            item_id = f"item-{hashlib.sha256(raw).hexdigest()[:10]}"
        safe_name(item_id, "item id")
        if item_id in before.items:
            raise DataError(f"{root / ITEMS_FILE}: the catalogue has an item {item_id!r} already (choose another id)")
        taken = [root / IMAGES_DIR / f"{item_id}{e}" for e in SUPPORTED_EXTENSIONS]
        taken = [p for p in taken if p.exists()]
        if taken:
            raise DataError(f"{taken[0]} exists already: remove it or choose another item id")
        image_path = root / IMAGES_DIR / f"{item_id}{ext}"
        row = {"item_id": item_id, "category": category, "title": title, "image": f"{IMAGES_DIR}/{image_path.name}"}
        items_csv = _items_with_row(before, row)
        stamps = list(stamps) if stamps is not None and before is data else before.image_stamps()
        before_fingerprint = before.fingerprint(stamps)  # of the CSV files as they are now
        try:
            atomic_write_bytes(image_path, raw)
            atomic_write_bytes(root / ITEMS_FILE, items_csv)  # the commit
        except BaseException as exc:
            image_path.unlink(missing_ok=True)  # a new file (checked above): nothing else is lost
            if isinstance(exc, OSError):
                raise DataError(f"cannot add {item_id!r} to {root}: {exc}") from None
            raise
        after = before.with_items([item_id], [category], [title], [str(image_path)])
        after_fingerprint = after.fingerprint(stamps + after.image_stamps(start=before.n_items))
        append_to_caches(before, before_fingerprint, after, after_fingerprint, raw)
        after.files_stamp = files_stamp(root)
        return after


def remove_item(data: str | os.PathLike, item_id: str) -> Dataset:
    """Remove an item without interactions (one `add_item` added) from a dataset folder: its row
    of items.csv, its image when no other item uses it, its row of every up-to-date image cache.
    Returns the dataset without it. UnknownIdError for an id not in the catalogue; DataError
    for an item with interactions (the runs trained on them depend on it)."""
    with _one_writer(Path(data)) as root:
        before = load_dataset(root)
        root = before.root
        index = before.items.index(item_id)
        used = sum(int((rows[:, 1] == index).sum()) for rows in (before.train, before.val, before.test))
        if used:
            raise DataError(
                f"item {item_id!r} has {used} interaction(s) in {root / INTERACTIONS_FILE}: only an item "
                "without interactions (such as one added with add-item) can be removed"
            )
        header, rows = _read_items_csv(root)
        column = _columns(header).index("item_id")
        kept = [r for r in rows if column >= len(r) or r[column].strip() != item_id]
        image_path = before.image_paths.strings[index]
        shared = before.image_paths.strings.count(image_path) > 1
        before_fingerprint = before.fingerprint()
        try:
            atomic_write_bytes(root / ITEMS_FILE, _csv_bytes([header, *kept]))  # the commit
        except OSError as exc:
            raise DataError(f"cannot remove {item_id!r} from {root}: {exc}") from None
        after = load_dataset(root)
        remove_from_caches(before, before_fingerprint, after, after.fingerprint(), index)
        if not shared and Path(image_path).parent == root / IMAGES_DIR:
            Path(image_path).unlink(missing_ok=True)
        return after


# --------------------------------------------------------------------------------- helpers
@contextmanager
def _one_writer(root: Path) -> Iterator[Path]:
    """Hold the dataset's catalogue lock (waiting for another writer to finish)."""
    if not (root / INTERACTIONS_FILE).is_file():
        raise DataError(f"{root} is not a dataset folder (it has no {INTERACTIONS_FILE})")
    lock = root / _LOCK
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock, "a")
    except OSError as exc:
        raise DataError(f"cannot change the catalogue of {root}: {exc}") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield root


def _current(data: str | os.PathLike | Dataset, root: Path) -> Dataset:
    """`data` when it is a Dataset whose CSV files are as it read them, else the folder loaded."""
    if isinstance(data, Dataset) and data.files_stamp and data.files_stamp == files_stamp(root):
        return data
    return load_dataset(root)


def _read_image(image: NewImage) -> tuple[bytes, str]:
    """The image's bytes and the file extension of its format, once it decodes."""
    if isinstance(image, (str, os.PathLike)):
        try:
            raw = Path(image).read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read image {image}: {exc.strerror or exc}") from None
        label = str(image)
    else:
        raw = bytes(image) if isinstance(image, (bytes, bytearray)) else image.read()
        label = str(getattr(image, "name", "<uploaded image>"))
    load_image(raw, 32, name=label)  # decodes it all: a damaged file fails here, before anything is written
    with Image.open(io.BytesIO(raw), formats=(*_EXTENSIONS, "GIF")) as im:
        if im.format not in _EXTENSIONS:  # a GIF: an upload may be one, a dataset's images are not
            raise ImageError(f"cannot add {label} to a catalogue: its images are JPEG, PNG or WebP (save it as PNG)")
        return raw, _EXTENSIONS[im.format]


def _cell(value: str, field: str) -> str:
    value = str(value).strip()
    if any(c in value for c in "\r\n\0"):
        raise DataError(f"the {field} {value!r} must be one line of text")
    return value


def _read_items_csv(root: Path) -> tuple[list[str], list[list[str]]]:
    """items.csv as (header, rows)."""
    table = list(csv.reader(io.StringIO((root / ITEMS_FILE).read_text(encoding="utf-8-sig"), newline="")))
    return table[0], table[1:]


def _columns(header: list[str]) -> list[str]:
    return [h.strip().lower() for h in header]  # as the loader reads them


def _csv_bytes(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def _items_with_row(dataset: Dataset, row: dict[str, str]) -> bytes:
    """items.csv with `row` as its last item. Items only interactions.csv names come after the
    items.csv rows in index order, so they get rows first: the new item must come after them
    (the run's items stay the catalogue's first ones). A missing column the row needs is added;
    the image cell is written only where items.csv has that column (else the loader finds
    images/<item_id>.<ext> by itself)."""
    path = dataset.root / ITEMS_FILE
    raw = path.read_bytes() if path.is_file() else b""
    header = next(csv.reader([raw.decode("utf-8-sig").split("\n", 1)[0]])) if raw else ["item_id", "category", "title"]
    needed = [c for c in ("category", "title") if row[c] and c not in _columns(header)]
    if needed or not raw:  # written anew, with the columns it lacks
        rows = _read_items_csv(dataset.root)[1] if raw else []
        header = header + needed
        rows = [r + [""] * (len(header) - len(r)) for r in rows]
    else:  # appended to: only its rows are counted (the C parser, one column)
        column = _columns(header).index("item_id")
        rows = pd.read_csv(io.BytesIO(raw), dtype=object, keep_default_na=False, usecols=[column], encoding="utf-8-sig")
    new_rows = [
        _row(header, {"item_id": dataset.items.id(i), "category": dataset.item_categories[i]})
        for i in range(len(rows), dataset.n_items)
    ]
    new_rows.append(_row(header, row))
    if needed or not raw:
        return _csv_bytes([header, *rows, *new_rows])
    return raw + (b"" if raw.endswith((b"\n", b"\r")) else b"\n") + _csv_bytes(new_rows)


def _row(header: list[str], values: dict[str, str]) -> list[str]:
    return [values.get(column, "") for column in _columns(header)]
