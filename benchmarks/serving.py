"""Serving latency of the `Recommender` API: `recommend(user, k=20)` (training items excluded)
for catalogues of 5k, 100k and 350k items, and `rank_users(image)` for an uploaded JPEG
(decode + the one preprocessing + CNN + scores of every user + sort), with the small CPU
network and with CNN-F at 224 over Amazon Women's 97,678 users.

`recommend` is measured twice: as served (every user's top-100 list precomputed once per
checkpoint, `recommend` a lookup; the time to precompute them is its own row) and as an exact
scan of the whole catalogue per call (what calls the lists cannot answer cost).

The catalogues are synthetic: random item features phi and a freshly initialised DVBPR (the
latency does not depend on the values), users with 8 training items each.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, ensure_repo_on_path, latencies_ms, p50_p99

ensure_repo_on_path()

from dvbpr.model import DVBPR, ModelConfig  # noqa: E402
from dvbpr.recommender import Recommender  # noqa: E402

RECOMMEND_GOAL_MS = 10.0
RANK_USERS_GOAL_MS = 300.0


def size_label(n: int) -> str:
    return f"{round(n / 1000)}k" if n >= 1000 else str(n)


def upload_bytes(size: int = 512) -> bytes:
    """A 512 px JPEG garment, as a user would upload it."""
    from dvbpr.synth import render_item

    buffer = io.BytesIO()
    render_item("dress", "red", "dots", size, seed=[7, 7]).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def synthetic_recommender(n_items: int, n_users: int, arch: str, image_size: int, seed: int = 0) -> Recommender:
    from benchmarks.synthdata import in_memory_dataset

    dataset = in_memory_dataset(n_users, n_items, per_user=8, seed=seed)
    torch.manual_seed(seed)
    model = DVBPR(ModelConfig(n_users=n_users, n_items=n_items, arch=arch, image_size=image_size)).eval()
    model = model.to(memory_format=torch.channels_last)
    phi = torch.randn(n_items, model.cfg.dim, generator=torch.Generator().manual_seed(seed))
    return Recommender(model, dataset, None, phi, {}, Path("synthetic"))  # type: ignore[arg-type]


def measure(rec: Recommender, calls: int, rank_calls: int, image: bytes | None) -> dict[str, float]:
    rng = np.random.default_rng(0)
    users = rec.dataset.users.ids
    picks = [users[i] for i in rng.integers(0, len(users), calls + 10)]
    out = dict(zip(("scan_p50", "scan_p99"), p50_p99(latencies_ms(lambda k: rec.recommend(picks[k], k=20), calls))))
    t0 = time.perf_counter()
    rec.precompute_top_lists()
    out["top_lists_s"] = time.perf_counter() - t0
    out.update(
        zip(("recommend_p50", "recommend_p99"), p50_p99(latencies_ms(lambda k: rec.recommend(picks[k], k=20), calls)))
    )
    if image is not None:
        out.update(
            zip(
                ("rank_users_p50", "rank_users_p99"),
                p50_p99(latencies_ms(lambda k: rec.rank_users(image, k=10), rank_calls)),
            )
        )
    return out


def section(ctx) -> list[Row]:
    s = ctx.sizes
    image = upload_bytes()
    rows = []
    for index, (n_items, n_users) in enumerate(s.catalogues):
        last = index == len(s.catalogues) - 1
        arch, size = ("cnnf", s.cnnf_size) if last else ("cnnf-small", s.small_size)
        ctx.log(f"serve: {n_items:,} items, {n_users:,} users ({arch})")
        rec = synthetic_recommender(n_items, n_users, arch, size)
        m = measure(rec, s.recommend_calls, s.rank_users_calls, image if index in (0, len(s.catalogues) - 1) else None)
        label = size_label(n_items)
        note = f"{n_items:,} items, {n_users:,} users, k=20, {s.recommend_calls} calls"
        rows += [
            Row(
                f"recommend_p50_ms_{label}",
                m["recommend_p50"],
                "ms",
                RECOMMEND_GOAL_MS,
                note=note + ", top lists precomputed; goal < 10 ms",
            ),
            Row(f"recommend_p99_ms_{label}", m["recommend_p99"], "ms", note=note),
            Row(
                f"recommend_scan_p50_ms_{label}",
                m["scan_p50"],
                "ms",
                RECOMMEND_GOAL_MS,
                note=note + ", exact scan of the catalogue per call",
            ),
            Row(f"recommend_scan_p99_ms_{label}", m["scan_p99"], "ms", note=note),
            Row(
                f"top_lists_s_{label}",
                m["top_lists_s"],
                "s",
                note=f"top-100 lists of all {n_users:,} users, once per checkpoint",
            ),
        ]
        if "rank_users_p50" in m:
            suffix = "" if last else "_small"
            note = f"{arch} {size}px, {n_users:,} users, 512px JPEG upload, {s.rank_users_calls} calls"
            rows += [
                Row(
                    f"rank_users_p50_ms{suffix}",
                    m["rank_users_p50"],
                    "ms",
                    RANK_USERS_GOAL_MS,
                    note=note + "; goal < 300 ms",
                ),
                Row(f"rank_users_p99_ms{suffix}", m["rank_users_p99"], "ms", note=note),
            ]
        del rec
    return rows
