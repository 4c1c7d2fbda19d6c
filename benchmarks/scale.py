"""Scale: a catalogue of Amazon Women's size (97,678 users, 347,591 items, 827,678
interactions) at 64x64, end to end on this machine. Each step runs in its own process, so its
time and peak memory are its own:

1. generate: `synthdata.make_catalogue` (a pool of looks drawn with the project's generator,
   see synthdata.py) writes the dataset folder;
2. store: `load_dataset` + `ImageStore.open` decodes every item's image into the uint8 memmap;
3. train: 200 steps of `train_one_epoch` (CNN-F-small, batch 128), then a checkpoint;
4. evaluate: `Recommender.from_run` (phi of every item, cached in the run) + full-ranking
   `evaluate_model` on 5,000 test users;
5. precompute: `python -m dvbpr precompute` (every user's top-100 list, cached in the run);
6. export: `python -m dvbpr export --k 100`, every user's top-100 to CSV, then to Parquet (top
   lists cached by step 5; the file is deleted after its size is read);
7. serve: `Recommender.from_run` with phi cached, `recommend(k=20)` and `rank_users(image)`.

Peak memory: VmHWM (peak resident set, which counts the store's file pages a process touched:
page cache the kernel may drop) and the sampled peak of anonymous memory (what must fit in RAM).

`python -m benchmarks.scale STEP --work DIR ...` runs one step and prints one JSON line.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.common import (
    MEMORY_BUDGET_GIB,
    AnonPeak,
    Row,
    emit,
    ensure_repo_on_path,
    latencies_ms,
    p50_p99,
    peak_rss_gib,
    run_step,
)

ensure_repo_on_path()

STEPS = ("generate", "store", "train", "evaluate", "precompute", "export_csv", "export_parquet", "serve")
EXPORT_K = 100
IMAGE_SIZE = 64


def _spec(args):
    from benchmarks.synthdata import AMAZON_WOMEN, CatalogueSpec

    return CatalogueSpec.scaled(AMAZON_WOMEN, args.fraction, image_size=IMAGE_SIZE, pool=args.pool)


def step_generate(args) -> dict:
    from benchmarks.synthdata import make_catalogue

    shutil.rmtree(args.data, ignore_errors=True)
    shutil.rmtree(args.run, ignore_errors=True)
    info = make_catalogue(args.data, _spec(args))
    return {"detail": info}


def step_store(args) -> dict:
    from dvbpr.data import load_dataset
    from dvbpr.images import ImageStore

    t0 = time.perf_counter()
    dataset = load_dataset(args.data)
    load_s = time.perf_counter() - t0
    store = ImageStore.open(dataset, IMAGE_SIZE, progress=False)
    return {
        "detail": {
            "load_dataset_s": load_s,
            "store_s": time.perf_counter() - t0 - load_s,
            "store_gib": store.array.nbytes / 2**30,
            **dataset.info(),
            "category_counts": None,
        }
    }


def step_train(args) -> dict:
    import torch

    from benchmarks.training import setup
    from dvbpr.checkpoint import dataset_signature, save_checkpoint
    from dvbpr.data import load_dataset
    from dvbpr.distributed import Dist
    from dvbpr.features import ImageBatches
    from dvbpr.images import ImageStore
    from dvbpr.rundir import LAST
    from dvbpr.sampling import TripletSampler
    from dvbpr.train import train_one_epoch

    t0 = time.perf_counter()
    dataset = load_dataset(args.data)
    store = ImageStore.open(dataset, IMAGE_SIZE, progress=False)
    device = torch.device("cpu")
    cfg, model, optimizer = setup(dataset, "cnnf-small", IMAGE_SIZE, 128, device)
    sampler = TripletSampler(dataset.train, dataset.n_items, cfg.negatives)
    triplets = sampler.epoch(0)
    setup_s = time.perf_counter() - t0
    stamps = []
    t1 = time.perf_counter()
    for _ in train_one_epoch(model, optimizer, None, triplets, ImageBatches(store, device), cfg, Dist()):
        stamps.append(time.perf_counter())
        if len(stamps) == args.steps:
            break
    steps_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    save_checkpoint(
        Path(args.run) / LAST,
        model,
        train_config=asdict(cfg),
        user_ids=dataset.users.ids,
        item_ids=dataset.items.ids,
        cold_items=torch.as_tensor(dataset.cold_items),
        dataset_signature=dataset_signature(dataset),
        epoch=0,
        step=len(stamps),
        metrics={},
    )
    return {
        "detail": {
            "setup_s": setup_s,
            "steps": len(stamps),
            "steps_s": steps_s,
            "triplets_per_s": len(stamps) * cfg.batch_size / steps_s,
            "checkpoint_s": time.perf_counter() - t2,
        }
    }


def step_evaluate(args) -> dict:
    from dvbpr.evaluate import evaluate_recommender
    from dvbpr.recommender import Recommender

    t0 = time.perf_counter()
    rec = Recommender.from_run(args.run, data=args.data, device="cpu")
    load_s = time.perf_counter() - t0
    dataset = rec.dataset
    users = np.unique(dataset.test[:, 0])
    users = np.sort(np.random.default_rng(0).choice(users, min(args.eval_users, len(users)), replace=False))
    t1 = time.perf_counter()
    result = evaluate_recommender(rec, "test", users=users)
    return {
        "detail": {
            "load_and_phi_s": load_s,
            "ranking_s": time.perf_counter() - t1,
            "users": result.metrics["users"],
            "auc": result.metrics["auc"],
        }
    }


def step_precompute(args) -> dict:
    from dvbpr.recommender import Recommender

    rec = Recommender.from_run(args.run, data=args.data, device="cpu", top_lists=True)  # = `dvbpr precompute`
    return {"detail": {"users": rec.dataset.n_users}}


def step_export_csv(args) -> dict:
    return _export(args, ".csv")


def step_export_parquet(args) -> dict:
    return _export(args, ".parquet")


def _export(args, suffix: str) -> dict:
    from dvbpr.export import export_top_lists
    from dvbpr.recommender import Recommender

    t0 = time.perf_counter()
    rec = Recommender.from_run(args.run, data=args.data, device="cpu")  # = `dvbpr export`
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    path = export_top_lists(rec, Path(args.run) / f"top{EXPORT_K}{suffix}", k=EXPORT_K)
    write_s = time.perf_counter() - t1
    mib = path.stat().st_size / 2**20
    path.unlink()
    return {
        "detail": {
            "load_s": load_s,
            "write_s": write_s,
            "users": rec.dataset.n_users,
            "k": min(EXPORT_K, rec.dataset.n_items),
            "mib": mib,
        }
    }


def step_serve(args) -> dict:
    from benchmarks.serving import upload_bytes
    from dvbpr.recommender import Recommender

    t0 = time.perf_counter()
    rec = Recommender.from_run(args.run, data=args.data, device="cpu")
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    users = [rec.dataset.users.ids[i] for i in rng.integers(0, rec.dataset.n_users, args.calls + 10)]
    rec50, rec99 = p50_p99(latencies_ms(lambda k: rec.recommend(users[k], k=20), args.calls))
    image = upload_bytes()
    rank50, rank99 = p50_p99(latencies_ms(lambda k: rec.rank_users(image, k=10), max(3, args.calls // 10)))
    return {
        "detail": {
            "load_s": load_s,
            "recommend_p50_ms": rec50,
            "recommend_p99_ms": rec99,
            "rank_users_p50_ms": rank50,
            "rank_users_p99_ms": rank99,
        }
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--pool", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-users", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args(argv)
    args.data, args.run = args.work / "scale" / "data", args.work / "scale" / "run"
    import dvbpr.recommender  # noqa: F401  (imports are not part of a step's time)
    import dvbpr.synth  # noqa: F401

    with AnonPeak() as anon:
        t0 = time.perf_counter()
        result = globals()[f"step_{args.step}"](args)
        seconds = time.perf_counter() - t0
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # decoding workers
    emit(
        {
            "step": args.step,
            "s": seconds,
            "peak_rss_gib": max(peak_rss_gib(), children),
            "peak_anon_gib": anon.gib,
            **result,
        }
    )


def section(ctx) -> list[Row]:
    s = ctx.sizes
    common = [
        "--work",
        str(ctx.work),
        "--fraction",
        str(s.scale_fraction),
        "--pool",
        str(s.scale_pool),
        "--steps",
        str(s.scale_train_steps),
        "--eval-users",
        str(s.scale_eval_users),
        "--calls",
        str(max(10, s.recommend_calls)),
    ]
    out = {}
    for step in STEPS:
        ctx.log(f"scale: {step}")
        out[step] = run_step("scale", [step, *common], ctx.log)
        ctx.log(f"scale: {step} took {out[step]['s']:.1f} s, peak {out[step]['peak_rss_gib']:.2f} GiB")
    g, st, tr, ev, pre, csv, parquet, sv = (out[k]["detail"] for k in STEPS)
    scale = "full size" if s.scale_fraction == 1 else f"REDUCED to {s.scale_fraction:g} of Amazon Women"
    rows = [
        Row(
            "scale_items",
            g["items"],
            "items",
            note=f"{scale}: {g['users']:,} users, {g['items']:,} items, {g['interactions']:,} "
            f"interactions, {g['pool']:,} distinct looks, 64x64",
        )
    ]
    notes = {
        "generate": f"pool drawing {g['pool_s']:.1f} s",
        "store": f"load_dataset {st['load_dataset_s']:.1f} s, store {st['store_gib']:.2f} GiB",
        "train": f"{tr['steps']} steps in {tr['steps_s']:.1f} s ({tr['triplets_per_s']:.0f} triplets/s), "
        f"setup {tr['setup_s']:.1f} s, checkpoint {tr['checkpoint_s']:.1f} s",
        "evaluate": f"{ev['users']:,} users; load + phi of every item {ev['load_and_phi_s']:.1f} s, "
        f"ranking {ev['ranking_s']:.1f} s",
        "precompute": f"`python -m dvbpr precompute`: load (phi cached) + top-100 lists of {pre['users']:,} users",
        **{
            f"export_{kind}": f"`python -m dvbpr export --k {e['k']}` of {e['users']:,} users to {kind.upper()}, "
            f"{e['mib']:,.1f} MiB: load {e['load_s']:.1f} s (top lists cached), write {e['write_s']:.1f} s"
            for kind, e in (("csv", csv), ("parquet", parquet))
        },
        "serve": f"load {sv['load_s']:.1f} s (phi and top lists cached)",
    }
    for step in STEPS:
        rows.append(Row(f"scale_{step}_s", out[step]["s"], "s", note=notes[step]))
        rows.append(
            Row(
                f"scale_{step}_peak_gib",
                out[step]["peak_rss_gib"],
                "GiB",
                MEMORY_BUDGET_GIB,
                note=f"peak RSS incl. mapped store pages; anonymous {out[step]['peak_anon_gib']:.2f} GiB",
            )
        )
    rows += [
        Row("scale_train_triplets_per_s", tr["triplets_per_s"], "triplets/s", note=notes["train"]),
        Row(
            "scale_recommend_p50_ms",
            sv["recommend_p50_ms"],
            "ms",
            10.0,
            note=f"top lists precomputed; p99 {sv['recommend_p99_ms']:.1f} ms",
        ),
        Row(
            "scale_rank_users_p50_ms",
            sv["rank_users_p50_ms"],
            "ms",
            300.0,
            note=f"cnnf-small 64px; p99 {sv['rank_users_p99_ms']:.1f} ms",
        ),
    ]
    return rows


if __name__ == "__main__":
    main()
