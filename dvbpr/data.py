"""The dataset folder format: loading, validation with row-level errors, split rules, id maps.

A dataset folder holds `interactions.csv` (`user_id,item_id[,timestamp][,split]`), an optional
`items.csv` (`item_id[,category][,title][,image]`) and the item images (see
docs/architecture.md). `load_dataset` turns it into a `Dataset`: users and items indexed 0..n-1
through `IdMap`s, and train/validation/test interaction arrays in index space.

Row numbers in error messages are the ones a spreadsheet shows: the header is row 1, so the
first data row is row 2.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import overload

import numpy as np
import pandas as pd

from .errors import DataError, UnknownIdError, one_line
from .images import SUPPORTED_EXTENSIONS

INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.csv"
IMAGES_DIR = "images"

TRAIN, VAL, TEST = 0, 1, 2
SPLITS = ("train", "val", "test")
_SPLIT_VALUES = {"train": TRAIN, "val": VAL, "validation": VAL, "valid": VAL, "test": TEST}
_EVALUATION_VALUES = {"true": 1, "1": 1, "yes": 1, "false": 0, "0": 0, "no": 0, "": 0}
_LISTED = 10  # how many rows / ids an error message lists before "and N more"


class IdMap:
    """The one mapping between string ids and indices 0..n-1 (for users or for items)."""

    def __init__(self, ids: Sequence[str], kind: str = "id") -> None:
        # str() turns numpy strings into plain ones, which checkpoints (weights_only) can load.
        self.ids: list[str] = [str(i) for i in ids]
        self.kind = kind
        self._index = pd.Index(self.ids, dtype=object)  # hash table for index()/indices()
        if not self._index.is_unique:
            dups = self._index[self._index.duplicated()].unique()
            raise DataError(f"duplicate {kind} ids {_quote_list(dups)} ({len(dups)} distinct ids repeated)")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, id_: object) -> bool:
        try:
            return id_ in self._index
        except TypeError:  # unhashable
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self.ids == other.ids

    __hash__ = None  # type: ignore[assignment]  # mutable list inside

    def __repr__(self) -> str:
        return f"IdMap({self.kind!r}, {len(self)} ids)"

    def index(self, id_: str) -> int:
        """Index of one id; UnknownIdError if it is not in the map."""
        try:
            return int(self._index.get_loc(id_))
        except (KeyError, TypeError):
            raise UnknownIdError(f"unknown {self.kind} {id_!r}") from None

    def indices(self, ids: Iterable[str]) -> np.ndarray:
        """int64 indices of many ids; UnknownIdError naming the first unknown ones."""
        ids = list(ids)
        found = self._index.get_indexer(pd.Index(ids, dtype=object)).astype(np.int64)
        if (found < 0).any():
            unknown = pd.unique(np.asarray(ids, dtype=object)[found < 0])
            raise UnknownIdError(
                f"unknown {self.kind} ids {_quote_list(unknown)} ({len(unknown)} distinct unknown among {len(ids)})"
            )
        return found

    def id(self, index: int) -> str:
        """The id at `index`; IndexError outside 0..n-1 (negative indices are not accepted)."""
        if not 0 <= int(index) < len(self.ids):
            raise IndexError(f"{self.kind} index {index} out of range 0..{len(self.ids) - 1}")
        return self.ids[int(index)]

    def to_ids(self, indices: Iterable[int] | np.ndarray) -> list[str]:
        """The ids at many indices (any integer array-like, including a CPU tensor)."""
        arr = np.asarray(indices, dtype=np.int64).ravel()
        bad = (arr < 0) | (arr >= len(self.ids))
        if bad.any():
            raise IndexError(f"{self.kind} index {int(arr[bad][0])} out of range 0..{len(self.ids) - 1}")
        return [self.ids[i] for i in arr.tolist()]


class ImagePaths(Sequence[Path]):
    """Absolute image paths, one per item: kept as strings, made into `Path`s when read.

    Building hundreds of thousands of Path objects takes seconds; most callers read a few,
    and bulk readers (`ImageStore`, `Dataset.fingerprint`) use `strings` directly.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self.strings: list[str] = [os.fspath(p) for p in paths]

    def __len__(self) -> int:
        return len(self.strings)

    @overload
    def __getitem__(self, index: int) -> Path: ...
    @overload
    def __getitem__(self, index: slice) -> list[Path]: ...
    def __getitem__(self, index: int | slice) -> Path | list[Path]:
        if isinstance(index, slice):
            return [Path(s) for s in self.strings[index]]
        return Path(self.strings[index])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == [Path(p) for p in other]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ImagePaths({len(self)} paths)"


@dataclass(eq=False)
class Dataset:
    """A loaded dataset folder in index space.

    `train`, `val` and `test` are (n, 2) int64 arrays of `[user_index, item_index]`, in
    chronological order (timestamp, else file order). Within a split a repeated (user, item)
    pair is kept once (its first occurrence) and counted in `warnings`.
    """

    root: Path
    name: str
    users: IdMap
    items: IdMap
    item_categories: list[str]
    item_titles: list[str]
    image_paths: ImagePaths  # a plain sequence of paths is converted
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    warnings: list[str] = field(default_factory=list)
    # (size, mtime) of the CSV files as `load_dataset` read them: whether they changed since
    files_stamp: tuple = ()
    cold_items: np.ndarray = field(init=False, repr=False)
    item_popularity: np.ndarray = field(init=False, repr=False)
    _csr: dict[str, tuple[np.ndarray, np.ndarray]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.image_paths, ImagePaths):
            self.image_paths = ImagePaths(self.image_paths)
        self.item_popularity = np.bincount(self.train[:, 1], minlength=self.n_items).astype(np.int64)
        self.cold_items = self.item_popularity == 0

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def split(self, name: str) -> np.ndarray:
        """The (n, 2) array of one split: "train", "val" (or "validation") or "test"."""
        code = _SPLIT_VALUES.get(name)
        if code is None:
            raise ValueError(f"unknown split {name!r}; use 'train', 'val' or 'test'")
        return (self.train, self.val, self.test)[code]

    def user_items(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """CSR over all users of one split: `indices[indptr[u]:indptr[u + 1]]` are user u's items.

        Each user's items are in chronological order, without repeats (splits hold each
        (user, item) pair once). Computed once per split.
        """
        rows = self.split(split)
        key = SPLITS[_SPLIT_VALUES[split]]
        if key not in self._csr:
            order = np.argsort(rows[:, 0], kind="stable")  # stable keeps chronological order
            indptr = np.zeros(self.n_users + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows[:, 0], minlength=self.n_users), out=indptr[1:])
            self._csr[key] = (indptr, np.ascontiguousarray(rows[order, 1]))
        return self._csr[key]

    def image_stamps(self, start: int = 0) -> list[str]:
        """One line per item from `start` on, in index order: its image's path relative to the
        dataset folder, size and mtime ("missing" when it cannot be read). The fingerprint hashes
        them; a run's item features are keyed by those of their items. Stats every image."""
        prefix = os.path.join(self.root, "")
        stamps = []
        for path in self.image_paths.strings[start:]:
            try:
                st = os.stat(path)
                stamp = f"{st.st_size}\t{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            relative = path[len(prefix) :] if path.startswith(prefix) else path
            stamps.append(f"{relative}\t{stamp}")
        return stamps

    def fingerprint(self, stamps: Sequence[str] | None = None) -> str:
        """sha256 over the CSV bytes and every image's path, size and mtime (`image_stamps`,
        computed unless given).

        Changes whenever the data a model was trained on (or an image cache was built from)
        changes on disk. Stats every image, so callers that need it often should keep the value.
        """
        h = hashlib.sha256()
        for name in (INTERACTIONS_FILE, ITEMS_FILE):
            path = self.root / name
            h.update(f"{name}\n".encode())
            if path.is_file():
                h.update(path.read_bytes())
        stamps = self.image_stamps() if stamps is None else stamps
        if stamps:  # one update ("\n" before each stamp): hundreds of thousands of small ones take a second
            h.update(("\n" + "\n".join(stamps)).encode())
        return h.hexdigest()

    def head(self, n_items: int) -> Dataset:
        """The dataset with its first `n_items` items only: the catalogue as it was before the
        items after them were added (`dvbpr.catalogue`); DataError when one of those has an
        interaction."""
        if not 0 <= n_items <= self.n_items:
            raise ValueError(f"n_items must be in 0..{self.n_items}, got {n_items}")
        if n_items == self.n_items:
            return self
        later = sum(int((rows[:, 1] >= n_items).sum()) for rows in (self.train, self.val, self.test))
        if later:
            raise DataError(
                f"dataset {self.name!r}: {later} interaction(s) use items after its first {n_items}, "
                "so those are not items added to the catalogue since"
            )
        return replace(
            self,
            items=IdMap(self.items.ids[:n_items], "item"),
            item_categories=self.item_categories[:n_items],
            item_titles=self.item_titles[:n_items],
            image_paths=ImagePaths(self.image_paths.strings[:n_items]),
            warnings=list(self.warnings),
        )

    def with_items(
        self, ids: Sequence[str], categories: Sequence[str], titles: Sequence[str], image_paths: Sequence[str]
    ) -> Dataset:
        """The dataset with items appended to its catalogue (no interactions: cold), as
        `load_dataset` reads it once `dvbpr.catalogue.add_item` has written them. An empty
        title is the id, as in items.csv; DataError when an id is taken."""
        return replace(
            self,
            items=IdMap(self.items.ids + list(ids), "item"),
            item_categories=self.item_categories + list(categories),
            item_titles=self.item_titles + [t or i for t, i in zip(titles, ids, strict=True)],
            image_paths=ImagePaths(self.image_paths.strings + [os.fspath(p) for p in image_paths]),
            warnings=list(self.warnings),
        )

    def item_table(self) -> dict[str, list[str]]:
        """Every column of items.csv (headers lower-cased, cells stripped), one value per item in
        index order; "" for an item items.csv does not list. `load_dataset` keeps only category,
        title and image: this is the one place that reads the others (e.g. colour, pattern),
        re-reading the file on each call."""
        path = self.root / ITEMS_FILE
        df = read_csv(path) if path.is_file() else None
        if df is None or "item_id" not in df.columns:
            return {"item_id": list(self.items.ids)}
        rows = pd.Index([str(i).strip() for i in df["item_id"]], dtype=object).get_indexer(
            pd.Index(self.items.ids, dtype=object)
        )
        table = {}
        for name in df.columns:
            cells = [str(c).strip() for c in df[name].to_numpy(dtype=object)]
            table[name] = [cells[r] if r >= 0 else "" for r in rows]
        table["item_id"] = list(self.items.ids)
        return table

    def info(self) -> dict:
        """Summary counts, JSON-serialisable (plain ints and strings)."""
        categories = pd.Series(self.item_categories, dtype=object)
        counts = categories[categories != ""].value_counts()
        return {
            "name": self.name,
            "path": str(self.root),
            "users": self.n_users,
            "items": self.n_items,
            "interactions": len(self.train) + len(self.val) + len(self.test),
            "train": len(self.train),
            "validation": len(self.val),
            "test": len(self.test),
            "cold_items": int(self.cold_items.sum()),
            "categories": len(counts),
            "category_counts": {str(k): int(v) for k, v in counts.items()},
        }


def load_dataset(path: str | Path, check_images: bool = True) -> Dataset:
    """Load and validate a dataset folder; DataError naming file, row and field on bad input.

    Ids are stripped of surrounding spaces. With `check_images=False` missing image files are
    not reported and such items get the path `images/<item_id>.jpg`; whether images can be
    decoded is checked by `ImageStore`, not here.
    """
    root = Path(os.path.normpath(Path(path).expanduser().absolute()))
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset path {root} is not a folder")
    inter_path = root / INTERACTIONS_FILE
    if not inter_path.is_file():
        raise DataError(f"dataset {root.name!r} has no {INTERACTIONS_FILE} (looked for {inter_path})")

    stamp = files_stamp(root)  # before reading: a change while loading shows as a change since
    df = read_csv(inter_path)
    if df is None or len(df) == 0:
        raise DataError(f"dataset {root.name!r} has no interactions ({inter_path} has no data rows)")
    _require_columns(df, inter_path, ("user_id", "item_id"))
    user_codes, user_ids = _factorize_ids(df, "user_id", inter_path)  # first-appearance order
    item_codes, item_uniques = _factorize_ids(df, "item_id", inter_path)
    order = (
        np.argsort(_parse_timestamps(df["timestamp"], inter_path), kind="stable")
        if "timestamp" in df.columns
        else np.arange(len(df))
    )
    split = _assign_splits(df, inter_path, user_codes, order)

    warnings: list[str] = []
    catalogue = _read_items(root / ITEMS_FILE)
    in_catalogue = pd.Index(catalogue.ids, dtype=object).get_indexer(item_uniques)
    extra = item_uniques[in_catalogue < 0]
    if len(extra) and catalogue.ids:
        warnings.append(
            f"{len(extra)} item(s) appear in {INTERACTIONS_FILE} but not in {ITEMS_FILE} "
            f"(e.g. {_quote_list(extra[:3])}); they were added with no category or title"
        )
    in_catalogue[in_catalogue < 0] = len(catalogue.ids) + np.arange(len(extra))
    catalogue.append(extra.tolist())
    item_codes = in_catalogue[item_codes]

    image_paths = _image_paths(root, catalogue, item_codes, check_images)
    train, val, test = _split_arrays(user_codes, item_codes, split, order, len(catalogue.ids), warnings)
    return Dataset(
        root=root,
        name=root.name,
        users=IdMap(user_ids, "user"),
        items=IdMap(catalogue.ids, "item"),
        item_categories=catalogue.categories,
        item_titles=catalogue.titles,
        image_paths=image_paths,
        train=train,
        val=val,
        test=test,
        warnings=warnings,
        files_stamp=stamp,
    )


def files_stamp(root: str | Path) -> tuple:
    """(size, mtime in ns) of a dataset folder's CSV files, None for one that is missing: it
    changes whenever either file is replaced (they are written whole, by a rename)."""
    stamps = []
    for name in (INTERACTIONS_FILE, ITEMS_FILE):
        try:
            st = os.stat(Path(root) / name)
            stamps.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


# --- reading and validating CSV files ---------------------------------------------------------


def read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV file with every cell as a Python string (nothing becomes NaN), headers stripped and
    lower-cased; None for an empty file. DataError naming the file (and row, where there is one)
    when it cannot be read, is binary, is not UTF-8, has a row longer than its header or repeats
    a column name.

    dtype=object rather than str: the same strings, but about twice as fast to read as pandas'
    string dtype, and the code below works on plain object arrays.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc.strerror}") from None
    nul = raw.find(b"\0")  # UTF-8 text never holds one; pandas would read it as characters
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}: not a CSV text file (binary data: a NUL byte on line {line}, offset {nul})")
    read = dict(dtype=object, keep_default_na=False, encoding="utf-8-sig")
    try:
        df = pd.read_csv(io.BytesIO(raw), **read)
        header = pd.read_csv(io.BytesIO(raw), header=None, nrows=1, **read).iloc[0]
    except pd.errors.EmptyDataError:
        return None
    except UnicodeDecodeError:
        raise DataError(f"{path}: {_not_utf8(raw)}") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as a CSV file: {one_line(exc)}") from None
    if not isinstance(df.index, pd.RangeIndex):  # pandas' reading of a longer first row: an index
        raise DataError(f"{path}: row 2 has more fields than the header (row 1)")
    # The header as written: pandas renames a repeated column ("user_id.1"), which would make
    # the first of two user_id columns win silently.
    names = [str(c).strip().lower() for c in header]
    repeated = sorted({n for n in names if n and names.count(n) > 1})  # blank ones: trailing commas
    if repeated:
        raise DataError(f"{path}: the header (row 1) names column(s) {_quote_list(repeated)} more than once")
    df.columns = names
    return df


def _not_utf8(raw: bytes) -> str:
    """Where the first byte that is not UTF-8 is (pandas' own offset is one into a chunk)."""
    try:
        raw.decode("utf-8")
        return "not UTF-8 text"
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return (
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}, offset {exc.start}): "
            "a binary or compressed file, or text in another encoding (save it as UTF-8 CSV)"
        )


def _require_columns(df: pd.DataFrame, path: Path, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        # One column whose name holds a separator: the file is separated by something else.
        other = len(df.columns) == 1 and any(sep in df.columns[0] for sep in ";\t|")
        raise DataError(
            f"{path}: missing required column(s) {_quote_list(missing)}; columns found: {_quote_list(df.columns)}"
            + (" (columns must be separated by commas)" if other else "")
        )


def _factorize_ids(df: pd.DataFrame, column: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(codes per row, stripped distinct ids in order of first appearance); DataError on blanks.

    Strips the distinct values only, which is much cheaper than stripping every row.
    """
    codes, uniques = pd.factorize(df[column].to_numpy(dtype=object))
    stripped = np.array([u.strip() for u in uniques], dtype=object)
    if (stripped != uniques).any():  # ids that differ only by spaces become one id
        recodes, stripped = pd.factorize(stripped)
        codes = recodes[codes]
    blank = np.flatnonzero(stripped == "")
    if len(blank):
        rows = np.flatnonzero(codes == blank[0]) + 2
        raise DataError(f"{path}: field {column!r} is empty on {len(rows)} row(s): {_rows(rows)}")
    return codes.astype(np.int64), stripped


def _lookup(values: pd.Series, table: dict[str, int]) -> np.ndarray:
    """table[value.strip().lower()] per row, -1 where absent (computed on distinct values)."""
    codes, uniques = pd.factorize(values.to_numpy(dtype=object))
    return np.array([table.get(u.strip().lower(), -1) for u in uniques], dtype=np.int64)[codes]


def _parse_timestamps(values: pd.Series, path: Path) -> np.ndarray:
    """Sortable timestamps: all numbers (e.g. unix seconds), else ISO 8601 dates/times."""
    raw = values.to_numpy(dtype=object)
    for dtype in (np.int64, np.float64):  # fast paths for the usual unix timestamps
        try:
            parsed = np.asarray(raw, dtype=dtype)
        except (ValueError, OverflowError):
            continue
        if dtype is np.int64 or np.isfinite(parsed).all():
            return parsed
    # Naive times are taken as UTC so that they compare with zone-aware ones.
    stripped = values.str.strip()
    times = pd.to_datetime(stripped, errors="coerce", format="ISO8601", utc=True)
    bad = np.flatnonzero(times.isna().to_numpy())
    if len(bad):
        # Name the rows that differ from what most rows hold: one word among unix seconds is one
        # bad row, not every row that is no date.
        numbers = np.asarray(pd.to_numeric(stripped, errors="coerce"), dtype=np.float64)
        not_numbers = np.flatnonzero(~np.isfinite(numbers))
        numbers_hint, dates_hint = "numbers (e.g. unix seconds)", "ISO dates such as 2024-03-01 or 2024-03-01T12:30:00"
        if len(not_numbers) < len(bad):
            bad, problem, hint = not_numbers, "is not a number", f"the other rows hold {numbers_hint}"
        elif len(bad) < len(raw):
            problem, hint = "is not an ISO date", f"the other rows hold {dates_hint}"
        else:
            problem, hint = "cannot be read", f"use {numbers_hint} or {dates_hint}"
        raise DataError(
            f"{path}: field 'timestamp' {problem} on {len(bad)} row(s): {_rows(bad + 2)} "
            f"(first value {raw[bad[0]]!r}); {hint}"
        )
    return times.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _assign_splits(df: pd.DataFrame, path: Path, user_codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Split code per row (in file order), following the rules in docs/architecture.md."""
    if "split" in df.columns:
        codes = _lookup(df["split"], _SPLIT_VALUES)
        bad = np.flatnonzero(codes < 0)
        if len(bad):
            raise DataError(
                f"{path}: field 'split' has an unknown value on {len(bad)} row(s): "
                f"{_rows(bad + 2)} (first value {df['split'].iloc[bad[0]]!r}); "
                "use train, val (or validation) or test"
            )
        return codes
    if "evaluation" in df.columns:
        flags = _lookup(df["evaluation"], _EVALUATION_VALUES)
        bad = np.flatnonzero(flags < 0)
        if len(bad):
            raise DataError(
                f"{path}: field 'evaluation' has an unknown value on {len(bad)} row(s): "
                f"{_rows(bad + 2)} (first value {df['evaluation'].iloc[bad[0]]!r}); "
                "use true/false, 1/0 or yes/no"
            )
        is_test = flags == 1
    else:
        # Each user's chronologically last row is test when the user has another one to train on.
        last = _last_per_user(user_codes, order)
        is_test = np.zeros(len(df), dtype=bool)
        is_test[last] = np.bincount(user_codes)[user_codes[last]] >= 2
    split = np.where(is_test, TEST, TRAIN).astype(np.int64)
    # Validation: the last non-test row of users with >= 3 interactions, as long as the user
    # keeps at least one training row.
    rest = order[~is_test[order]]
    last = _last_per_user(user_codes, rest)
    totals = np.bincount(user_codes)
    remaining = np.bincount(user_codes[rest], minlength=len(totals))
    users = user_codes[last]
    split[last[(totals[users] >= 3) & (remaining[users] >= 2)]] = VAL
    return split


def _last_per_user(user_codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Of `rows` (row positions in chronological order), the last one of each user."""
    is_last = ~pd.Series(user_codes[rows]).duplicated(keep="last").to_numpy()
    return rows[is_last]


@dataclass
class _Catalogue:
    """Per-item columns in item-index order: items.csv rows, then interaction-only items."""

    ids: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # the `image` cell, "" when none
    rows: list[int | None] = field(default_factory=list)  # items.csv row, None if not there

    def append(self, ids: list[str]) -> None:
        """Add items known only from interactions.csv."""
        self.ids += ids
        self.categories += [""] * len(ids)
        self.titles += ids
        self.images += [""] * len(ids)
        self.rows += [None] * len(ids)


def _read_items(path: Path) -> _Catalogue:
    """items.csv as a catalogue (empty if there is no items.csv)."""
    if not path.exists():
        return _Catalogue()
    df = read_csv(path)
    if df is None:
        raise DataError(f"{path} is empty: give it the header item_id[,category][,title][,image] or delete it")
    _require_columns(df, path, ("item_id",))
    codes, ids = _factorize_ids(df, "item_id", path)
    if len(ids) < len(df):
        dup = np.flatnonzero(pd.Series(codes).duplicated(keep=False).to_numpy())
        same = np.flatnonzero(codes == codes[dup[0]]) + 2
        raise DataError(
            f"{path}: field 'item_id' repeats an item id on {len(dup)} row(s): {_rows(dup + 2)} "
            f"(e.g. {ids[codes[dup[0]]]!r} on {_rows(same)})"
        )

    def column(name: str, default: list[str]) -> list[str]:
        if name not in df.columns:
            return list(default)  # a list of its own: the catalogue extends each column
        cells = [c.strip() for c in df[name].to_numpy(dtype=object)]
        return [c or d for c, d in zip(cells, default)]

    ids_list = ids.tolist()
    blank = [""] * len(df)
    return _Catalogue(
        ids=ids_list,
        categories=column("category", blank),
        titles=column("title", ids_list),  # an empty title falls back to the id
        images=column("image", blank),
        rows=list(range(2, len(df) + 2)),
    )


# --- images -----------------------------------------------------------------------------------


def _image_paths(root: Path, catalogue: _Catalogue, item_codes: np.ndarray, check: bool) -> ImagePaths:
    """One absolute image path per item: the `image` cell, else images/<item_id>.<ext>.

    With `check`, DataError when an image is missing or leads outside the dataset folder through
    a symbolic link (a linked file or folder): a dataset folder holds its images, so copying,
    importing or adding items to it never reads or writes anything outside it."""
    folder = _ImageFolder(os.path.join(root, IMAGES_DIR))
    inside = _Inside(root)
    folder_inside = inside.holds(folder.path)
    paths: list[str] = []
    missing: list[int] = []
    escaping: list[int] = []
    outside: list[tuple[int, str, str]] = []  # (item, path, where it leads)
    for i, (item_id, cell) in enumerate(zip(catalogue.ids, catalogue.images)):
        if cell:
            if _leaves_folder(cell):
                escaping.append(i)
                continue
            path = os.path.normpath(os.path.join(root, cell))
            if check:
                is_link, is_file = _lstat_kind(path)
                if real := inside.leaves(path, is_link):
                    outside.append((i, path, real))
                elif not is_file:
                    missing.append(i)
        else:
            name = folder.find(item_id)
            path = f"{folder.path}{os.sep}{name or item_id + SUPPORTED_EXTENSIONS[0]}"
            if check and name is None:
                missing.append(i)
            elif check and (name in folder.links or not folder_inside):  # else known inside, per item
                if real := inside.leaves(path, name in folder.links):
                    outside.append((i, path, real))
        paths.append(path)
    if escaping:
        raise DataError(
            f"{root / ITEMS_FILE}: field 'image' must be a path inside the dataset folder "
            f"(relative, no '..') on {len(escaping)} row(s): "
            f"{_rows(np.array([catalogue.rows[i] for i in escaping]))} "
            f"(first value {catalogue.images[escaping[0]]!r})"
        )
    if outside:
        raise DataError(_outside_images_message(root, catalogue, outside))
    if missing:
        raise DataError(_missing_images_message(root, catalogue, item_codes, missing))
    return ImagePaths(paths)


_ABSOLUTE = re.compile(r"\s*(?:[/\\]|[A-Za-z]:)")
_SLASHES = re.compile(r"[/\\]")


def _leaves_folder(cell: str) -> bool:
    """Whether an `image` cell is absolute or climbs out with '..' (either slash)."""
    return bool(_ABSOLUTE.match(cell)) or ".." in _SLASHES.split(cell)


def _lstat_kind(path: str) -> tuple[bool, bool]:
    """(is a symbolic link, is a regular file once links are followed); both False when missing."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False, False
    if stat.S_ISLNK(mode):
        return True, os.path.isfile(path)
    return False, stat.S_ISREG(mode)


class _Inside:
    """Whether image paths stay inside the dataset folder once symbolic links are followed.
    Each folder is resolved once; a file only when it is a link itself."""

    def __init__(self, root: Path) -> None:
        self.prefix = os.path.join(os.path.realpath(root), "")
        self._folders: dict[str, str] = {}  # folder -> where it leads

    def leaves(self, path: str, is_link: bool) -> str | None:
        """Where `path` leads when that is outside the dataset folder, else None (`is_link`:
        whether the file itself is a symbolic link)."""
        if is_link:
            real = os.path.realpath(path)
        else:
            folder, _, name = path.rpartition(os.sep)
            real = self._folder(folder) + name
        return None if real.startswith(self.prefix) else real

    def holds(self, folder: str) -> bool:
        """Whether a folder leads to one inside the dataset folder."""
        return self._folder(folder).startswith(self.prefix)

    def _folder(self, folder: str) -> str:
        if folder not in self._folders:
            self._folders[folder] = os.path.join(os.path.realpath(folder), "")
        return self._folders[folder]


class _ImageFolder:
    """The file names in images/, found by item id without a stat per item."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except (FileNotFoundError, NotADirectoryError):
            entries = []
        self.names = {e.name for e in entries}
        self.links = {e.name for e in entries if e.is_symlink()}  # known from the listing, no stat

    def find(self, item_id: str) -> str | None:
        """`<item_id><ext>`, trying SUPPORTED_EXTENSIONS in order, then other-case extensions."""
        for ext in SUPPORTED_EXTENSIONS:
            if item_id + ext in self.names:
                return item_id + ext
        return self._other_case.get(item_id)

    @cached_property
    def _other_case(self) -> dict[str, str]:
        """Item id -> file name for extensions like .JPG (built on the first miss only)."""
        rank = {ext: r for r, ext in enumerate(SUPPORTED_EXTENSIONS)}
        best: dict[str, tuple[int, str]] = {}
        for name in self.names:
            stem, dot, ext = name.rpartition(".")
            r = rank.get(dot + ext.lower())
            if r is not None and (stem not in best or r < best[stem][0]):
                best[stem] = (r, name)
        return {stem: name for stem, (_, name) in best.items()}


def _outside_images_message(root: Path, catalogue: _Catalogue, outside: list[tuple[int, str, str]]) -> str:
    lines = []
    for i, path, real in outside[:_LISTED]:
        shown = os.path.relpath(path, root)
        if catalogue.images[i]:
            shown += f" ({ITEMS_FILE} row {catalogue.rows[i]}, field 'image')"
        lines.append(f"  {catalogue.ids[i]!r}: {shown} -> {real}")
    if len(outside) > _LISTED:
        lines.append(f"  ... and {len(outside) - _LISTED} more")
    return (
        f"dataset {root.name!r}: {len(outside)} item image(s) lead outside the dataset folder {root} "
        "through a symbolic link (copy the files into the folder instead):\n" + "\n".join(lines)
    )


def _missing_images_message(root: Path, catalogue: _Catalogue, item_codes: np.ndarray, missing: list[int]) -> str:
    lines = []
    for i in missing[:_LISTED]:
        item_id, cell = catalogue.ids[i], catalogue.images[i]
        if cell:
            tried = f"{cell} ({ITEMS_FILE} row {catalogue.rows[i]}, field 'image')"
        else:
            tried = ", ".join(f"{IMAGES_DIR}/{item_id}{ext}" for ext in SUPPORTED_EXTENSIONS)
        used = np.flatnonzero(item_codes == i) + 2
        where = f"{INTERACTIONS_FILE} {_rows(used)}" if len(used) else "in no interaction"
        lines.append(f"  {item_id!r}: tried {tried}; {where}")
    if len(missing) > _LISTED:
        lines.append(f"  ... and {len(missing) - _LISTED} more")
    return f"dataset {root.name!r}: {len(missing)} item(s) have no image file in {root}:\n" + "\n".join(lines)


# --- split arrays -----------------------------------------------------------------------------


def _split_arrays(
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    split: np.ndarray,
    order: np.ndarray,
    n_items: int,
    warnings: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) in chronological order, each (user, item) pair once per split."""
    users, items, split = user_codes[order], item_codes[order], split[order]
    pair = users.astype(np.int64) * n_items + items
    repeated = pd.Series(pair * 3 + split).duplicated().to_numpy()
    for code, label in enumerate(("training", "validation", "test")):
        n = int((repeated & (split == code)).sum())
        if n:
            warnings.append(
                f"{n} repeated (user, item) row(s) in the {label} split were collapsed into their first occurrence"
            )
    keep = ~repeated
    overlap = int(pd.Series(pair[keep & (split != TRAIN)]).isin(pair[split == TRAIN]).sum())
    if overlap:
        warnings.append(
            f"{overlap} validation/test interaction(s) repeat a (user, item) pair that is also in the training split"
        )
    arrays = []
    for code in (TRAIN, VAL, TEST):
        rows = keep & (split == code)
        arrays.append(np.stack([users[rows], items[rows]], axis=1).astype(np.int64))
    return arrays[0], arrays[1], arrays[2]


# --- message helpers --------------------------------------------------------------------------


def _rows(rows: np.ndarray) -> str:
    """'row 5' / 'rows 2, 3, 9 and 12 more' (rows are already 1-based spreadsheet rows)."""
    rows = np.asarray(rows).ravel()
    shown = ", ".join(str(int(r)) for r in rows[:_LISTED])
    more = f" and {len(rows) - _LISTED} more" if len(rows) > _LISTED else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {shown}{more}"


def _quote_list(values: Iterable[object]) -> str:
    values = list(values)
    shown = ", ".join(repr(str(v)) for v in values[:_LISTED])
    return shown + (f" and {len(values) - _LISTED} more" if len(values) > _LISTED else "")
