"""Runs side by side: one metrics table, the validation curves, per-user metrics, and the paired
per-user difference of every run against the first with a bootstrap confidence interval.

Every run is evaluated exactly as `evaluate_recommender` does (full ranking, same split, same
users), so each user has one value per run: the difference of two runs is paired per user, and
its confidence interval comes from resampling users (`paired_bootstrap_ci`, a percentile
bootstrap). An interval that excludes 0 says the gap is larger than what the choice of users
would explain; one that includes 0 says the data cannot tell the runs apart. See
docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DVBPRError, RunsNotComparableError
from .evaluate import evaluate_baselines, evaluate_recommender
from .evaluate_core import RankingResult
from .recommender import Recommender
from .rundir import read_metrics

DIFF_METRICS = ("auc", "recall@{k}")
"""Per-user metrics whose paired difference gets a confidence interval (k filled in)."""

_BOOT_ELEMENTS = 1 << 24
"""Resampled user indices held at a time (128 MB of int64): replicates are drawn in blocks."""


@dataclass(frozen=True)
class PairedDiff:
    """Mean over users of (run - reference) for one metric, with its bootstrap interval."""

    mean: float
    low: float
    high: float
    users: int  # users with a value in both runs

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass
class Comparison:
    """What `compare_runs` measured. `names` are the runs (folder names) in the order given,
    then the baselines; the first is the reference every difference is taken against.

    Attributes:
        metrics: name -> the run's metrics (`RankingResult.metrics`).
        per_user: name -> {"auc": ..., "recall@k": ...} arrays aligned with `users`.
        users: the evaluated user ids (those with a held-out item in `split`), shared by every run.
        diffs: name -> metric -> PairedDiff against the reference (every name but the first).
        curves: run name -> its per-epoch validation records from metrics.jsonl (epoch and
            every `val_*` value); baselines have none.
    """

    names: list[str]
    split: str
    k: int
    level: float
    n_boot: int
    seed: int
    metrics: dict[str, dict[str, float]]
    per_user: dict[str, dict[str, np.ndarray]]
    users: list[str]
    diffs: dict[str, dict[str, PairedDiff]] = field(default_factory=dict)
    curves: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return self.names[0]

    @property
    def diff_metrics(self) -> tuple[str, ...]:
        return tuple(m.format(k=self.k) for m in DIFF_METRICS)

    def to_dict(self, per_user: bool = False) -> dict:
        """JSON-able (plain floats, nan as None); `per_user` adds the per-user arrays."""
        out = {
            "reference": self.reference,
            "runs": self.names,
            "split": self.split,
            "k": self.k,
            "level": self.level,
            "bootstrap": self.n_boot,
            "seed": self.seed,
            "metrics": {name: {key: _plain(v) for key, v in m.items()} for name, m in self.metrics.items()},
            "diffs": {
                name: {
                    metric: {"mean": _plain(d.mean), "low": _plain(d.low), "high": _plain(d.high), "users": d.users}
                    for metric, d in by_metric.items()
                }
                for name, by_metric in self.diffs.items()
            },
            "curves": self.curves,
        }
        if per_user:
            out["users"] = self.users
            out["per_user"] = {
                name: {key: [_plain(v) for v in values] for key, values in arrays.items()}
                for name, arrays in self.per_user.items()
            }
        return out


def _plain(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


# --------------------------------------------------------------------------------- bootstrap
def bootstrap_means(values: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Means of `n_boot` resamples (with replacement, same size) of `values`, drawn from a
    seeded numpy Generator in blocks of replicates, so memory stays bounded for any size."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 0 or n_boot < 1:
        raise ValueError(f"need values and n_boot >= 1, got {n} values and n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    block = max(1, _BOOT_ELEMENTS // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, block):
        stop = min(start + block, n_boot)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> PairedDiff:
    """Mean of b - a over the pairs, and its percentile bootstrap interval at `level`: users
    (pairs) are resampled with replacement `n_boot` times; the interval holds the central `level`
    share of the resampled means. Pairs where either value is nan are left out."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D arrays of one length, got {a.shape} and {b.shape}")
    diff = (b - a)[~(np.isnan(a) | np.isnan(b))]
    if diff.size == 0:
        return PairedDiff(float("nan"), float("nan"), float("nan"), 0)
    tail = (1 - level) / 2
    low, high = np.quantile(bootstrap_means(diff, n_boot, seed), [tail, 1 - tail])
    return PairedDiff(float(diff.mean()), float(low), float(high), int(diff.size))


# ------------------------------------------------------------------------------ comparison
def compare_runs(
    run_dirs: Sequence[str | Path],
    split: str = "test",
    k: int = 20,
    baselines: bool = False,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    data: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
) -> Comparison:
    """Evaluate two or more runs of one dataset (and, with `baselines`, popularity and BPR-MF)
    on `split`, and compare each with the first run user by user (see the module docstring).

    Runs are loaded one at a time (`Recommender.from_run`, `data` as there), so memory holds one
    model and every run's per-user values. RunsNotComparableError when fewer than two runs are
    given, one is given twice, or their checkpoints were not trained on the same dataset (ids
    and splits: the checkpoint's dataset signature).
    """
    if split not in ("val", "test"):
        raise DVBPRError(f"split must be 'val' or 'test', got {split!r}")
    if k < 1 or n_boot < 1:
        raise DVBPRError(f"k and the number of bootstrap resamples must be at least 1, got {k} and {n_boot}")
    names = _run_names(run_dirs)
    ks = (k,)
    results: dict[str, RankingResult] = {}
    curves: dict[str, list[dict]] = {}
    dataset, signature = None, None
    for name, run in zip(names, run_dirs):
        rec = Recommender.from_run(run, data=data, device=device, progress=progress, top_lists=False)
        if dataset is None:
            dataset, signature = rec.dataset, rec.checkpoint["dataset_signature"]
        elif rec.checkpoint["dataset_signature"] != signature:
            raise RunsNotComparableError(
                f"runs {names[0]} and {name} were trained on different datasets "
                f"({dataset.root.name} and {rec.dataset.root.name}, or other splits of one): "
                "compare runs of one dataset"
            )
        results[name] = evaluate_recommender(rec, split, ks, progress=progress)
        curves[name] = validation_curve(run)
        del rec  # one model in memory at a time
    if baselines:
        for name, result in evaluate_baselines(dataset, split, ks, progress=progress).items():
            results[_unique(name, results)] = result
    users = dataset.users.to_ids(results[names[0]].per_user["user"])
    comparison = Comparison(
        names=list(results),
        split=split,
        k=k,
        level=level,
        n_boot=n_boot,
        seed=seed,
        metrics={name: r.metrics for name, r in results.items()},
        per_user={},
        users=users,
        curves=curves,
    )
    comparison.per_user = {
        name: {metric: r.per_user[metric] for metric in comparison.diff_metrics} for name, r in results.items()
    }
    reference = comparison.per_user[comparison.reference]
    for name in comparison.names[1:]:
        comparison.diffs[name] = {
            metric: paired_bootstrap_ci(reference[metric], comparison.per_user[name][metric], n_boot, level, seed)
            for metric in comparison.diff_metrics
        }
    return comparison


def validation_curve(run_dir: str | Path) -> list[dict]:
    """The run's per-epoch validation records: {"epoch": e, "val_auc": ..., ...} (numbers only)."""
    return [
        {"epoch": r["epoch"]}
        | {k: v for k, v in r.items() if k.startswith("val_") and isinstance(v, (int, float)) and np.isfinite(v)}
        for r in read_metrics(run_dir)
        if r.get("type") == "epoch" and "epoch" in r
    ]


def _run_names(run_dirs: Sequence[str | Path]) -> list[str]:
    """One label per run: its folder name, or the path as given when two folders share a name."""
    if len(run_dirs) < 2:
        raise RunsNotComparableError(f"compare needs at least two runs, got {len(run_dirs)}")
    resolved = [Path(r).resolve() for r in run_dirs]
    repeated = sorted({str(r) for r, p in zip(run_dirs, resolved) if resolved.count(p) > 1})
    if repeated:
        raise RunsNotComparableError(f"run {repeated[0]} is given more than once")
    names = [Path(r).name for r in run_dirs]
    return [n if names.count(n) == 1 else str(r) for n, r in zip(names, run_dirs)]


def _unique(name: str, taken: dict) -> str:
    """A baseline's label, marked when a run folder already has that name."""
    return name if name not in taken else f"{name} (baseline)"


# ---------------------------------------------------------------------------------- table
TABLE_METRICS = ("auc", "auc_cold", "rr", "recall@{k}", "ndcg@{k}")


def format_comparison(c: Comparison) -> str:
    """A plain-text table: one row per run, its metrics, then for each metric of
    `c.diff_metrics` its difference to the reference with the interval ("*": excludes 0)."""
    keys = [m.format(k=c.k) for m in TABLE_METRICS]
    diff_headers = [f"{m} vs {c.reference} [{c.level:.0%} CI]" for m in c.diff_metrics]
    rows = []
    for name in c.names:
        m = c.metrics[name]
        cells = [name, f"{int(m['users'])}"] + [_number(m.get(key, float("nan"))) for key in keys]
        if name == c.reference:
            cells += ["(reference)"] * len(c.diff_metrics)
        else:
            cells += [_diff_cell(c.diffs[name][metric]) for metric in c.diff_metrics]
        rows.append(cells)
    header = ["run", "users", *keys, *diff_headers]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))]
        return "  ".join(cells).rstrip()

    lines = [line(header), "-" * len(line(header)), *(line(row) for row in rows)]
    lines.append(
        f"{c.split} split; paired per-user differences, percentile bootstrap over users "
        f"({c.n_boot} resamples, seed {c.seed}); * the interval excludes 0"
    )
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:.4f}" if np.isfinite(value) else "n/a"


def _diff_cell(d: PairedDiff) -> str:
    if not d.users:
        return "n/a"
    return f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]" + ("*" if d.excludes_zero else " ")
