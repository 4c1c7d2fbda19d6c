"""The benchmark suite runs end to end (`benchmarks/run.py --smoke`, tiny sizes) and prints
well-formed rows. Not a timed test: no value is compared with a goal."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPECTED = {
    "train_vs_compute_bound",
    "train_vs_tutorial_pipeline",
    "train_vs_compute_bound_cnnf224",
    "train_vs_tutorial_pipeline_cnnf224",
    "eval_vs_loop",
    "rank_users_p50_ms",
    "scale_items",
    "scale_train_s",
    "scale_evaluate_peak_gib",
    "scale_recommend_p50_ms",
    "scale_export_csv_s",
    "scale_export_parquet_peak_gib",
    "explain_p50_ms",
    "add_item_s_default",
    "add_item_s_scale",
    "umap_default_s",
}


def test_benchmark_suite_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--smoke", "--json", "--work-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list) and rows
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), "row names must be unique"
    assert EXPECTED <= set(names), EXPECTED - set(names)
    assert any(n.startswith("recommend_p50_ms_") for n in names)
    for row in rows:
        assert set(row) == {"name", "value", "unit", "reference", "ratio"}, row
        assert isinstance(row["name"], str) and isinstance(row["unit"], str) and row["unit"], row
        assert isinstance(row["value"], (int, float)) and math.isfinite(row["value"]) and row["value"] > 0, row
        if row["reference"] is None:
            assert row["ratio"] is None, row
        else:
            assert row["reference"] > 0 and math.isclose(row["ratio"], row["value"] / row["reference"]), row
