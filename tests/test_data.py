"""Dataset folder loading: split rules, id maps, derived arrays, info and every DataError."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dvbpr.data import Dataset, IdMap, ImagePaths, load_dataset
from dvbpr.errors import DataError, UnknownIdError
from tests.helpers import make_tiny_dataset, write_csv, write_image


def rows_of(ds: Dataset, split: str) -> list[tuple[str, str]]:
    """A split as (user id, item id) pairs, in array order."""
    arr = ds.split(split)
    return list(zip(ds.users.to_ids(arr[:, 0]), ds.items.to_ids(arr[:, 1])))


def interactions(*pairs: str, **columns: list[object]) -> list[dict[str, object]]:
    """Rows from "user:item" strings plus extra columns given as lists."""
    rows = []
    for k, pair in enumerate(pairs):
        user, item = pair.split(":")
        rows.append({"user_id": user, "item_id": item, **{c: v[k] for c, v in columns.items()}})
    return rows


def dataset_with(tmp_path: Path, rows: list[dict[str, object]], **kwargs: object) -> Dataset:
    kwargs.setdefault("n_items", 1 + max(int(str(r["item_id"])[1:]) for r in rows))
    return load_dataset(make_tiny_dataset(tmp_path / "ds", interactions=rows, **kwargs))


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(DataError) as exc:
        load_dataset(path, **kwargs)
    return str(exc.value)


# --- split rules ------------------------------------------------------------------------------


def test_split_column_is_obeyed(tmp_path: Path) -> None:
    rows = interactions(
        "u0:i0", "u0:i1", "u0:i2", "u1:i3", "u1:i0",
        split=["train", " Validation ", "TEST", "valid", "val"],
    )  # fmt: skip
    ds = dataset_with(tmp_path, rows)
    assert rows_of(ds, "train") == [("u0", "i0")]
    assert rows_of(ds, "val") == [("u0", "i1"), ("u1", "i3"), ("u1", "i0")]
    assert rows_of(ds, "test") == [("u0", "i2")]


def test_evaluation_column_marks_test_and_last_other_row_is_validation(tmp_path: Path) -> None:
    rows = interactions(
        "u0:i0", "u0:i1", "u0:i2", "u0:i3",  # test in the middle: val is the last non-test row
        "u1:i0", "u1:i1",                    # 2 interactions: no validation
        "u2:i0", "u2:i1", "u2:i2",           # 3, none marked: last is validation, no test
        "u3:i0", "u3:i1", "u3:i2",           # 3 with 2 tests: no training row would be left
        evaluation=["0", "TRUE", "no", "false", "", "yes", "False", "0", "", "1", "true", "0"],
    )  # fmt: skip
    ds = dataset_with(tmp_path, rows)
    assert rows_of(ds, "test") == [("u0", "i1"), ("u1", "i1"), ("u3", "i0"), ("u3", "i1")]
    assert rows_of(ds, "val") == [("u0", "i3"), ("u2", "i2")]
    assert rows_of(ds, "train") == [
        ("u0", "i0"),
        ("u0", "i2"),
        ("u1", "i0"),
        ("u2", "i0"),
        ("u2", "i1"),
        ("u3", "i2"),
    ]


def test_chronological_split_uses_timestamps_not_file_order(tmp_path: Path) -> None:
    rows = interactions(
        "u0:i3", "u0:i1", "u1:i0", "u0:i2", "u0:i0",
        timestamp=[40, 20, 5, 30, 10],
    )  # fmt: skip
    ds = dataset_with(tmp_path, rows)
    # u0 in time order: i0 (10), i1 (20), i2 (30), i3 (40).
    assert rows_of(ds, "test") == [("u0", "i3")]
    assert rows_of(ds, "val") == [("u0", "i2")]
    assert rows_of(ds, "train") == [("u1", "i0"), ("u0", "i0"), ("u0", "i1")]  # chronological
    assert ds.users.ids == ["u0", "u1"]  # users: first appearance in the file
    assert ds.items.ids == ["i0", "i1", "i2", "i3"]  # items.csv order


def test_iso_timestamps_with_zones_are_ordered_in_time(tmp_path: Path) -> None:
    rows = interactions(
        "u0:i0", "u0:i1", "u0:i2",
        timestamp=["2024-03-02T00:30:00+02:00", "2024-03-01", "2024-03-01T23:00:00"],
    )  # fmt: skip
    ds = dataset_with(tmp_path, rows)
    # UTC: i0 = 03-01 22:30, i1 = 03-01 00:00, i2 = 03-01 23:00.
    assert rows_of(ds, "train") == [("u0", "i1")]
    assert rows_of(ds, "val") == [("u0", "i0")]
    assert rows_of(ds, "test") == [("u0", "i2")]


def test_file_order_split_by_number_of_interactions(tmp_path: Path) -> None:
    rows = interactions(
        "u1:i0",                        # 1 interaction: train only
        "u2:i0", "u2:i1",               # 2: train, test
        "u3:i2", "u3:i0", "u3:i1",      # 3: train, val, test
        "u4:i0", "u4:i1", "u4:i2", "u4:i3",
    )  # fmt: skip
    ds = dataset_with(tmp_path, rows)
    assert rows_of(ds, "train") == [
        ("u1", "i0"),
        ("u2", "i0"),
        ("u3", "i2"),
        ("u4", "i0"),
        ("u4", "i1"),
    ]
    assert rows_of(ds, "val") == [("u3", "i0"), ("u4", "i2")]
    assert rows_of(ds, "test") == [("u2", "i1"), ("u3", "i1"), ("u4", "i3")]


def test_split_arrays_are_int64_pairs(tmp_path: Path) -> None:
    ds = load_dataset(make_tiny_dataset(tmp_path / "ds"))
    for arr in (ds.train, ds.val, ds.test):
        assert arr.dtype == np.int64 and arr.ndim == 2 and arr.shape[1] == 2


# --- derived arrays, warnings, items ----------------------------------------------------------


def test_cold_items_and_popularity(tmp_path: Path) -> None:
    rows = interactions("u0:i0", "u0:i1", "u0:i2", "u1:i0", "u1:i2")
    ds = dataset_with(tmp_path, rows, n_items=5)  # i3, i4 only in items.csv
    # train: u0 -> i0, u1 -> i0; i1 is val, i2 test for u0 and test for u1.
    assert ds.item_popularity.tolist() == [2, 0, 0, 0, 0]
    assert ds.item_popularity.dtype == np.int64
    assert ds.cold_items.tolist() == [False, True, True, True, True]


def test_user_items_csr_chronological_and_deduplicated(tmp_path: Path) -> None:
    rows = interactions(
        "u0:i2", "u0:i0", "u0:i2", "u0:i1", "u1:i9", "u1:i8", "u0:i5", "u0:i6",
        split=["train", "train", "train", "train", "test", "test", "val", "test"],
    )  # fmt: skip
    ds = dataset_with(tmp_path, rows)
    indptr, indices = ds.user_items("train")
    assert indptr.tolist() == [0, 3, 3]  # u1 has no training rows but is still a row
    assert ds.items.to_ids(indices) == ["i2", "i0", "i1"]
    assert any("1 repeated (user, item) row(s) in the training split" in w for w in ds.warnings)
    indptr, indices = ds.user_items("test")
    assert indptr.tolist() == [0, 1, 3]
    assert ds.items.to_ids(indices) == ["i6", "i9", "i8"]
    assert ds.user_items("validation")[1].tolist() == [ds.items.index("i5")]
    assert ds.user_items("train") is ds.user_items("train")  # computed once
    with pytest.raises(ValueError, match="unknown split"):
        ds.user_items("dev")


def test_overlap_of_test_with_train_is_warned(tmp_path: Path) -> None:
    rows = interactions("u0:i0", "u0:i1", "u0:i0", split=["train", "train", "test"])
    ds = dataset_with(tmp_path, rows)
    assert len(ds.test) == 1
    assert any("1 validation/test interaction(s) repeat" in w for w in ds.warnings)


def test_items_csv_order_titles_categories_and_extra_items(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_tiny_dataset(root, interactions=interactions("u0:i9", "u0:i1", "u0:x"), n_items=3, items_csv=False)
    write_csv(root / "items.csv", [
        {"item_id": "i2", "category": "bags", "title": "", "price": "9"},
        {"item_id": "i1", "category": "", "title": "Red shoe"},
        {"item_id": "i0", "category": "bags", "title": "Tote"},
    ])  # fmt: skip
    write_image(root / "images" / "x.JPEG", (1, 2, 3))
    write_image(root / "images" / "i9.webp", (1, 2, 3))
    ds = load_dataset(root)
    assert ds.items.ids == ["i2", "i1", "i0", "i9", "x"]
    assert ds.item_titles == ["i2", "Red shoe", "Tote", "i9", "x"]
    assert ds.item_categories == ["bags", "", "bags", "", ""]
    assert [p.name for p in ds.image_paths] == ["i2.png", "i1.png", "i0.png", "i9.webp", "x.JPEG"]
    assert all(p.is_absolute() for p in ds.image_paths)
    assert any("2 item(s) appear in interactions.csv but not in items.csv" in w for w in ds.warnings)


def test_image_column_paths_and_extension_preference(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n_items=2, per_user=1, n_users=2, items_csv=False)
    write_image(root / "images" / "i0.jpg", (9, 9, 9))  # .jpg wins over the .png also there
    write_image(root / "pics" / "second.webp", (9, 9, 9))
    write_csv(
        root / "items.csv",
        [{"item_id": "i0", "image": ""}, {"item_id": "i1", "image": "pics/second.webp"}],
    )
    ds = load_dataset(root)
    assert ds.image_paths == [
        root.absolute() / "images" / "i0.jpg",
        root.absolute() / "pics" / "second.webp",
    ]


def test_info_on_hand_built_dataset(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "shop", n_users=3, n_items=5, per_user=3, categories=("a", "b", "", "a", "c"))
    info = load_dataset(root).info()
    assert set(info) == {
        "name", "path", "users", "items", "interactions", "train", "validation", "test",
        "cold_items", "categories", "category_counts",
    }  # fmt: skip
    # users u0..u2 take items (0,1,2), (1,2,3), (2,3,4): train i0, i1, i2; i3, i4 are cold.
    assert info == {
        "name": "shop",
        "path": str(root.absolute()),
        "users": 3,
        "items": 5,
        "interactions": 9,
        "train": 3,
        "validation": 3,
        "test": 3,
        "cold_items": 2,
        "categories": 3,
        "category_counts": {"a": 2, "b": 1, "c": 1},
    }


def test_extra_columns_bom_and_whitespace_are_tolerated(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n_items=2, n_users=1, per_user=2)
    (root / "interactions.csv").write_text("\ufeff User_ID ,item_id,rating\n u0 ,i0,5\nu0, i1 ,4\n")
    ds = load_dataset(root)
    assert ds.users.ids == ["u0"] and rows_of(ds, "test") == [("u0", "i1")]


def test_fingerprint_tracks_csvs_and_images(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds")
    ds = load_dataset(root)
    first = ds.fingerprint()
    assert first == load_dataset(root).fingerprint() and len(first) == 64
    image = ds.image_paths[0]
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = ds.fingerprint()
    assert second != first
    with (root / "interactions.csv").open("a") as fh:
        fh.write("u9,i0\n")
    assert load_dataset(root).fingerprint() != second


def test_hand_built_dataset_derives_arrays_and_wraps_paths(tmp_path: Path) -> None:
    ds = Dataset(
        root=tmp_path,
        name="hand",
        users=IdMap(["a", "b"], "user"),
        items=IdMap(["x", "y", "z"], "item"),
        item_categories=["", "", ""],
        item_titles=["x", "y", "z"],
        image_paths=[tmp_path / "x.png", tmp_path / "y.png", tmp_path / "z.png"],
        train=np.array([[0, 1], [1, 1]], dtype=np.int64),
        val=np.zeros((0, 2), dtype=np.int64),
        test=np.array([[0, 2]], dtype=np.int64),
    )
    assert ds.item_popularity.tolist() == [0, 2, 0] and ds.cold_items.tolist() == [
        True,
        False,
        True,
    ]
    assert isinstance(ds.image_paths, ImagePaths) and ds.image_paths[1] == tmp_path / "y.png"
    assert ds.image_paths[1:] == [tmp_path / "y.png", tmp_path / "z.png"]
    assert ds.image_paths.strings[0] == str(tmp_path / "x.png") and len(ds.image_paths) == 3
    assert ds.user_items("test")[0].tolist() == [0, 1, 1]


# --- IdMap ------------------------------------------------------------------------------------


def test_idmap_round_trip_and_unknown_ids() -> None:
    m = IdMap(["b", "a", "c"], "item")
    assert len(m) == 3 and "a" in m and "z" not in m
    assert m.index("c") == 2 and m.id(1) == "a"
    idx = m.indices(["c", "b", "c"])
    assert idx.dtype == np.int64 and idx.tolist() == [2, 0, 2]
    assert m.to_ids(idx) == ["c", "b", "c"]
    assert m.to_ids(np.array([[1]])) == ["a"]
    with pytest.raises(UnknownIdError) as exc:
        m.index("z")
    assert str(exc.value) == "unknown item 'z'"
    with pytest.raises(UnknownIdError, match=r"unknown item ids 'x', 'y' \(2 distinct unknown among 4\)"):
        m.indices(["a", "x", "y", "x"])
    with pytest.raises(IndexError):
        m.id(3)
    with pytest.raises(IndexError):
        m.to_ids([-1])
    assert IdMap(np.array(["u1", "u2"]), "user") == IdMap(["u1", "u2"])
    assert type(IdMap(np.array(["u1"])).ids[0]) is str
    with pytest.raises(DataError, match="duplicate user ids 'u1'"):
        IdMap(["u1", "u2", "u1"], "user")


# --- DataError messages -----------------------------------------------------------------------


def test_missing_folder_file_and_not_a_folder(tmp_path: Path) -> None:
    assert "does not exist" in error_of(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in error_of(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    msg = error_of(tmp_path / "empty")
    assert "'empty' has no interactions.csv" in msg


def test_missing_columns_are_named_with_the_columns_found(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds")
    (root / "interactions.csv").write_text("user,item_id\nu0,i0\n")
    msg = error_of(root)
    assert "interactions.csv" in msg and "missing required column(s) 'user_id'" in msg
    assert "columns found: 'user', 'item_id'" in msg


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds")
    (root / "interactions.csv").write_text("")
    assert "dataset 'ds' has no interactions" in error_of(root)
    (root / "interactions.csv").write_text("user_id,item_id\n")
    assert "dataset 'ds' has no interactions" in error_of(root)


def test_empty_ids_name_rows_and_count(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds")
    (root / "interactions.csv").write_text("user_id,item_id\nu0,i0\n ,i1\nu1,i1\n,i2\n")
    msg = error_of(root)
    assert str(root / "interactions.csv") in msg
    assert "field 'user_id' is empty on 2 row(s): rows 3, 5" in msg


def test_bad_split_values_name_rows(tmp_path: Path) -> None:
    rows = interactions("u0:i0", "u0:i1", "u0:i2", split=["train", "dev", ""])
    root = make_tiny_dataset(tmp_path / "ds", interactions=rows, n_items=3)
    msg = error_of(root)
    assert "interactions.csv" in msg and "field 'split'" in msg
    assert "2 row(s): rows 3, 4" in msg and "'dev'" in msg


def test_bad_evaluation_values_name_rows(tmp_path: Path) -> None:
    rows = interactions("u0:i0", "u0:i1", evaluation=["maybe", "1"])
    msg = error_of(make_tiny_dataset(tmp_path / "ds", interactions=rows, n_items=2))
    assert "field 'evaluation'" in msg and "row 2" in msg and "'maybe'" in msg


def test_unparseable_timestamps_name_rows(tmp_path: Path) -> None:
    rows = interactions("u0:i0", "u0:i1", "u0:i2", timestamp=["2024-01-01", "yesterday", ""])
    msg = error_of(make_tiny_dataset(tmp_path / "ds", interactions=rows, n_items=3))
    assert "interactions.csv" in msg and "field 'timestamp'" in msg
    assert "2 row(s): rows 3, 4" in msg and "'yesterday'" in msg


def test_duplicate_item_ids_in_items_csv(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n_items=3, items_csv=False)
    write_csv(root / "items.csv", [{"item_id": i} for i in ("i0", "i1", "i0", "i2")])
    msg = error_of(root)
    assert "items.csv" in msg and "field 'item_id'" in msg
    assert "rows 2, 4" in msg and "'i0'" in msg


def test_items_csv_empty_or_without_item_id(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", items_csv=False)
    (root / "items.csv").write_text("")
    assert "items.csv is empty" in error_of(root)
    (root / "items.csv").write_text("id,title\ni0,x\n")
    assert "items.csv: missing required column(s) 'item_id'" in error_of(root)


def test_missing_images_list_items_rows_and_names_tried(tmp_path: Path) -> None:
    root = make_tiny_dataset(
        tmp_path / "ds",
        n_users=12,
        n_items=12,
        per_user=2,
        skip_images=[f"i{j}" for j in range(11)],
    )
    msg = error_of(root)
    assert "11 item(s) have no image file" in msg
    assert "'i1': tried images/i1.jpg, images/i1.jpeg, images/i1.png, images/i1.webp" in msg
    # i1 is the second item of u0 (row 3) and the first of u1 (row 4).
    assert "interactions.csv rows 3, 4" in msg
    assert "'i9'" in msg and "'i10'" not in msg and "and 1 more" in msg  # first 10 listed
    ds = load_dataset(root, check_images=False)
    assert ds.image_paths[0].name == "i0.jpg"


def test_missing_image_from_image_column(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n_items=2, n_users=1, per_user=2, items_csv=False)
    write_csv(
        root / "items.csv",
        [{"item_id": "i0", "image": "pics/a.png"}, {"item_id": "i1", "image": ""}],
    )
    msg = error_of(root)
    assert "tried pics/a.png (items.csv row 2, field 'image')" in msg


@pytest.mark.parametrize("cell", ["../outside.png", "pics/../../x.png", "/etc/passwd", "C:\\x.png"])
def test_image_path_escaping_the_folder(tmp_path: Path, cell: str) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n_items=2, n_users=1, per_user=2, items_csv=False)
    write_csv(
        root / "items.csv",
        [{"item_id": "i0", "image": "images/i0.png"}, {"item_id": "i1", "image": cell}],
    )
    msg = error_of(root, check_images=False)
    assert "items.csv" in msg and "field 'image'" in msg and "row 3" in msg and repr(cell) in msg


def test_malformed_csv_names_the_file(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds")
    (root / "interactions.csv").write_bytes(b"user_id,item_id\nu0,i0\n\xff\xfe,i1\n")
    assert "interactions.csv" in error_of(root)
