"""Importers of the public datasets: small files in the exact original formats, built here.

Kang's .npy files are pickled object arrays `[user_train, user_validation, user_test, Item,
usernum, itemnum]`, written by Python 2; the VisRec tutorial's are CSV files plus an image folder.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dvbpr.cli import main
from dvbpr.data import Dataset, load_dataset
from dvbpr.errors import DataError
from dvbpr.importers import REPORT_FILE, import_kang_npy, import_visrec
from tests.helpers import item_colour, write_csv, write_image

N_USERS, N_ITEMS, N_CATEGORIES = 4, 8, 3


def rows_of(ds: Dataset, split: str) -> list[tuple[str, str]]:
    arr = ds.split(split)
    return list(zip(ds.users.to_ids(arr[:, 0]), ds.items.to_ids(arr[:, 1])))


def jpeg_bytes(index: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), item_colour(index)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def one_hot(k: int) -> list[float]:
    return [1.0 if j == k else 0.0 for j in range(N_CATEGORIES)]


# --- Kang .npy files --------------------------------------------------------------------------


def kang_parts(str_keys: frozenset[int] = frozenset({1, 5})) -> list[Any]:
    """A small dataset in the original layout: dicts keyed by index, Python-2-style bytes keys.

    Items in `str_keys` (and user 1's rows) use str keys instead, as a Python 3 file would.
    User u trains on items u, u+1, u+2 and has u+3 as validation, u+4 as test (mod N_ITEMS);
    validation is a single dict for even users and a list of one dict for odd ones. Item i has
    category i % 3, except item 3 (no 'c') and item 6 (an all-zero 'c').
    """

    def key(name: str, use_str: bool) -> str | bytes:
        return name if use_str else name.encode()

    def row(u: int, item: int) -> dict:
        return {key("productid", u == 1): item, key("reviewerID", u == 1): f"A{u}".encode()}

    user_train = {u: [row(u, (u + k) % N_ITEMS) for k in range(3)] for u in range(N_USERS)}
    user_validation = {
        u: row(u, (u + 3) % N_ITEMS) if u % 2 == 0 else [row(u, (u + 3) % N_ITEMS)] for u in range(N_USERS)
    }
    user_test = {u: [row(u, (u + 4) % N_ITEMS)] for u in range(N_USERS)}
    items = {}
    for i in range(N_ITEMS):
        entry = {key("imgs", i in str_keys): jpeg_bytes(i)}
        if i != 3:
            entry[key("c", i in str_keys)] = [0.0] * N_CATEGORIES if i == 6 else one_hot(i % 3)
        items[i] = entry
    return [user_train, user_validation, user_test, items, N_USERS, N_ITEMS]


def expected_splits(parts: list[Any]) -> dict[str, list[tuple[str, str]]]:
    """The shipped split as (user id, item id) pairs, in the order the importer writes them."""

    def pairs(per_user: dict) -> list[tuple[str, str]]:
        out = []
        for u in range(N_USERS):
            rows = per_user[u] if isinstance(per_user[u], list) else [per_user[u]]
            for r in rows:
                out.append((str(u), str(r.get("productid", r.get(b"productid")))))
        return out

    return {name: pairs(p) for name, p in zip(("train", "val", "test"), parts[:3])}


def object_array(parts: list[Any]) -> np.ndarray:
    arr = np.empty(len(parts), dtype=object)
    for k, part in enumerate(parts):  # element-wise, so numpy never nests lists into 2-D
        arr[k] = part
    return arr


def save_kang(path: Path, parts: list[Any]) -> Path:
    np.save(path, object_array(parts), allow_pickle=True)
    return path


class _Python2Pickler(pickle._Pickler):  # type: ignore[name-defined]  # the pure-Python one
    """Writes bytes as Python 2 `str` (BINSTRING), as the authors' Python 2 files hold them."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def save_python2_kang(path: Path, parts: list[Any]) -> Path:
    """A .npy file with a protocol-2 pickle whose byte strings are Python 2 str."""
    arr = object_array(parts)
    header = {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False, "shape": arr.shape}
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        _Python2Pickler(fh, protocol=2).dump(arr)
    return path


def leftovers(folder: Path) -> list[str]:
    """Hidden staging folders an import left behind."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def import_error(fn: Callable[..., Path], *args: Any, **kwargs: Any) -> str:
    with pytest.raises(DataError) as exc:
        fn(*args, **kwargs)
    return str(exc.value)


def test_kang_refuses_without_trust_pickle_and_loads_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    # Unpickling this runs os.mkdir(marker): what a malicious file could do.
    evil = type("Evil", (), {"__reduce__": lambda self: (os.mkdir, (str(marker),))})
    path = save_kang(tmp_path / "evil.npy", [evil(), {}, {}, {}, 0, 0])
    message = import_error(import_kang_npy, path, tmp_path / "out", trust_pickle=False)
    assert "pickle" in message and "arbitrary code" in message
    assert "trust_pickle=True" in message and "--trust-pickle" in message
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_kang_keeps_the_shipped_split_exactly(tmp_path: Path) -> None:
    parts = kang_parts()
    out = import_kang_npy(save_kang(tmp_path / "f.npy", parts), tmp_path / "out", trust_pickle=True, progress=False)
    assert out == tmp_path / "out"
    ds = load_dataset(out)
    for split, pairs in expected_splits(parts).items():
        assert rows_of(ds, split) == pairs, split
    assert ds.users.ids == [str(u) for u in range(N_USERS)]
    assert ds.items.ids == [str(i) for i in range(N_ITEMS)]
    assert ds.warnings == []


def test_kang_writes_image_bytes_unchanged(tmp_path: Path) -> None:
    out = import_kang_npy(
        save_kang(tmp_path / "f.npy", kang_parts()), tmp_path / "out", trust_pickle=True, progress=False
    )
    ds = load_dataset(out)
    for i, path in enumerate(ds.image_paths):
        assert path == out / "images" / f"{i}.jpg"
        assert path.read_bytes() == jpeg_bytes(i)


def test_kang_categories_come_from_the_one_hot(tmp_path: Path) -> None:
    out = import_kang_npy(
        save_kang(tmp_path / "f.npy", kang_parts()), tmp_path / "out", trust_pickle=True, progress=False
    )
    expected = [f"c{i % 3}" for i in range(N_ITEMS)]
    expected[3] = expected[6] = ""  # no 'c', and an all-zero one
    assert load_dataset(out).item_categories == expected


def test_kang_reads_a_python2_file_with_str_images(tmp_path: Path) -> None:
    parts = kang_parts(str_keys=frozenset())
    parts[3][0][b"c"] = np.array(one_hot(2))  # a pickled numpy array, as Python 2 wrote it
    path = save_python2_kang(tmp_path / "py2.npy", parts)
    with pytest.raises(UnicodeError):  # proof that the file holds Python 2 str
        np.load(path, allow_pickle=True)
    out = import_kang_npy(path, tmp_path / "out", trust_pickle=True, progress=False)
    ds = load_dataset(out)
    assert [p.read_bytes() for p in ds.image_paths] == [jpeg_bytes(i) for i in range(N_ITEMS)]
    assert ds.item_categories[0] == "c2"
    for split, pairs in expected_splits(parts).items():
        assert rows_of(ds, split) == pairs, split


def test_kang_missing_image_bytes_are_listed_and_nothing_is_written(tmp_path: Path) -> None:
    parts = kang_parts()
    parts[3][2][b"imgs"] = b""
    del parts[3][4][b"imgs"]
    del parts[3][7]  # no entry at all
    message = import_error(
        import_kang_npy, save_kang(tmp_path / "f.npy", parts), tmp_path / "out", trust_pickle=True, progress=False
    )
    assert "3 of 8 item(s) have no image bytes" in message
    assert "items 2, 4, 7" in message and "--skip-missing-images" in message
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_kang_skip_missing_images_drops_them_and_counts(tmp_path: Path) -> None:
    parts = kang_parts()
    parts[3][2][b"imgs"] = b""
    messages: list[str] = []
    out = import_kang_npy(
        save_kang(tmp_path / "f.npy", parts),
        tmp_path / "out",
        trust_pickle=True,
        progress=False,
        skip_missing_images=True,
        progress_callback=lambda fraction, message: messages.append(message),
    )
    ds = load_dataset(out)
    assert "2" not in ds.items.ids and len(ds.items) == N_ITEMS - 1
    expected = expected_splits(parts)
    dropped = 0
    for split, pairs in expected.items():
        kept = [p for p in pairs if p[1] != "2"]
        dropped += len(pairs) - len(kept)
        assert rows_of(ds, split) == kept, split
    assert dropped == 3  # item 2 is in the training rows of users 0, 1 and 2
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["skipped_items"] == 1 and report["skipped_item_ids"] == ["2"]
    assert report["dropped_interactions"] == dropped
    assert any("skipping 1 item(s) without image bytes and 3 interaction(s)" in m for m in messages)


def test_kang_refuses_a_non_empty_out_dir_but_fills_an_empty_one(tmp_path: Path) -> None:
    path = save_kang(tmp_path / "f.npy", kang_parts())
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    message = import_error(import_kang_npy, path, busy, trust_pickle=True, progress=False)
    assert "refusing to write into" in message and str(busy) in message
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert load_dataset(import_kang_npy(path, tmp_path / "empty", trust_pickle=True, progress=False)).n_users == N_USERS


def test_kang_interrupted_import_leaves_no_partial_folder(tmp_path: Path) -> None:
    def interrupt(fraction: float, message: str) -> None:
        if message.startswith("wrote 3/"):
            raise KeyboardInterrupt

    path = save_kang(tmp_path / "f.npy", kang_parts())
    with pytest.raises(KeyboardInterrupt):
        import_kang_npy(path, tmp_path / "out", trust_pickle=True, progress=False, progress_callback=interrupt)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_kang_malformed_files_are_named(tmp_path: Path) -> None:
    parts = kang_parts()
    parts[2][1] = [{"productid": 99}]
    message = import_error(
        import_kang_npy, save_kang(tmp_path / "bad.npy", parts), tmp_path / "out", trust_pickle=True, progress=False
    )
    assert "user 1 (test) entry 0" in message and "found 99" in message
    np.save(tmp_path / "numbers.npy", np.arange(6))
    message = import_error(
        import_kang_npy, tmp_path / "numbers.npy", tmp_path / "out", trust_pickle=True, progress=False
    )
    assert "expected a pickled list" in message
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# --- VisRec CSV files -------------------------------------------------------------------------


def visrec_images(folder: Path, item_ids: list[str], skip: tuple[str, ...] = ()) -> Path:
    for k, item in enumerate(item_ids):
        if item not in skip:  # one PNG among the JPEGs, as real folders mix them
            write_image(folder / f"{item}.{'png' if k == 1 else 'jpg'}", item_colour(k))
    return folder


WIKI_ROWS = [  # user_id,item_id,timestamp,evaluation: the held-out row is not the last one
    ("7", "101", "1500000000", "False"),
    ("7", "102", "1500000100", "False"),
    ("7", "103", "1500000200", "True"),
    ("7", "104", "1500000300", "False"),
    ("9", "102", "1500000050", "False"),
    ("9", "105", "1500000060", "True"),
]
WIKI_ITEMS = ["101", "102", "103", "104", "105"]


def write_wikimedia(tmp_path: Path, skip: tuple[str, ...] = ()) -> tuple[Path, Path]:
    csv_path = write_csv(
        tmp_path / "wikimedia.csv",
        [dict(zip(("user_id", "item_id", "timestamp", "evaluation"), r)) for r in WIKI_ROWS],
    )
    return csv_path, visrec_images(tmp_path / "imgs", WIKI_ITEMS, skip)


def test_visrec_wikimedia_test_rows_are_the_evaluation_rows(tmp_path: Path) -> None:
    csv_path, images = write_wikimedia(tmp_path)
    out = import_visrec(csv_path, images, tmp_path / "out", progress=False)
    ds = load_dataset(out)
    held_out = [(u, i) for u, i, _, ev in WIKI_ROWS if ev == "True"]
    assert sorted(rows_of(ds, "test")) == sorted(held_out)
    assert rows_of(ds, "val") == [("7", "104")]  # the last non-test row of a 4-row user
    assert ds.items.ids == WIKI_ITEMS
    for k, (item, path) in enumerate(zip(WIKI_ITEMS, ds.image_paths)):
        source = images / f"{item}.{'png' if k == 1 else 'jpg'}"
        assert path.name == source.name and path.read_bytes() == source.read_bytes()
    header = (out / "interactions.csv").read_text().splitlines()[0]
    assert header == "user_id,item_id,timestamp,evaluation"
    report = json.loads((out / REPORT_FILE).read_text())
    assert (report["images_linked"], report["images_copied"]) == (len(WIKI_ITEMS), 0)


def test_visrec_invalid_rows_are_reported_with_the_source_file(tmp_path: Path) -> None:
    csv_path, images = write_wikimedia(tmp_path)
    csv_path.write_text(csv_path.read_text().replace("True", "maybe", 1))
    message = import_error(import_visrec, csv_path, images, tmp_path / "out", progress=False)
    # the CSV itself is named (not the staging folder, which is gone), with its row numbers
    assert f"imported from {csv_path} is not a valid dataset: {csv_path}: field 'evaluation'" in message
    assert "field 'evaluation' has an unknown value on 1 row(s): row 4" in message and ".importing-" not in message
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_visrec_unwritable_out_dir_is_a_data_error(tmp_path: Path) -> None:
    csv_path, images = write_wikimedia(tmp_path)
    (tmp_path / "a-file").write_text("")
    message = import_error(import_visrec, csv_path, images, tmp_path / "a-file" / "out", progress=False)
    assert "cannot write the dataset" in message


def test_visrec_ugallery_artist_becomes_the_category(tmp_path: Path) -> None:
    rows = [
        ("u1", "a", "x1", "10"),
        ("u1", "b", "x2", "20"),
        ("u1", "c", "x1", "30"),
        ("u2", "b", "x2", "15"),
        ("u2", "a", "x1", "25"),
    ]
    csv_path = write_csv(
        tmp_path / "ugallery.csv",
        [dict(zip(("user_id", "item_id", "artist_id", "timestamp"), r)) for r in rows],
    )
    images = visrec_images(tmp_path / "imgs", ["a", "b", "c"])
    ds = load_dataset(import_visrec(csv_path, images, tmp_path / "out", progress=False))
    assert ds.items.ids == ["a", "b", "c"]
    assert ds.item_categories == ["x1", "x2", "x1"]
    assert rows_of(ds, "test") == [("u2", "a"), ("u1", "c")]  # chronological: last per user
    assert rows_of(ds, "val") == [("u1", "b")]


def test_visrec_missing_images_are_listed_and_nothing_is_written(tmp_path: Path) -> None:
    csv_path, images = write_wikimedia(tmp_path, skip=("103", "105"))
    message = import_error(import_visrec, csv_path, images, tmp_path / "out", progress=False)
    assert "2 of 5 item(s)" in message and "items 103, 105" in message
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_visrec_copies_when_hard_links_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    csv_path, images = write_wikimedia(tmp_path)
    monkeypatch.setattr(os, "link", no_links)
    out = import_visrec(csv_path, images, tmp_path / "out", progress=False)
    report = json.loads((out / REPORT_FILE).read_text())
    assert (report["images_linked"], report["images_copied"]) == (0, len(WIKI_ITEMS))
    assert (out / "images" / "101.jpg").read_bytes() == (images / "101.jpg").read_bytes()


# --- command line -----------------------------------------------------------------------------


def test_cli_import_kang_npy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_kang(tmp_path / "f.npy", kang_parts())
    out = tmp_path / "out"
    assert main(["import", "kang-npy", str(path), "--out", str(out)]) == 2
    assert "pickle" in capsys.readouterr().err and not out.exists()

    assert main(["import", "kang-npy", str(path), "--out", str(out), "--trust-pickle"]) == 0
    stdout = capsys.readouterr().out
    assert f"users: {N_USERS}" in stdout and f"interactions: {3 * N_USERS + 8}" in stdout
    assert "train: 12" in stdout and "validation: 4" in stdout and "test: 4" in stdout

    assert main(["import", "kang-npy", str(path), "--out", str(out), "--trust-pickle"]) == 2
    assert "refusing to write into" in capsys.readouterr().err


def test_cli_import_kang_npy_skip_missing_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = kang_parts()
    parts[3][2][b"imgs"] = b""
    path = save_kang(tmp_path / "f.npy", parts)
    args = ["import", "kang-npy", str(path), "--out", str(tmp_path / "out"), "--trust-pickle"]
    assert main(args) == 2
    assert "have no image bytes" in capsys.readouterr().err
    assert main(args + ["--skip-missing-images"]) == 0
    assert "skipped 1 item(s) without image bytes (e.g. 2) and 3 interaction(s)" in (capsys.readouterr().out)


def test_cli_import_visrec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path, images = write_wikimedia(tmp_path)
    out = tmp_path / "out"
    assert main(["import", "visrec", str(csv_path), str(images), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "users: 2" in stdout and "items: 5" in stdout and "test: 2" in stdout
    assert main(["import", "visrec", str(csv_path), str(tmp_path / "nope"), "--out", str(tmp_path / "other")]) == 2
    assert "image folder" in capsys.readouterr().err
