"""Every user's top-k list as a file other systems read: CSV, or Parquet through pyarrow.

Rows are `user_id,rank,item_id,score` (rank 1-based, best first, the user's training items
excluded, as `Recommender.recommend` serves them), users in index order. Lists are computed and
written a chunk of users at a time (`Recommender.iter_top_lists`: the run's cached top lists
when they hold k items, else an exact scan), so 97,678 users x 100 items never sit in memory as
one table. The file is written to a temporary file in the destination folder and renamed into
place when complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from .errors import DVBPRError
from .fsutil import atomic_write
from .recommender import Recommender

FORMATS = {".csv": "csv", ".parquet": "parquet"}
COLUMNS = ("user_id", "rank", "item_id", "score")


def export_format(path: str | Path) -> str:
    """ "csv" or "parquet" from the file name's suffix; DVBPRError for any other."""
    kind = FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise DVBPRError(f"cannot export to {Path(path).name!r}: the file name must end in .csv or .parquet")
    return kind


def export_top_lists(
    rec: Recommender,
    out_path: str | Path,
    k: int = 100,
    chunk_users: int = 1024,
    progress: bool = False,
) -> Path:
    """Write every user's top-k (fewer when the user has fewer candidates) to `out_path`
    (.csv or .parquet, see the module docstring); returns the path."""
    kind = export_format(out_path)
    if k < 1 or chunk_users < 1:
        raise DVBPRError(f"k and chunk_users must be at least 1, got {k} and {chunk_users}")
    if kind == "parquet":
        _require_pyarrow()  # a clear error before any work
    chunks = _chunks(rec, min(k, rec.dataset.n_items), chunk_users, progress)
    writer = _write_parquet if kind == "parquet" else _write_csv
    return atomic_write(out_path, lambda fh: writer(fh, chunks), "wb")


def _chunks(rec: Recommender, k: int, chunk_users: int, progress: bool) -> Iterator[pd.DataFrame]:
    """The rows of consecutive chunks of users, one DataFrame per chunk."""
    user_ids = np.asarray(rec.dataset.users.ids, dtype=object)
    item_ids = np.asarray(rec.dataset.items.ids, dtype=object)
    for users, top_ids, top_scores in rec.iter_top_lists(k, chunk_users, progress=progress):
        keep = top_ids >= 0  # -1 pads a user with fewer candidates than k
        rows, ranks = np.nonzero(keep)
        yield pd.DataFrame(
            {
                "user_id": user_ids[users[rows]],
                "rank": (ranks + 1).astype(np.int32),
                "item_id": item_ids[top_ids[keep]],
                "score": top_scores[keep].astype(np.float32),
            }
        )


def _write_csv(fh: IO[bytes], chunks: Iterator[pd.DataFrame]) -> None:
    fh.write((",".join(COLUMNS) + "\n").encode())
    for frame in chunks:
        # a float32 column is written in its shortest form that reads back exactly
        fh.write(frame.to_csv(index=False, header=False, lineterminator="\n").encode())


def _write_parquet(fh: IO[bytes], chunks: Iterator[pd.DataFrame]) -> None:
    pa, pq = _require_pyarrow()
    schema = pa.schema(
        [("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float32())]
    )
    with pq.ParquetWriter(fh, schema) as writer:  # one row group per chunk of users
        for frame in chunks:
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))


def _require_pyarrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, imported only for Parquet (the package does not need them)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DVBPRError("writing Parquet needs pyarrow (pip install pyarrow); or export to a .csv file") from None
    return pa, pq
