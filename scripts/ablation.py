"""One row of the ablation tables in docs/training.md: train a configuration for a fixed CPU
budget, then measure it (full-ranking test metrics and the embedding diagnostics).

    python scripts/ablation.py run NAME --data data/default --minutes 8 -- --norm none ...
    python scripts/ablation.py table [--data data/default]      # the markdown table so far

Runs go to runs/ablation/<dataset>/<NAME>/ (ignored by git); each leaves result.json beside
its checkpoints. One thread per run (OMP_NUM_THREADS=1), so two runs side by side on the
2-core machine each get one core, as the recorded figures did.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dvbpr.rundir import BEST, read_status

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "ablation"
COLUMNS = [("auc", "AUC"), ("auc_cold", "cold AUC"), ("recall@20", "R@20"), ("ndcg@20", "nDCG@20"), ("rr", "RR")]


def run(name: str, data: str, minutes: float, flags: list[str], epochs: int = 0) -> dict:
    run_dir = OUT / Path(data).name / name
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not (run_dir / BEST).exists():
        budget = ["--epochs", str(epochs)] if epochs else ["--max-minutes", str(minutes), "--epochs", "100"]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dvbpr",
                "train",
                "--data",
                data,
                "--out",
                str(run_dir),
                *budget,
                "--log-every",
                "50",
                *flags,
            ],
            check=True,
            env=env,
        )
    t0 = time.time()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dvbpr",
            "evaluate",
            str(run_dir),
            "--embedding",
            "--json",
            "--k",
            "20",
            "--device",
            "cpu",
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    report = json.loads(out.stdout)
    status = read_status(run_dir)
    result = {
        "name": name,
        "data": Path(data).name,
        "minutes": 0 if epochs else minutes,
        "flags": flags,
        "epochs_done": status.get("epoch"),
        "steps": status.get("step"),
        "metrics": report["dvbpr"],
        "embedding": report["embedding"],
        "eval_s": time.time() - t0,
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def row(result: dict) -> str:
    m, e = result["metrics"], result["embedding"]
    lifts = e.get("taste_lifts", {})
    agree = e.get("neighbour_agreement", {})
    cells = [result["data"], result["name"], " ".join(result["flags"]) or "(defaults)", f"{result['steps']}"]
    cells += [f"{m.get(key, float('nan')):.3f}" for key, _ in COLUMNS]
    cells += [f"{e['participation_ratio']:.1f}", f"{e['near_duplicate_share']:.3f}"]
    cells += [", ".join(f"{c} {v['agreement']:.2f}" for c, v in agree.items())]
    cells += [", ".join(f"{a} {v['lift']:.2f}" for a, v in lifts.items()) or "-"]
    return "| " + " | ".join(cells) + " |"


def table(data: str | None) -> str:
    header = (
        ["data", "run", "flags", "steps"]
        + [label for _, label in COLUMNS]
        + ["PR", "dup>0.99", "NN agreement", "taste lifts (top 20)"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    folders = [OUT / Path(data).name] if data else sorted(p for p in OUT.iterdir() if p.is_dir())
    for folder in folders:
        for path in sorted(folder.glob("*/result.json"), key=lambda p: p.stat().st_mtime):
            lines.append(row(json.loads(path.read_text())))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="train and measure one configuration")
    p.add_argument("name", help="row name (the run folder's name)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="a budget in epochs instead of minutes (fair when other work shares the CPU)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=8.0,
        help="training budget in minutes (default 8); extra `dvbpr train` flags follow a --",
    )
    p = sub.add_parser("table", help="print the markdown table of the finished rows")
    p.add_argument("--data", default=None, help="only this dataset's rows")
    args, flags = parser.parse_known_args()  # what follows -- goes to `dvbpr train` as it is
    if args.cmd == "run":
        print(row(run(args.name, args.data, args.minutes, [f for f in flags if f != "--"], args.epochs)))
    else:
        print(table(args.data))


if __name__ == "__main__":
    main()
