"""Command line: `python -m dvbpr COMMAND ...` (see `python -m dvbpr --help`).

Errors of the package (DVBPRError) are printed as one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import numpy as np
from PIL import Image

from .catalogue import add_item, remove_item
from .compare import compare_runs, format_comparison
from .config import PRESETS, TrainConfig, option_default, option_flag, option_help, resume_config
from .data import load_dataset
from .diagnostics import embedding_report, format_report
from .emoji import EMOJI_DATA_DIR, EmojiConfig, make_emoji_dataset
from .errors import DVBPRError
from .evaluate import evaluate_baselines, evaluate_recommender, format_table, write_per_user_csv
from .explain import overlay
from .export import export_format, export_top_lists
from .fsutil import atomic_write, read_json
from .importers import REPORT_FILE, import_folder, import_kang_npy, import_visrec
from .recommender import Recommender
from .rundir import BEST, CACHE, LAST
from .synth import DEFAULT_DATA_DIR, SynthConfig, ensure_default_dataset, make_dataset

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return register


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _data_or_default(data: str | None) -> Path:
    """DATA as given, or the default dataset, generated if missing."""
    if data is None or Path(data).resolve() == DEFAULT_DATA_DIR:
        return ensure_default_dataset(progress=True)
    return Path(data)


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError("--k needs positive integers, e.g. 10,20,100")
    return ks


# ------------------------------------------------------------------------------ commands
@command("make-default")
def _make_default(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else DEFAULT_DATA_DIR
    make_dataset(out, SynthConfig(seed=args.seed), progress=True)
    print(f"default dataset written to {out}")
    return 0


@command("make-emoji")
def _make_emoji(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else EMOJI_DATA_DIR
    make_emoji_dataset(out, EmojiConfig(n_users=args.users, seed=args.seed), package=args.package, progress=True)
    dataset = load_dataset(out)
    info = dataset.info()
    print(f"emoji dataset written to {out}")
    for key in ("users", "items", "interactions", "train", "validation", "test", "cold_items", "categories"):
        print(f"{key:>13}: {info[key]}")
    for warning in dataset.warnings:
        print(f"warning: {warning}")
    return 0


@command("info")
def _info(args: argparse.Namespace) -> int:
    dataset = load_dataset(_data_or_default(args.data))
    info = dataset.info()
    if args.json:
        _print_json(info)
        return 0
    for key in (
        "name",
        "path",
        "users",
        "items",
        "interactions",
        "train",
        "validation",
        "test",
        "cold_items",
        "categories",
    ):
        print(f"{key:>13}: {info[key]}")
    for warning in dataset.warnings:
        print(f"warning: {warning}")
    return 0


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .train import train  # the training module, only for the command that trains

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if args.preset:
        if args.resume:
            raise DVBPRError("--preset chooses a new run's configuration; a resumed run keeps its own")
        given = PRESETS[args.preset] | given  # flags given beside the preset win
    if args.resume:
        if not args.out:
            raise DVBPRError("--resume needs --out RUN_DIR (the run to continue)")
        overrides = {k: given.get(k) for k in ("epochs", "max_minutes", "device", "patience")}
        cfg = resume_config(args.out, data=args.data, **overrides)
    else:
        if not args.out:
            raise DVBPRError("train needs --out RUN_DIR")
        given["data"] = str(_data_or_default(args.data))
        cfg = TrainConfig(**given)
    status = train(cfg, resume=args.resume, progress=True)
    if status:  # empty on DDP ranks other than 0, which stay quiet
        print(
            f"{status['state']}: {cfg.out} (best validation AUC {status.get('best_val_auc')})"
            + (f" - {status['message']}" if status.get("message") else "")
        )
    return 0


def _recommender(args: argparse.Namespace) -> Recommender:
    return Recommender.from_run(args.run_dir, data=args.data, device=args.device, progress=True)


@command("recommend")
def _recommend(args: argparse.Namespace) -> int:
    rec = _recommender(args)
    ids, scores = rec.recommend(args.user, k=args.k, exclude_seen=not args.include_seen)
    if args.json:
        _print_json({"user": args.user, "items": [{"item_id": i, "score": float(s)} for i, s in zip(ids, scores)]})
        return 0
    for rank, (item, score) in enumerate(zip(ids, scores), 1):
        print(f"{rank:>5}  {item:<24} {score:10.4f}")
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    rec = _recommender(args)
    result = evaluate_recommender(rec, split=args.split, ks=args.k, progress=True)
    table = {"dvbpr": result.metrics}
    if args.baselines:
        table.update(
            {name: r.metrics for name, r in evaluate_baselines(rec.dataset, args.split, args.k, progress=True).items()}
        )
    if args.per_user:
        write_per_user_csv(args.per_user, result, rec.dataset)
    embedding = None
    if args.embedding:
        embedding = embedding_report(rec)
    if args.json:
        _print_json(table if embedding is None else {**table, "embedding": embedding})
    else:
        print(format_table(table))
        if embedding is not None:
            print()
            print(format_report(embedding))
    return 0


@command("compare")
def _compare(args: argparse.Namespace) -> int:
    comparison = compare_runs(
        args.run_dirs,
        split=args.split,
        k=args.k,
        baselines=args.baselines,
        n_boot=args.boot,
        level=args.level,
        seed=args.seed,
        data=args.data,
        device=args.device,
        progress=True,
    )
    if args.json:
        _print_json(comparison.to_dict(per_user=args.per_user))
    else:
        print(format_comparison(comparison))
    return 0


@command("export")
def _export(args: argparse.Namespace) -> int:
    export_format(args.out)  # a bad file name fails before the run is loaded
    rec = _recommender(args)
    path = export_top_lists(rec, args.out, k=args.k, progress=True)
    print(f"top-{min(args.k, rec.dataset.n_items)} lists of {rec.dataset.n_users:,} users written to {path}")
    return 0


@command("rank-users")
def _rank_users(args: argparse.Namespace) -> int:
    rec = _recommender(args)
    users, scores = rec.rank_users(args.image, k=args.k, name=args.image)
    if args.json:
        _print_json({"image": args.image, "users": [{"user_id": u, "score": float(s)} for u, s in zip(users, scores)]})
        return 0
    for rank, (user, score) in enumerate(zip(users, scores), 1):
        print(f"{rank:>5}  {user:<24} {score:10.4f}")
    return 0


@command("similar")
def _similar(args: argparse.Namespace) -> int:
    rec = _recommender(args)
    ids, sims = rec.similar_items(item_id=args.item, image=args.image, k=args.k)
    if args.json:
        _print_json(
            {
                "query": args.item or args.image,
                "items": [{"item_id": i, "similarity": float(s)} for i, s in zip(ids, sims)],
            }
        )
        return 0
    for rank, (item, sim) in enumerate(zip(ids, sims), 1):
        print(f"{rank:>5}  {item:<24} {sim:8.4f}")
    return 0


@command("precompute")
def _precompute(args: argparse.Namespace) -> int:
    rec = Recommender.from_run(args.run_dir, data=args.data, device=args.device, progress=True, top_lists=True)
    n_users, k = rec.top_ids.shape
    print(
        f"top-{k} lists of {n_users:,} users cached in {Path(rec.checkpoint_path).parent / CACHE}: "
        f"recommend with k <= {k} is now a lookup"
    )
    return 0


@command("explain")
def _explain(args: argparse.Namespace) -> int:
    out = Path(args.out)
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    if out.suffix.lower() not in formats:
        raise DVBPRError(f"--out {out}: write the map as .png, .jpg or .webp")
    rec = _recommender(args)
    explanation = rec.explain(args.user, item=args.item, image=args.image, name=args.image)
    picture = Image.fromarray(overlay(explanation, size=args.size))
    atomic_write(out, lambda fh: picture.save(fh, format=formats[out.suffix.lower()]))
    summary = {
        "user": args.user,
        "item" if args.item else "image": args.item or args.image,
        "visual_score": explanation.visual_score,
        "attribution": explanation.attribution,
        "map_size": explanation.heatmap.shape[0],
        "out": str(out),
    }
    if args.json:
        _print_json(summary)
    else:
        print(
            f"visual score {explanation.visual_score:.4f} of {summary.get('item') or summary.get('image')} for "
            f"{args.user}; the map of what raises it is in {out}"
        )
    return 0


@command("add-item")
def _add_item(args: argparse.Namespace) -> int:
    dataset = add_item(args.data, args.image, item_id=args.id, category=args.category, title=args.title)
    print(f"added {dataset.items.ids[-1]} to {args.data} ({dataset.n_items:,} items); its runs serve it as a cold item")
    return 0


@command("remove-item")
def _remove_item(args: argparse.Namespace) -> int:
    dataset = remove_item(args.data, args.item_id)
    print(f"removed {args.item_id} from {args.data} ({dataset.n_items:,} items)")
    return 0


@command("import")
def _import(args: argparse.Namespace) -> int:
    if args.format == "kang-npy":
        out = import_kang_npy(
            args.file, args.out, trust_pickle=args.trust_pickle, skip_missing_images=args.skip_missing_images
        )
    elif args.format == "folder":
        out = import_folder(args.source, args.out)
    else:
        out = import_visrec(args.csv, args.images_dir, args.out)
    dataset = load_dataset(out)
    info = dataset.info()
    print(f"imported into {out}")
    for key in ("users", "items", "interactions", "train", "validation", "test", "cold_items", "categories"):
        print(f"{key:>13}: {info[key]}")
    report = read_json(out / REPORT_FILE, {})
    if report.get("skipped_items"):
        print(
            f"skipped {report['skipped_items']} item(s) without image bytes "
            f"(e.g. {', '.join(report['skipped_item_ids'])}) and "
            f"{report['dropped_interactions']} interaction(s) with them"
        )
    for warning in dataset.warnings:
        print(f"warning: {warning}")
    return 0


# -------------------------------------------------------------------------------- parser
def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help=f"run folder holding {BEST} or {LAST} (e.g. models/default)")
    p.add_argument(
        "--data",
        default=None,
        help="dataset folder (default: the one the run records, found relative to the run "
        "folder, then by name under DVBPR_DATA_ROOT, then as recorded)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def _train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, its help, default and choices taken from the field. Every
    default here is None, so that the flags actually given can be told apart (a preset, resume)."""
    for f in fields(TrainConfig):
        default = option_default(f.name)
        kind: dict = (
            {"action": argparse.BooleanOptionalAction}
            if isinstance(default, bool)
            else {"type": type(default) if default is not None else str, "choices": f.metadata.get("choices")}
        )
        p.add_argument(
            option_flag(f.name), dest=f.name, default=None, help=_TRAIN_HELP.get(f.name) or option_help(f.name), **kind
        )
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help="start from a named configuration; paper = the original code's settings "
        "(no BatchNorm, uniform theta, one sampled negative from all items, lr 1e-4)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


_TRAIN_HELP = {"data": "dataset folder (default: data/default; with --resume: the run's own, found as for recommend)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dvbpr", description="DVBPR: visually-aware recommendation")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-default", help="generate the embedded default fashion dataset")
    p.add_argument("--out", default=None, help="output folder (default: data/default)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (0 is the shipped default)")

    p = sub.add_parser(
        "make-emoji",
        help="build a real-image dataset from the npm package "
        "emoji-datasource-google@16.0.0 (3,786 emoji) with synthetic users",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: data/emoji)")
    p.add_argument(
        "--package",
        default=None,
        metavar="TGZ",
        help="an already-downloaded emoji-datasource-google-16.0.0.tgz (default: fetch it with `npm pack`)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic users and interactions (default 0)")
    p.add_argument("--users", type=int, default=2000, help="number of synthetic users (default 2000)")

    p = sub.add_parser("info", help="validate a dataset folder and print its statistics")
    p.add_argument("data", nargs="?", default=None, help="dataset folder (default: data/default)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("train", help="train a DVBPR model (or resume / fine-tune one)")
    _train_args(p)

    p = sub.add_parser("recommend", help="top-k items for a user")
    _run_args(p)
    p.add_argument("--user", required=True, help="user id")
    p.add_argument("-k", type=int, default=20, help="number of items (more than the catalogue returns all)")
    p.add_argument("--include-seen", action="store_true", help="do not exclude the user's training items")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("evaluate", help="full-ranking metrics of a run (and baselines)")
    _run_args(p)
    p.add_argument("--split", choices=("test", "val"), default="test", help="held-out rows to evaluate")
    p.add_argument("--k", type=_ks, default=(20, 100), help="cut-offs, comma-separated (default 20,100)")
    p.add_argument("--baselines", action="store_true", help="also evaluate popularity and BPR-MF")
    p.add_argument("--per-user", dest="per_user", default=None, help="write per-user metrics to this CSV")
    p.add_argument(
        "--embedding",
        action="store_true",
        help="also diagnose the visual embedding phi: effective dimensions (participation ratio), "
        "near-duplicate items, what nearest neighbours share, hidden-taste lifts (under the key "
        '"embedding" with --json)',
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "compare",
        help="two or more runs of one dataset side by side: metrics, and each run's per-user "
        "difference to the first with a bootstrap confidence interval",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders; the first is the reference")
    p.add_argument(
        "--data", default=None, help="dataset folder of every run (default: the one each run records, found as usual)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--split", choices=("test", "val"), default="test", help="held-out rows to evaluate")
    p.add_argument("-k", "--k", type=int, default=20, help="cut-off of the top-k metrics and of Recall@k's difference")
    p.add_argument(
        "--baselines", action="store_true", help="also evaluate popularity and BPR-MF, compared the same way"
    )
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the users (default 1000)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--per-user",
        dest="per_user",
        action="store_true",
        help="with --json, add every user's AUC and Recall@k per run",
    )

    p = sub.add_parser(
        "export", help="every user's top-k list to a CSV or Parquet file (user_id,rank,item_id,score), in chunks"
    )
    _run_args(p)
    p.add_argument("-k", "--k", type=int, default=100, help="items per user (default 100)")
    p.add_argument("--out", required=True, help="output file: .csv, or .parquet (needs pyarrow)")

    p = sub.add_parser("rank-users", help="users who would rank a new image highest (cold start)")
    _run_args(p)
    p.add_argument("image", help="image file (jpg, png, webp, gif)")
    p.add_argument("-k", type=int, default=10, help="number of users")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("similar", help="visually nearest catalogue items")
    _run_args(p)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--item", default=None, help="catalogue item id")
    query.add_argument("--image", default=None, help="image file (jpg, png, webp, gif)")
    p.add_argument("-k", type=int, default=10, help="number of items")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "precompute",
        help="cache item features and every user's top-100 list of a run "
        "(done at load for small catalogues; makes recommend a lookup on large ones)",
    )
    _run_args(p)

    p = sub.add_parser(
        "explain", help="where in an item's image a user's visual score comes from: a heatmap over the image"
    )
    _run_args(p)
    p.add_argument("--user", required=True, help="user id")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--item", default=None, help="catalogue item id")
    query.add_argument("--image", default=None, help="image file (jpg, png, webp, gif)")
    p.add_argument("--out", required=True, help="where to write the heatmap over the image (.png, .jpg or .webp)")
    p.add_argument("--size", type=int, default=256, help="side of the written picture in pixels (default 256)")
    p.add_argument("--json", action="store_true", help="print JSON (user, item or image, visual score, out)")

    p = sub.add_parser(
        "add-item", help="add an item with only an image to a dataset's catalogue (its runs serve it at once)"
    )
    p.add_argument("data", metavar="DATA", help="dataset folder")
    p.add_argument("image", metavar="IMAGE", help="the item's image (jpg, png, webp)")
    p.add_argument(
        "--id", default=None, help="item id (letters, digits, '.', '_', '-'; default: item- and the image's hash)"
    )
    p.add_argument("--category", default="", help="the item's category (items.csv)")
    p.add_argument("--title", default="", help="the item's title (items.csv; default: its id)")

    p = sub.add_parser("remove-item", help="remove an item without interactions (one add-item added) from a dataset")
    p.add_argument("data", metavar="DATA", help="dataset folder")
    p.add_argument("item_id", metavar="ITEM_ID", help="the item's id")

    p = sub.add_parser("import", help="convert a public dataset into a dataset folder")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT", help="the source format")
    f = formats.add_parser("kang-npy", help="an original DVBPR .npy file (Amazon, Tradesy)")
    f.add_argument("file", metavar="FILE", help="the .npy file, e.g. AmazonFashion6ImgPartitioned.npy")
    f.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create (new or empty)")
    f.add_argument(
        "--trust-pickle",
        dest="trust_pickle",
        action="store_true",
        help="allow loading the file: it is a pickle, which can run code; only for files from a source you trust",
    )
    f.add_argument(
        "--skip-missing-images",
        dest="skip_missing_images",
        action="store_true",
        help="leave out items without image bytes and their interactions (default: stop with an error listing them)",
    )
    f = formats.add_parser("folder", help="a dataset folder elsewhere (what the Data page's folder import does)")
    f.add_argument("source", metavar="SOURCE", help="the dataset folder to copy (validated first; its .cache left out)")
    f.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create (new or empty)")
    f = formats.add_parser("visrec", help="a VisRec tutorial CSV (Wikimedia, UGallery) and its images")
    f.add_argument(
        "csv",
        metavar="CSV",
        help="user_id,item_id,timestamp,evaluation (Wikimedia) or user_id,item_id,artist_id,timestamp (UGallery)",
    )
    f.add_argument(
        "images_dir", metavar="IMAGES_DIR", help="folder with one image per item, <item_id>.jpg (or jpeg/png/webp)"
    )
    f.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create (new or empty)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DVBPRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
