"""GPU benchmark, prepared to run in at most 8 minutes on one CUDA GPU:

    python benchmarks/gpu.py [--save results.json] [--json]     # the real thing (needs CUDA)
    python benchmarks/gpu.py --tiny                              # smoke test, any machine, ~1 min

Training throughput of CNN-F at 224 (bf16 autocast, channels-last, as `dvbpr.train` does on
CUDA) on a Wikimedia-sized synthetic dataset (1,100 users, 33,000 items, 97,000 interactions;
images from a pool of 2,000 looks drawn by the project's generator, saved as 224 px JPEGs like
the tutorial's pre-resized files), against:

* the compute bound: forward, backward and Adam on one batch already on the GPU (also with a
  host sync every step, to show what a per-step `loss.item()` costs, and, unless --no-compile,
  with `torch.compile`);
* the tutorial pipeline: DataLoader workers decoding each JPEG with PIL per sample;

and the time of one epoch of `train_one_epoch` and of `dvbpr.train.train(epochs=1)` (which
adds loading, validation and checkpoints). Goals: epoch < 30 s, >= 0.8x the compute bound,
>= 10x the tutorial pipeline. Needs only torch, torchvision, numpy, pandas, pillow and tqdm.
Optional parts are skipped once --budget-s seconds have passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import torch  # noqa: E402

from benchmarks.common import Row, format_table, machine_info  # noqa: E402
from benchmarks.synthdata import WIKIMEDIA, CatalogueSpec, make_catalogue  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes; runs on the CPU too (smoke test)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dvbpr-gpu-bench")
    parser.add_argument(
        "--workers", type=int, default=0, help="tutorial DataLoader workers (default: half the cores, at most 8)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip optional parts after this")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save", type=Path, default=None, help="write {machine, rows} as JSON here")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {message}", file=sys.stderr, flush=True)

    def time_left() -> bool:
        return time.perf_counter() - t_start < args.budget_s

    if not torch.cuda.is_available() and not args.tiny:
        print("no CUDA GPU here: run with --tiny for a CPU smoke test", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from benchmarks.training import ComputeBound, RealLoop, interleaved, tutorial_pipeline
    from dvbpr.config import TrainConfig
    from dvbpr.data import load_dataset
    from dvbpr.features import ImageBatches
    from dvbpr.images import ImageStore
    from dvbpr.train import train

    if args.tiny:
        spec, size, batch, warm, steps, rounds = CatalogueSpec(20, 150, 160, 64, 20, "jpg"), 64, 8, 1, 1, 2
    else:
        spec, size, batch, warm, steps, rounds = CatalogueSpec(*WIKIMEDIA, 224, 2000, "jpg"), 224, 128, 10, 25, 3
    workers = args.workers or max(1, min(8, (os.cpu_count() or 2) // 2))
    data = args.work / ("tiny" if args.tiny else "wikimedia")
    shutil.rmtree(data, ignore_errors=True)
    log(f"generating {spec.n_items:,} items / {spec.n_users:,} users / {spec.n_interactions:,} interactions")
    info = make_catalogue(data, spec)
    dataset = load_dataset(data)
    t0 = time.perf_counter()
    store = ImageStore.open(dataset, size, progress=False)
    store_s = time.perf_counter() - t0
    log(f"image store built in {store_s:.1f} s; train triplets {len(dataset.train):,}")
    t0 = time.perf_counter()
    images = ImageBatches(store, device)
    resident_s = time.perf_counter() - t0
    log(f"ImageBatches ready in {resident_s:.1f} s (store on the GPU: {images.resident is not None})")

    label = f"cnnf {size}px, batch {batch}, {device.type}"
    rows = [
        Row(
            "gpu_dataset_items",
            spec.n_items,
            "items",
            note=f"{spec.n_users:,} users, {info['interactions']:,} interactions, {spec.pool:,} looks; "
            f"store built in {store_s:.0f} s, moved to the device in {resident_s:.1f} s",
        )
    ]
    log(f"real loop, compute bound, compute bound synced every step: {rounds} rounds of {steps} steps")
    runners = {
        "real": RealLoop(dataset, store, "cnnf", batch, device, images=images),
        "bound": ComputeBound(dataset, store, "cnnf", batch, device),
        "synced": ComputeBound(dataset, store, "cnnf", batch, device, sync_every_step=True),
    }
    rates = interleaved(runners, batch, warm, steps, rounds)
    real, bound, synced = rates["real"], rates["bound"], rates["synced"]
    log("real loop, one whole epoch")
    epoch = runners["real"].whole_epoch()
    del runners
    del images
    if device.type == "cuda":
        torch.cuda.empty_cache()
    log(f"tutorial pipeline ({workers} workers)")
    tut = tutorial_pipeline(dataset, size, "cnnf", batch, device, 2, 5 if not args.tiny else 1, rounds, workers)[
        "triplets_per_s"
    ]
    rows += [
        Row("gpu_train_vs_compute_bound", real, "triplets/s", bound, note=f"{label}; goal >= 0.8"),
        Row(
            "gpu_train_vs_tutorial_pipeline",
            real,
            "triplets/s",
            tut,
            note=f"{label}; tutorial: DataLoader {workers} workers, PIL per sample; goal >= 10",
        ),
        Row(
            "gpu_compute_bound_synced",
            synced,
            "triplets/s",
            bound,
            note="compute bound with loss.item() every step, vs without",
        ),
        Row(
            "gpu_epoch_s",
            epoch["epoch_s"],
            "s",
            30.0,
            note=f"train_one_epoch, {epoch['steps']} steps, {epoch['triplets_per_s']:.0f} triplets/s "
            "(sampling and first-step warm-up included); goal < 30 s",
        ),
    ]
    if time_left():
        log("dvbpr.train.train, 1 epoch (load, train, validate, checkpoint)")
        out = args.work / "run"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        train(
            TrainConfig(
                data=str(data),
                out=str(out),
                arch="cnnf",
                image_size=size,
                batch_size=batch,
                epochs=1,
                device=device.type,
            ),
            progress=False,
        )
        rows.append(
            Row(
                "gpu_train_1_epoch_s",
                time.perf_counter() - t0,
                "s",
                note="dvbpr.train.train(epochs=1): store cached, validation and checkpoints included",
            )
        )
    if not args.no_compile and time_left():
        log("compute bound with torch.compile")
        try:
            runner = ComputeBound(dataset, store, "cnnf", batch, device, compile_model=True)
            runner.run(max(3, warm))  # compilation happens here
            compiled = steps * batch / min(runner.run(steps) for _ in range(rounds))
            rows.append(
                Row("gpu_compute_bound_compiled", compiled, "triplets/s", bound, note="torch.compile(model) vs eager")
            )
        except Exception as exc:  # compile support varies: report, do not fail the run
            log(f"torch.compile failed: {type(exc).__name__}: {exc}")
    machine = machine_info()
    machine["total_s"] = round(time.perf_counter() - t_start)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(
            json.dumps({"machine": machine, "rows": [r.as_json() | {"note": r.note} for r in rows]}, indent=1)
        )
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=1))
    else:
        print(f"{machine.get('gpu', machine['cpu'])}; {machine['total_s']} s")
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
