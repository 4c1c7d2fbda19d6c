"""The benchmark suite: `python benchmarks/run.py [--quick | --smoke] [--json] [--only ...]`.

Sections (one module each): train (training.py), eval (evaluation.py), serve (serving.py),
scale (scale.py), umap (embedding_map.py), catalogue (catalogue.py: explanations and new items,
reusing the scale section's data); the optional sections browser (browser.py: the app in
chromium) and load (load.py: many sessions of it at once) run only when asked, with `--browser`
or `--only browser`, `--only load`. Prints one table (or, with
--json, a JSON list of rows {"name", "value", "unit", "reference", "ratio"}); progress goes to
stderr. `--quick` stays under 10 minutes on the 2-core CPU machine (scale and the large map
reduced to 1/10); `--smoke` runs everything at tiny sizes in seconds (CI). See
docs/benchmarks.md for what each row means. Exit status 1 if any section failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Run as a script, this folder would shadow installed modules with our file names: use the
# repository root instead and import the package `benchmarks`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from benchmarks.common import MODES, Context, Row, default_work_dir, format_table, machine_info  # noqa: E402

SECTIONS = {
    "train": "training",
    "eval": "evaluation",
    "serve": "serving",
    "scale": "scale",
    "umap": "embedding_map",
    "catalogue": "catalogue",
}
# Run only when asked (`--browser`, or named in --only): the app in chromium (benchmarks/browser.py)
# and many sessions of it at once (benchmarks/load.py).
OPTIONAL = {"browser": "browser", "load": "load"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="reduced sizes, under 10 minutes on 2 cores")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the suite runs")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--browser",
        action="store_true",
        help="also run the optional browser section (the app in chromium on the default "
        "data and model; needs /usr/bin/chromium)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="scratch folder for generated data and runs (default $DVBPR_BENCH_DIR or <tmp>/dvbpr-bench)",
    )
    parser.add_argument("--save", type=Path, default=None, help="also write {machine, mode, rows} as JSON to this file")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.browser and "browser" not in sections:
        sections.append("browser")
    unknown = [s for s in sections if s not in SECTIONS and s not in OPTIONAL]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS) + list(OPTIONAL)}")
    work = (args.work_dir or default_work_dir()) / mode
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(MODES[mode], work)
    machine = machine_info()
    ctx.log(
        f"benchmarks ({mode}) on {machine['cpu']} x{machine['cores']}, {machine['ram_gib']} GiB, "
        f"load {machine['load_avg']}; work folder {work}"
    )

    import importlib

    rows: list[Row] = []
    failed = []
    t0 = time.time()
    for name in sections:
        started = time.time()
        try:
            module = importlib.import_module(f"benchmarks.{SECTIONS.get(name) or OPTIONAL[name]}")
            rows += module.section(ctx)
        except Exception:
            failed.append(name)
            ctx.log(f"section {name} FAILED:\n{traceback.format_exc()}")
        ctx.log(f"section {name}: {time.time() - started:.0f} s")
    machine["load_avg_end"] = machine_info()["load_avg"]
    machine["total_s"] = round(time.time() - t0)
    if args.save:
        args.save.write_text(
            json.dumps(
                {"machine": machine, "mode": mode, "rows": [r.as_json() | {"note": r.note} for r in rows]}, indent=1
            )
        )
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=1))
    else:
        print(
            f"mode {mode}; {machine['cpu']} x{machine['cores']} cores, {machine['ram_gib']} GiB; "
            f"load average {machine['load_avg']} -> {machine['load_avg_end']}; {machine['total_s']} s"
        )
        print(format_table(rows))
    if failed:
        ctx.log(f"failed sections: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
