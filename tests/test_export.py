"""Every user's top-k list exported (dvbpr.export and `python -m dvbpr export`): the rows are
what `Recommender.recommend` serves, CSV and Parquet agree, chunks stream, writes are atomic."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dvbpr import cli, export
from dvbpr.errors import DVBPRError
from dvbpr.export import export_top_lists
from dvbpr.recommender import Recommender


def read(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"user_id": str, "item_id": str}, keep_default_na=False)


def test_csv_rows_are_every_users_recommendations(tiny_rec: Recommender, tmp_path: Path) -> None:
    path = export_top_lists(tiny_rec, tmp_path / "recs.csv", k=10, chunk_users=7)
    assert path == tmp_path / "recs.csv"
    assert path.read_text().splitlines()[0] == "user_id,rank,item_id,score"
    table = read(path)
    assert list(table["user_id"].unique()) == tiny_rec.users()  # users in index order
    for user, rows in table.groupby("user_id", sort=False):
        items, scores = tiny_rec.recommend(user, k=10)
        assert list(rows["rank"]) == list(range(1, 11))
        assert list(rows["item_id"]) == items
        assert np.array_equal(rows["score"].to_numpy(np.float32), scores)  # read back exactly
        assert not set(items) & set(tiny_rec.user_history(user))


def test_parquet_matches_csv_and_writes_one_row_group_per_chunk(tiny_rec: Recommender, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    csv = read(export_top_lists(tiny_rec, tmp_path / "recs.csv", k=5, chunk_users=7))
    path = export_top_lists(tiny_rec, tmp_path / "recs.PARQUET", k=5, chunk_users=7)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == -(-tiny_rec.dataset.n_users // 7)  # streamed: 40 users in chunks of 7
    assert meta.num_rows == len(csv) == 5 * tiny_rec.dataset.n_users
    schema = pq.read_schema(path)
    assert [str(schema.field(c).type) for c in export.COLUMNS] == ["string", "int32", "string", "float"]
    parquet = read(path)
    pd.testing.assert_frame_equal(
        parquet.astype({"rank": "int64"}), csv.astype({"score": "float32"}), check_dtype=False
    )


def test_scanning_without_top_lists_gives_the_same_file(tiny_run: Path, tiny_rec: Recommender, tmp_path: Path) -> None:
    scanning = Recommender.from_run(tiny_run, device="cpu", top_lists=False)
    assert scanning.top_ids is None
    a = export_top_lists(tiny_rec, tmp_path / "lookup.csv", k=12, chunk_users=9)
    b = export_top_lists(scanning, tmp_path / "scan.csv", k=12, chunk_users=9)
    assert a.read_bytes() == b.read_bytes()


def test_k_beyond_the_candidates_lists_them_all(tiny_rec: Recommender, tmp_path: Path) -> None:
    table = read(export_top_lists(tiny_rec, tmp_path / "all.csv", k=1000))
    counts = table.groupby("user_id", sort=False).size()
    n_items = tiny_rec.dataset.n_items
    expected = [n_items - len(tiny_rec.user_history(u)) for u in tiny_rec.users()]
    assert list(counts) == expected


def test_bad_names_and_missing_pyarrow_are_clear_errors(tiny_rec: Recommender, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DVBPRError, match=r"must end in \.csv or \.parquet"):
        export_top_lists(tiny_rec, tmp_path / "recs.tsv")
    with pytest.raises(DVBPRError, match="at least 1"):
        export_top_lists(tiny_rec, tmp_path / "recs.csv", k=0)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    with pytest.raises(DVBPRError, match="needs pyarrow"):
        export_top_lists(tiny_rec, tmp_path / "recs.parquet")
    assert not list(tmp_path.iterdir())


def test_a_failure_mid_export_leaves_the_previous_file(tiny_rec: Recommender, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "recs.csv"
    path.write_text("previous\n")
    chunks = export._chunks

    def failing(*args, **kwargs):
        stream = chunks(*args, **kwargs)
        yield next(stream)
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_chunks", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        export_top_lists(tiny_rec, path, k=5, chunk_users=4)
    assert path.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["recs.csv"]  # no temporary file left


def test_cli_export(capsys, tiny_run: Path, tiny_rec: Recommender, tmp_path: Path) -> None:
    out = tmp_path / "recs.csv"
    assert cli.main(["export", str(tiny_run), "--k", "3", "--out", str(out), "--device", "cpu"]) == 0
    assert "top-3 lists of 40 users" in capsys.readouterr().out
    table = read(out)
    assert len(table) == 3 * tiny_rec.dataset.n_users
    assert list(table["item_id"][:3]) == tiny_rec.recommend(tiny_rec.users()[0], k=3)[0]
    assert cli.main(["export", str(tiny_run), "--out", str(tmp_path / "recs.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot export to 'recs.json'") and err.count("\n") == 1
