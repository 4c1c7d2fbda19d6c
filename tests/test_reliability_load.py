"""Many users at once (issue 13, section 5): benchmarks/load.py, shortened to 3 browser sessions
for 15 s, against one app server on the tiny red/blue dataset of conftest.py and a one-epoch
model on it (data/default and models/default in a temporary folder).

Each session picks its own users, visits other pages, uploads images of its own and asks for a
heatmap; the script checks after every action that no error is on screen and that the page shows
that session's user and upload, not another's. The full version (8 sessions, 60 s, the shipped
data and model) is `python benchmarks/load.py`; its figures are in docs/benchmarks.md.
The Embeddings page is left out here: on a model without a map, visiting it starts the UMAP job
(over a minute of CPU on a 2-core machine). Without the warm-up, the sessions race to do the
work done once per model (loading it, the evaluation, the baselines). chromium missing is a
failure, not a skip: `bash scripts/test.sh` installs it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import browser as bb

SESSIONS, SECONDS = 3, 15


@pytest.fixture
def roots(tmp_path: Path, tiny_make_dataset, tiny_train_kwargs) -> Path:
    from dvbpr.config import TrainConfig
    from dvbpr.train import train

    if not (os.path.isfile(bb.CHROMIUM) and os.access(bb.CHROMIUM, os.X_OK)):
        pytest.fail(bb.MISSING_CHROMIUM, pytrace=False)
    data = tiny_make_dataset(tmp_path / "data" / "default")
    run = tmp_path / "models" / "default"
    status = train(TrainConfig(data=str(data), out=str(run), **dict(tiny_train_kwargs, epochs=1)), progress=False)
    assert status["state"] == "finished", status
    return tmp_path


def test_sessions_at_once_see_only_their_own_user_and_upload(roots: Path) -> None:
    cmd = [
        sys.executable,
        "benchmarks/load.py",
        f"--sessions={SESSIONS}",
        f"--seconds={SECONDS}",
        f"--data-root={roots / 'data'}",
        f"--models-root={roots / 'models'}",
        "--pages=Data,Evaluate,Train",
        "--no-warm-up",
        "--timeout=120",
        "--json",
    ]
    proc = subprocess.run(cmd, cwd=bb.REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.stdout.strip(), proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    report = "\n".join(result["messages"]) + "\n--- log ---\n" + proc.stderr[-3000:]
    assert result["errors"] == 0, report
    assert result["isolation_violations"] == 0, report
    assert proc.returncode == 0, report
    kinds = result["by_kind"]
    # every session opened the app and finished at least one round: a user, pages, an upload, its heatmap
    assert kinds["first visit"]["actions"] == SESSIONS
    for kind in ("user", "upload", "explain"):
        assert kinds[kind]["actions"] >= SESSIONS, (kind, kinds)
    assert kinds["page"]["actions"] >= 2 * SESSIONS  # another page, then back to the user
    assert all(n >= 5 for n in result["per_session_actions"]), result["per_session_actions"]
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"] and math.isfinite(result["max_ms"])
    assert result["wall_s"] >= SECONDS
