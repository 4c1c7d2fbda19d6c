"""Explanations and new items (issue 14): what `Recommender.explain` costs per item, and what adding
an item to the catalogue costs until it is served (`Recommender.add_item`: the image and the row
written into the dataset folder, the image caches extended, phi of the new item, the item inserted
into every user's top list).

- explain: the shipped model (CNN-F-small at 64 px) on a copy of the default data, one catalogue
  item per call for random users, and the top 20 of a user in one call (the Recommendations
  page's overlay);
- add-item on the default catalogue: a copy of data/default and models/default, loaded with its
  top lists (1,200 users), one new garment per call; then `from_run` on the grown catalogue (what
  any other process that serves the run does: phi of the new items only, lists updated, caches
  saved);
- add-item at scale: the scale section's catalogue (Amazon Women's size: 347,591 items, 97,678
  users; the section's data is reused, generated when missing) with a fresh CNN-F-small, random
  phi and synthetic top lists that every new item enters: the worst case, every user's list
  changes (exact lists cost ~4 min once, and the insertion costs the same for any list).

Everything is written under the work folder; the items added are removed again at the end.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, ensure_repo_on_path, latencies_ms, p50_p99, run_step

ensure_repo_on_path()

from dvbpr.catalogue import remove_item  # noqa: E402
from dvbpr.checkpoint import checkpoint_fields, save_checkpoint  # noqa: E402
from dvbpr.data import load_dataset  # noqa: E402
from dvbpr.images import ImageStore  # noqa: E402
from dvbpr.model import DVBPR, ModelConfig  # noqa: E402
from dvbpr.recommender import TOP_LIST_K, Recommender  # noqa: E402
from dvbpr.rundir import BEST, REPO_ROOT, relative_to_run  # noqa: E402

EXPLAIN_GOAL_MS = 100.0
ADD_DEFAULT_GOAL_S = 1.0
ADD_SCALE_GOAL_S = 5.0
IMAGE_SIZE = 64


def garment(k: int) -> bytes:
    """A new garment image (PNG bytes), different for every k."""
    from dvbpr.synth import CATEGORIES, COLOURS, PATTERNS, render_item

    look = (CATEGORIES[k % len(CATEGORIES)], list(COLOURS)[k % len(COLOURS)], PATTERNS[k % len(PATTERNS)])
    buffer = io.BytesIO()
    render_item(*look, size=128, seed=[4242, k]).save(buffer, format="PNG")
    return buffer.getvalue()


def default_copy(ctx) -> tuple[Path, Path]:
    """(dataset, run) to add items to: copies of data/default and models/default (a tiny generated
    dataset and an untrained run in smoke mode), made once per work folder."""
    folder = ctx.work / "catalogue"
    data, run = folder / "data", folder / "run"
    if (run / BEST).is_file():
        return data, run
    shutil.rmtree(folder, ignore_errors=True)
    from dvbpr.synth import SynthConfig, ensure_default_dataset, make_dataset

    if ctx.sizes.name == "smoke":
        make_dataset(data, SynthConfig(n_items=120, n_users=40, mean_interactions=6, image_size=64), progress=False)
        dataset = load_dataset(data)
        model = DVBPR(ModelConfig(n_users=dataset.n_users, n_items=dataset.n_items, dim=16, cf_dim=16))
        fields = checkpoint_fields(dataset, {"data": relative_to_run(data, run)})
        save_checkpoint(run / BEST, model.eval(), epoch=0, step=0, metrics={}, **fields)
    else:
        shutil.copytree(ensure_default_dataset(progress=False), data, ignore=shutil.ignore_patterns(".cache"))
        run.mkdir(parents=True)
        shutil.copy2(REPO_ROOT / "models" / "default" / BEST, run / BEST)
    return data, run


def scale_recommender(ctx) -> Recommender:
    """The scale section's catalogue (generated when missing) served by a fresh CNN-F-small with
    random phi and top lists that every new item enters."""
    s = ctx.sizes
    data = ctx.work / "scale" / "data"
    if not (data / "interactions.csv").is_file():
        args = ["--work", str(ctx.work), "--fraction", str(s.scale_fraction), "--pool", str(s.scale_pool)]
        run_step("scale", ["generate", *args], ctx.log)
    dataset = load_dataset(data)
    ctx.log(f"catalogue: {dataset.n_items:,} items, {dataset.n_users:,} users (image cache built once)")
    store = ImageStore.open(dataset, IMAGE_SIZE, progress=False)
    torch.manual_seed(0)
    model = DVBPR(ModelConfig(n_users=dataset.n_users, n_items=dataset.n_items, image_size=IMAGE_SIZE)).eval()
    phi = torch.randn(dataset.n_items, model.cfg.dim, generator=torch.Generator().manual_seed(0))
    rec = Recommender(model, dataset, store, phi, {}, Path("synthetic"))
    k = min(TOP_LIST_K, dataset.n_items)
    rec.top_ids = np.full((dataset.n_users, k), -1, dtype=np.int32)
    rec.top_scores = np.full((dataset.n_users, k), -np.inf, dtype=np.float32)
    return rec


def add_items(rec: Recommender, calls: int, first: int) -> list[float]:
    """Seconds of each of `calls` rec.add_item calls, a new garment each."""
    seconds = []
    for k in range(first, first + calls):
        image = garment(k)
        t0 = time.perf_counter()
        rec.add_item(image, item_id=f"bench-new-{k}")
        seconds.append(time.perf_counter() - t0)
    return seconds


def remove_added(data: Path, ids: list[str]) -> None:
    for item_id in reversed(ids):  # the last first: each is then the catalogue's last row
        remove_item(data, item_id)


def section(ctx) -> list[Row]:
    s = ctx.sizes
    calls = max(3, s.rank_users_calls)
    data, run = default_copy(ctx)
    rec = Recommender.from_run(run, data=data, device="cpu", top_lists=True)  # phi and lists once per copy
    rng = np.random.default_rng(0)
    users = rec.dataset.users.to_ids(rng.integers(0, rec.dataset.n_users, calls + 3))
    items = rec.dataset.items.to_ids(rng.integers(0, rec.dataset.n_items, calls + 3))
    explain50, explain99 = p50_p99(latencies_ms(lambda k: rec.explain(users[k], item=items[k]), calls))
    tops = [rec.recommend(u, k=20)[0] for u in users]
    top50, _ = p50_p99(latencies_ms(lambda k: rec.explain_items(users[k], tops[k]), calls))
    arch = f"{rec.model.cfg.arch} {rec.model.cfg.image_size}px"

    ctx.log("catalogue: add items to the default catalogue")
    adds = max(3, min(10, calls // 5))
    before = rec.dataset.n_items
    add_s = add_items(rec, adds, 0)
    t0 = time.perf_counter()
    Recommender.from_run(run, data=data, device="cpu")
    reload_s = time.perf_counter() - t0
    remove_added(data, rec.dataset.items.ids[before:])

    ctx.log("catalogue: add items at scale")
    big = scale_recommender(ctx)
    big_before = big.dataset.n_items
    big_s = add_items(big, 3, 100)
    remove_added(big.dataset.root, big.dataset.items.ids[big_before:])
    label = f"{big_before:,} items, {big.dataset.n_users:,} users"
    return [
        Row(
            "explain_p50_ms",
            explain50,
            "ms",
            EXPLAIN_GOAL_MS,
            note=f"{arch}, one catalogue item per call, {calls} calls; p99 {explain99:.1f} ms; goal < 100 ms",
        ),
        Row("explain_top20_ms", top50, "ms", note=f"{arch}, a user's top 20 in one call (p50 of {calls})"),
        Row(
            "add_item_s_default",
            float(np.median(add_s)),
            "s",
            ADD_DEFAULT_GOAL_S,
            note=f"median of {adds}: written, cached, served (phi, {rec.dataset.n_users:,} users' top lists); "
            f"max {max(add_s):.2f} s; goal < 1 s",
        ),
        Row(
            "add_item_reload_s_default",
            reload_s,
            "s",
            note=f"from_run on the grown catalogue: phi of the {adds} new items, lists updated, caches saved",
        ),
        Row(
            "add_item_s_scale",
            float(np.median(big_s)),
            "s",
            ADD_SCALE_GOAL_S,
            note=f"median of 3 at {label} (top lists every item enters); max {max(big_s):.2f} s; goal < 5 s",
        ),
    ]
