"""Importers: the public DVBPR and VisRec datasets, converted into the dataset folder format.

* `import_kang_npy`: the original DVBPR files (`AmazonFashion6ImgPartitioned.npy`,
  `AmazonWomenWithImgPartitioned.npy`, `AmazonMenWithImgPartitioned.npy`,
  `TradesyImgPartitioned.npy`): a Python 2 pickle inside .npy with the shipped split and the raw
  JPEG bytes of every item.
* `import_visrec`: the VisRec tutorial's Wikimedia and UGallery CSV files plus a folder with one
  image per item.
* `import_folder`: a copy of a dataset folder that is already in the folder format.

All write into a hidden folder next to `out_dir`, validate it with `load_dataset`, and rename it
into place at the end, so a failed or interrupted import never leaves half a dataset. All
refuse an `out_dir` that exists and is not empty. Besides the dataset files the first two write
`import.json` (`REPORT_FILE`): what was imported from where, and what was skipped.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from .data import IMAGES_DIR, INTERACTIONS_FILE, ITEMS_FILE, SPLITS, load_dataset, read_csv
from .errors import DataError
from .fsutil import atomic_write_json
from .images import CACHE_DIR, SUPPORTED_EXTENSIONS

ProgressCallback = Callable[[float, str], None]

REPORT_FILE = "import.json"
_LISTED = 10  # how many ids or problems an error message lists before "and N more"
_KANG_PARTS = "[user_train, user_validation, user_test, Item, usernum, itemnum]"


# --- the original DVBPR files (Kang et al.) ---------------------------------------------------


def import_kang_npy(
    file: str | os.PathLike,
    out_dir: str | os.PathLike,
    trust_pickle: bool,
    progress: bool = True,
    progress_callback: ProgressCallback | None = None,
    skip_missing_images: bool = False,
) -> Path:
    """Convert an original DVBPR `.npy` file into a dataset folder at `out_dir`; return its path.

    Users and items keep their indices as ids ("0".."usernum-1", "0".."itemnum-1").
    `interactions.csv` has a `split` column holding the shipped train/validation/test split
    exactly; `items.csv` has the category (`c<k>` from the argmax of the one-hot `c`, empty
    without one) and the image path; `images/<item>.jpg` are the stored bytes as they are.

    The file is a pickle, and unpickling can execute arbitrary code, so it is loaded only with
    `trust_pickle=True`. Unpickling materialises the whole object, so peak memory is about the
    file size (2-6 GB for the originals) plus a few hundred MB; image bytes are not copied
    further, and each is released once written.

    Items without image bytes raise a DataError listing them, unless `skip_missing_images` is
    set: then they and their interactions are left out, and both counts are recorded in
    `import.json` and reported through `progress_callback`.
    """
    file, out_dir = Path(file), Path(out_dir)
    if not trust_pickle:
        raise DataError(
            f"refusing to load {file}: it is a Python pickle inside .npy, and unpickling a file "
            "can execute arbitrary code. Pass trust_pickle=True (CLI: --trust-pickle) only for "
            "a file from a source you trust, such as the DVBPR authors' own download."
        )
    if not file.is_file():
        raise DataError(f"{file} does not exist or is not a file")
    _check_out_dir(out_dir)  # before the minutes-long load, not after it
    report = progress_callback or _no_report

    report(0.0, f"unpickling {file.name} (needs about its size in memory)")
    train, val, test, item_entries, n_users, n_items = _load_kang(file)
    rows = _kang_interactions(file, (train, val, test), n_users, n_items)
    del train, val, test
    images, categories = _kang_items(file, item_entries, n_items)
    del item_entries  # from here on `images` holds the only reference to each image's bytes

    missing = [i for i, raw in enumerate(images) if raw is None]
    if missing and not skip_missing_images:
        raise DataError(
            f"{file}: {len(missing)} of {n_items} item(s) have no image bytes ('imgs' missing "
            f"or empty): items {_id_list(missing)}; pass skip_missing_images=True "
            "(CLI: --skip-missing-images) to leave them and their interactions out"
        )
    skipped = np.zeros(n_items, dtype=bool)
    skipped[missing] = True
    keep_rows = ~skipped[rows[:, 1]]
    dropped = int((~keep_rows).sum())
    rows = rows[keep_rows]
    if missing:
        report(0.05, f"skipping {len(missing)} item(s) without image bytes and {dropped} interaction(s) with them")

    kept = [i for i in range(n_items) if not skipped[i]]
    with _staging(out_dir) as tmp:
        folder = tmp / IMAGES_DIR
        folder.mkdir()
        step = max(1, len(kept) // 100)
        bar = tqdm(kept, desc="writing images", unit="img", disable=not progress)
        for done, i in enumerate(bar, 1):
            (folder / f"{i}.jpg").write_bytes(_as_bytes(images[i]))
            images[i] = None  # release this image's memory now, not at the end
            if done % step == 0:
                report(0.05 + 0.85 * done / len(kept), f"wrote {done}/{len(kept)} images")

        report(0.9, "writing tables")
        _write_csv(
            tmp / INTERACTIONS_FILE,
            ["user_id", "item_id", "split"],
            ([u, i, SPLITS[s]] for u, i, s in rows.tolist()),
        )
        _write_csv(
            tmp / ITEMS_FILE,
            ["item_id", "category", "image"],
            ([i, categories[i], f"{IMAGES_DIR}/{i}.jpg"] for i in kept),
        )
        atomic_write_json(
            tmp / REPORT_FILE,
            {
                "format": "kang-npy",
                "source": str(file.absolute()),
                "usernum": n_users,
                "itemnum": n_items,
                "users_without_interactions": n_users - len(np.unique(rows[:, 0])),
                "skipped_items": len(missing),
                "skipped_item_ids": [str(i) for i in missing[:_LISTED]],
                "dropped_interactions": dropped,
            },
        )
        report(0.95, "validating the imported dataset")
        _validate(tmp, f"imported from {file}", {tmp: out_dir})
    report(1.0, f"imported {file.name} into {out_dir}")
    return out_dir


def _load_kang(file: Path) -> tuple[Any, Any, Any, Any, int, int]:
    """Unpickle the file and check its outline: the six parts, and two non-negative counts."""
    try:
        # latin1 turns Python 2 str (image bytes included) into str without loss; _as_bytes
        # turns an image back into the original bytes when it is written.
        data = np.load(file, allow_pickle=True, encoding="latin1")
    except Exception as exc:  # unpickling can fail in any way (bad opcode, unknown class, ...)
        raise DataError(f"{file}: cannot be read as a DVBPR .npy file ({type(exc).__name__}: {exc})") from None
    if not (isinstance(data, np.ndarray) and data.dtype == object and data.shape == (6,)):
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{file}: expected a pickled list {_KANG_PARTS}, found "
            f"{type(data).__name__}{f' of shape {shape}' if shape is not None else ''}"
        )
    train, val, test, items, usernum, itemnum = data.tolist()
    n_users, n_items = _count(file, usernum, "usernum"), _count(file, itemnum, "itemnum")
    return train, val, test, items, n_users, n_items


def _count(file: Path, value: object, name: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    raise DataError(f"{file}: {name} should be a non-negative integer, found {value!r}")


def _kang_interactions(file: Path, parts: tuple[Any, Any, Any], n_users: int, n_items: int) -> np.ndarray:
    """(n, 3) int64 rows `[user, item, split code]`: per user, its train, validation, test rows.

    A user's validation or test value may be one dict or a list of dicts (the original code
    reads `user_test[u][0]`). DataError listing the first problems on malformed entries.
    """
    per_split = [
        _by_index(file, part, n_users, name)
        for part, name in zip(parts, ("user_train", "user_validation", "user_test"))
    ]
    rows: list[tuple[int, int, int]] = []
    problems: list[str] = []
    for u in range(n_users):
        for code, (name, values) in enumerate(zip(SPLITS, per_split)):
            entries = values[u]
            if entries is None:
                continue
            if isinstance(entries, Mapping):
                entries = [entries]
            elif not isinstance(entries, (list, tuple, np.ndarray)):
                problems.append(
                    f"user {u} ({name}): expected a dict or a list of dicts, found {type(entries).__name__}"
                )
                continue
            for k, entry in enumerate(entries):
                item = _field(entry, "productid") if isinstance(entry, Mapping) else None
                if isinstance(item, (int, np.integer)) and not isinstance(item, bool) and 0 <= item < n_items:
                    rows.append((u, int(item), code))
                else:
                    problems.append(
                        f"user {u} ({name}) entry {k}: 'productid' should be an "
                        f"item index 0..{n_items - 1}, found {item!r}"
                    )
    if problems:
        more = f"\n  ... and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
        raise DataError(
            f"{file}: {len(problems)} malformed interaction(s):\n  " + "\n  ".join(problems[:_LISTED]) + more
        )
    if not rows:
        raise DataError(f"{file}: holds no interactions")
    return np.array(rows, dtype=np.int64)


def _kang_items(file: Path, items: Any, n_items: int) -> tuple[list[bytes | str | None], list[str]]:
    """Per item index: its raw image value (None when absent) and its category ("" if none).

    The image values are references to the unpickled objects, not copies.
    """
    entries = _by_index(file, items, n_items, "Item")
    images: list[bytes | str | None] = []
    categories: list[str] = []
    for i, entry in enumerate(entries):
        if entry is None:
            images.append(None)
            categories.append("")
            continue
        if not isinstance(entry, Mapping):
            raise DataError(f"{file}: Item[{i}] should be a dict, found {type(entry).__name__}")
        raw = _field(entry, "imgs")
        if raw is not None and not isinstance(raw, (bytes, str)):
            raise DataError(f"{file}: Item[{i}]['imgs'] should be image bytes, found {type(raw).__name__}")
        images.append(raw if raw is not None and len(raw) else None)
        categories.append(_category(_field(entry, "c")))
    return images, categories


def _by_index(file: Path, container: Any, n: int, name: str) -> list[Any]:
    """`container` (a dict keyed by index or a list) as a list of length n, None where absent."""
    if isinstance(container, Mapping):
        outside = [k for k in container if not (isinstance(k, (int, np.integer)) and 0 <= k < n)]
        if outside:
            raise DataError(f"{file}: {name} has {len(outside)} key(s) outside 0..{n - 1}: {_id_list(outside)}")
        return [container.get(i) for i in range(n)]
    if isinstance(container, (list, tuple, np.ndarray)):
        if len(container) > n:
            raise DataError(f"{file}: {name} has {len(container)} entries for {n} indices")
        return list(container) + [None] * (n - len(container))
    raise DataError(f"{file}: {name} should be a dict or a list, found {type(container).__name__}")


def _field(entry: Mapping, name: str) -> Any:
    """entry[name], also under the bytes key that encoding='bytes' or Python 3 files give."""
    for key in (name, name.encode()):
        if key in entry:
            return entry[key]
    return None


def _category(one_hot: Any) -> str:
    """'c<k>' for the largest entry of a one-hot vector, '' when there is none or it is zero."""
    if one_hot is None:
        return ""
    try:
        values = np.asarray(one_hot, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return ""
    return f"c{int(values.argmax())}" if values.size and values.any() else ""


def _as_bytes(raw: bytes | str) -> bytes:
    """The stored image bytes: latin1 loading turned Python 2 str into str; encode it back."""
    return raw.encode("latin1") if isinstance(raw, str) else raw


# --- the VisRec tutorial's Wikimedia and UGallery data ----------------------------------------


def import_visrec(
    csv_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: bool = True,
    progress_callback: ProgressCallback | None = None,
) -> Path:
    """Convert a VisRec tutorial CSV and its image folder into a dataset folder; return its path.

    Wikimedia (`user_id,item_id,timestamp,evaluation`): the `evaluation` column is kept, so
    `load_dataset` makes the rows marked true the test split, as the tutorial does.
    UGallery (`user_id,item_id,artist_id,timestamp`): `artist_id` becomes the item category.
    All columns are kept in `interactions.csv`, rows in the same order (so row numbers in error
    messages are those of `csv_path`); ids are stripped of surrounding spaces.

    Every item needs an image `<item_id>.<jpg|jpeg|png|webp>` in `images_dir`; it is
    hard-linked into `out_dir/images` when both are on one filesystem (no extra space; editing
    one then edits the other), else copied. DataError listing the first items without one.
    """
    csv_path, images_dir, out_dir = Path(csv_path), Path(images_dir), Path(out_dir)
    if not csv_path.is_file():
        raise DataError(f"{csv_path} does not exist or is not a file")
    if not images_dir.is_dir():
        raise DataError(f"image folder {images_dir} does not exist or is not a folder")
    _check_out_dir(out_dir)
    report = progress_callback or _no_report

    report(0.0, f"reading {csv_path.name}")
    df = _read_visrec_csv(csv_path)
    item_ids = pd.unique(df["item_id"].to_numpy(dtype=object)).tolist()
    found = _image_names(images_dir)
    missing = [i for i in item_ids if i not in found]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(item_ids)} item(s) in {csv_path} have no image in "
            f"{images_dir} (looked for <item_id> with {', '.join(SUPPORTED_EXTENSIONS)}): "
            f"items {_id_list(missing)}"
        )

    items = pd.DataFrame({"item_id": item_ids})
    if "artist_id" in df.columns:
        # An item's artist is the same on every row; take its first one.
        artists = df.drop_duplicates("item_id").set_index("item_id")["artist_id"]
        items["category"] = artists.loc[item_ids].str.strip().to_numpy()
    names = [_image_name(i, found[i]) for i in item_ids]
    items["image"] = [f"{IMAGES_DIR}/{n}" for n in names]

    with _staging(out_dir) as tmp:
        df.to_csv(tmp / INTERACTIONS_FILE, index=False)
        items.to_csv(tmp / ITEMS_FILE, index=False)
        folder = tmp / IMAGES_DIR
        folder.mkdir()
        link, linked = True, 0
        step = max(1, len(item_ids) // 100)
        pairs = tqdm(zip(item_ids, names), total=len(item_ids), desc="copying images", unit="img", disable=not progress)
        for done, (item_id, name) in enumerate(pairs, 1):
            link = _link_or_copy(images_dir / found[item_id], folder / name, link)
            linked += link
            if done % step == 0:
                report(0.05 + 0.85 * done / len(item_ids), f"copied {done}/{len(item_ids)} images")
        atomic_write_json(
            tmp / REPORT_FILE,
            {
                "format": "visrec",
                "source": str(csv_path.absolute()),
                "images_dir": str(images_dir.absolute()),
                "columns": list(df.columns),
                "images_linked": linked,
                "images_copied": len(item_ids) - linked,
            },
        )
        report(0.95, "validating the imported dataset")
        _validate(tmp, f"imported from {csv_path}", {tmp: out_dir, tmp / INTERACTIONS_FILE: csv_path})
    report(1.0, f"imported {csv_path.name} into {out_dir}")
    return out_dir


def _read_visrec_csv(path: Path) -> pd.DataFrame:
    """The CSV as strings, headers lower-cased, ids stripped, user_id and item_id first."""
    df = read_csv(path)
    if df is None:
        raise DataError(f"{path} is empty")
    missing = [c for c in ("user_id", "item_id") if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns)} "
            "(expected user_id,item_id,timestamp,evaluation or user_id,item_id,artist_id,timestamp)"
        )
    if len(df) == 0:
        raise DataError(f"{path} has no data rows")
    for column in ("user_id", "item_id"):
        df[column] = df[column].str.strip()
        blank = np.flatnonzero((df[column] == "").to_numpy())
        if len(blank):
            raise DataError(
                f"{path}: field {column!r} is empty on {len(blank)} row(s), e.g. row "
                f"{blank[0] + 2} (the header is row 1)"
            )
    return df[["user_id", "item_id"] + [c for c in df.columns if c not in ("user_id", "item_id")]]


def _image_names(folder: Path) -> dict[str, str]:
    """Item id -> file name in `folder`, for supported extensions in any case (.jpg first)."""
    rank = {ext: r for r, ext in enumerate(SUPPORTED_EXTENSIONS)}
    best: dict[str, tuple[int, str]] = {}
    for name in os.listdir(folder):
        stem, dot, ext = name.rpartition(".")
        r = rank.get(dot + ext.lower())
        if r is not None and stem and (stem not in best or r < best[stem][0]):
            best[stem] = (r, name)
    return {stem: name for stem, (_, name) in best.items()}


def _image_name(item_id: str, source_name: str) -> str:
    """`<item_id><ext>` with the source's extension, lower-cased."""
    return item_id + os.path.splitext(source_name)[1].lower()


def _link_or_copy(src: Path, dst: Path, link: bool) -> bool:
    """Hard-link src to dst if `link`, else (or when linking fails) copy; True when linked."""
    if link:
        try:
            os.link(src, dst)
            return True
        except OSError:  # another filesystem, or one without hard links: copy from now on
            pass
    shutil.copyfile(src, dst)
    return False


# --- a dataset folder -------------------------------------------------------------------------


def import_folder(
    source: str | os.PathLike, out_dir: str | os.PathLike, progress_callback: ProgressCallback | None = None
) -> Path:
    """Copy a dataset folder (without its image caches) to `out_dir`; return its path.

    The source is validated first (`load_dataset`) and refused, before anything is written, when
    it is not a valid dataset or holds a symbolic link that is absolute or leads outside it (the
    copy must not read, or point to, anything outside the folder). Links inside it are copied as
    links; the copy is validated again before it is renamed into place.
    """
    source, out_dir = Path(source).expanduser(), Path(out_dir)
    _check_out_dir(out_dir)
    if Path(os.path.realpath(out_dir)).is_relative_to(os.path.realpath(source)):
        raise DataError(f"refusing to copy {source} into {out_dir}, a folder inside it")
    report = progress_callback or _no_report
    report(0.0, f"validating {source}")
    load_dataset(source)
    files, leaving = _walk_links(source)
    if leaving:
        more = f" and {len(leaving) - _LISTED} more" if len(leaving) > _LISTED else ""
        raise DataError(
            f"refusing to copy {source}: {len(leaving)} symbolic link(s) are absolute or lead outside it: "
            f"{', '.join(leaving[:_LISTED])}{more} (copy the files they point to into the folder instead)"
        )
    copied = 0
    step = max(1, files // 100)

    def copy(src: str, dst: str) -> None:
        nonlocal copied
        shutil.copy2(src, dst)
        copied += 1
        if copied % step == 0:
            report(0.05 + 0.85 * copied / files, f"copied {copied}/{files} files")

    with _staging(out_dir) as tmp:
        shutil.copytree(
            source, tmp, symlinks=True, dirs_exist_ok=True, copy_function=copy, ignore=shutil.ignore_patterns(CACHE_DIR)
        )
        report(0.95, "validating the copy")
        _validate(tmp, f"copied from {source}", {tmp: source})
    report(1.0, f"imported {source} into {out_dir}")
    return out_dir


def _walk_links(folder: Path) -> tuple[int, list[str]]:
    """(files under `folder` outside its image caches, its symbolic links that are absolute or
    lead outside it as 'path -> target'); links are not followed."""
    prefix = os.path.join(os.path.realpath(folder), "")
    files, leaving, stack = 0, [], [os.fspath(folder)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    target = os.readlink(entry.path)
                    if os.path.isabs(target) or not os.path.realpath(entry.path).startswith(prefix):
                        leaving.append(f"{os.path.relpath(entry.path, folder)} -> {target}")
                elif entry.is_dir():
                    if entry.name != CACHE_DIR:
                        stack.append(entry.path)
                else:
                    files += 1
    return files, leaving


# --- shared -----------------------------------------------------------------------------------


def _no_report(fraction: float, message: str) -> None:
    pass


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(
            f"refusing to write into {out_dir}: it exists and is not an empty folder "
            "(choose a new output folder, or empty this one)"
        )


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A new hidden folder next to `out_dir`, renamed to `out_dir` when the block succeeds.

    On any failure (or interruption) the hidden folder is removed, so `out_dir` either holds
    the whole dataset or is as it was.
    """
    tmp = out_dir.parent / f".{out_dir.name}.importing-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=True)
        yield tmp
        _check_out_dir(out_dir)  # something may have been written there meanwhile
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(tmp, out_dir)
    except OSError as exc:  # e.g. a full disk or no write permission: say where, no traceback
        raise DataError(f"cannot write the dataset {out_dir} (staged in {tmp}): {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _validate(folder: Path, origin: str, shown: Mapping[Path, Path]) -> None:
    """load_dataset on the staged folder; its DataError prefixed with where the data came from.

    The staging folder is gone once this fails, so the message names what the person knows:
    `shown` maps the staged folder (and staged files) to the folder or file to name instead."""
    try:
        load_dataset(folder)
    except DataError as exc:
        message = str(exc)
        for staged, real in sorted(shown.items(), key=lambda kv: -len(str(kv[0]))):  # files first
            message = message.replace(str(staged), str(real))
        message = message.replace(repr(folder.name), repr(shown[folder].name))  # "dataset '<name>'"
        raise DataError(f"the data {origin} is not a valid dataset: {message}") from None


def _write_csv(path: Path, header: list[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _id_list(ids: list[Any]) -> str:
    shown = ", ".join(str(i) for i in ids[:_LISTED])
    return shown + (f" and {len(ids) - _LISTED} more" if len(ids) > _LISTED else "")
