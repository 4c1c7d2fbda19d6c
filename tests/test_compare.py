"""Runs side by side (dvbpr.compare and `python -m dvbpr compare`): the paired bootstrap against
hand-computed cases and its coverage, and comparisons of tiny runs against their evaluations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dvbpr import cli
from dvbpr.compare import bootstrap_means, compare_runs, paired_bootstrap_ci
from dvbpr.errors import RunsNotComparableError
from dvbpr.evaluate import evaluate_recommender
from dvbpr.recommender import Recommender
from dvbpr.rundir import read_metrics


@pytest.fixture(scope="module")
def other_run(tiny_root: Path, tiny_data: Path, tiny_train_kwargs: dict) -> Path:
    """A second run of the tiny dataset: another seed, 2 epochs."""
    from dvbpr.config import TrainConfig
    from dvbpr.train import train

    out = tiny_root / "runs" / "other-seed"
    if not (out / "best.pt").is_file():
        kwargs = dict(tiny_train_kwargs, seed=1, epochs=2)
        assert train(TrainConfig(data=str(tiny_data), out=str(out), **kwargs), progress=False)["state"] == "finished"
    return out


# --------------------------------------------------------------------------------- bootstrap
def test_paired_bootstrap_ci_hand_computed() -> None:
    """Differences b - a = [1, 0, 0, 0]: a resample's mean is j/4 with j ~ Binomial(4, 1/4), so
    P(mean = 0) = 0.316 > 2.5% and P(mean <= 0.5) = 0.949 < 97.5% <= P(mean <= 0.75) = 0.996:
    the 95% interval is [0, 0.75] around the mean 0.25."""
    a = np.array([0.2, 0.5, 0.7, 0.1])
    d = paired_bootstrap_ci(a, a + [1, 0, 0, 0], n_boot=20_000, level=0.95, seed=3)
    assert d.mean == pytest.approx(0.25)
    assert (d.low, d.high) == pytest.approx((0.0, 0.75))
    assert d.users == 4 and not d.excludes_zero
    means = bootstrap_means(np.array([1.0, 0, 0, 0]), 20_000, seed=3)
    assert set(np.unique(means)) <= {0, 0.25, 0.5, 0.75, 1.0}
    assert np.mean(means == 0) == pytest.approx(0.75**4, abs=0.01)


def test_paired_bootstrap_ci_constant_difference_and_nan_pairs() -> None:
    a = np.array([0.1, 0.4, np.nan, 0.9, 0.3])
    b = a + 0.05
    b[4] = np.nan  # a user without a value in one run is left out
    d = paired_bootstrap_ci(a, b, n_boot=200)
    assert (d.mean, d.low, d.high) == pytest.approx((0.05, 0.05, 0.05))
    assert d.users == 3 and d.excludes_zero
    empty = paired_bootstrap_ci(np.array([np.nan]), np.array([1.0]))
    assert empty.users == 0 and np.isnan(empty.mean)
    with pytest.raises(ValueError):
        paired_bootstrap_ci(np.zeros(3), np.zeros(4))


def test_paired_bootstrap_ci_excludes_zero_for_a_gap_and_includes_it_for_noise() -> None:
    rng = np.random.default_rng(7)
    a = rng.uniform(0.5, 1.0, 400)
    noise = rng.normal(0, 1, 400)
    gap = paired_bootstrap_ci(a, a + 0.5 + noise, n_boot=2000, seed=1)
    assert gap.excludes_zero and gap.low > 0
    # the half-width matches the normal theory 1.96 * sd / sqrt(n) within 15%
    half = 1.96 * np.std(noise, ddof=1) / np.sqrt(400)
    assert (gap.high - gap.low) / 2 == pytest.approx(half, rel=0.15)
    assert gap.low < gap.mean < gap.high
    symmetric = np.r_[noise[:200], -noise[:200]]  # mean exactly 0: no difference at all
    none = paired_bootstrap_ci(a, a + symmetric, n_boot=2000, seed=1)
    assert not none.excludes_zero and none.low < 0 < none.high
    worse = paired_bootstrap_ci(a + 0.5 + noise, a, n_boot=2000, seed=1)
    assert worse.high < 0 and (worse.low, worse.high) == pytest.approx((-gap.high, -gap.low))


def test_bootstrap_is_seeded_and_bounded_in_memory(monkeypatch) -> None:
    from dvbpr import compare

    values = np.random.default_rng(0).random(1000)
    assert np.array_equal(bootstrap_means(values, 300, seed=5), bootstrap_means(values, 300, seed=5))
    assert not np.array_equal(bootstrap_means(values, 300, seed=5), bootstrap_means(values, 300, seed=6))
    monkeypatch.setattr(compare, "_BOOT_ELEMENTS", 5000)  # blocks of 5 replicates
    small_blocks = bootstrap_means(values, 300, seed=5)
    assert small_blocks.shape == (300,)
    assert np.std(small_blocks) == pytest.approx(np.std(values) / np.sqrt(1000), rel=0.2)


# ------------------------------------------------------------------------------------ runs
def test_compare_runs_pairs_users_and_agrees_with_each_runs_evaluation(tiny_run: Path, other_run: Path) -> None:
    c = compare_runs([tiny_run, other_run], k=10, n_boot=500, device="cpu")
    assert c.names == ["base", "other-seed"] and c.reference == "base"
    assert c.diff_metrics == ("auc", "recall@10")
    per_run = {}
    for name, run in (("base", tiny_run), ("other-seed", other_run)):
        result = evaluate_recommender(Recommender.from_run(run, device="cpu"), "test", (10,))
        assert c.metrics[name] == pytest.approx(result.metrics, nan_ok=True)
        per_run[name] = result.per_user
        # the curves are the run's epoch lines, validation values only
        epochs = [r for r in read_metrics(run) if r["type"] == "epoch"]
        assert [p["epoch"] for p in c.curves[name]] == [r["epoch"] for r in epochs]
        assert [p["val_auc"] for p in c.curves[name]] == [r["val_auc"] for r in epochs]
    assert len(c.users) == c.metrics["base"]["users"] == 40
    for metric in c.diff_metrics:
        d = c.diffs["other-seed"][metric]
        expected = np.mean(per_run["other-seed"][metric] - per_run["base"][metric])
        assert d.mean == pytest.approx(expected) and d.users == 40
        assert d.low <= d.mean <= d.high
    assert "base" not in c.diffs
    out = c.to_dict(per_user=True)
    json.dumps(out, allow_nan=False)  # strict JSON: nan became null
    assert out["per_user"]["base"]["auc"] == pytest.approx(list(per_run["base"]["auc"]))


def test_compare_a_run_with_its_copy_and_with_baselines(tiny_run: Path, tiny_data: Path, tiny_copy) -> None:
    copy = tiny_copy(tiny_run, "copy")  # elsewhere: its dataset is given (data=, --data)
    c = compare_runs([tiny_run, copy], baselines=True, n_boot=300, data=tiny_data, device="cpu")
    assert c.names == ["base", "copy", "popularity", "bpr-mf"]
    same = c.diffs["copy"]["auc"]
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero
    assert c.curves.keys() == {"base", "copy"}  # baselines have no training curves
    for name in ("popularity", "bpr-mf"):  # the baselines are compared as runs are
        d = c.diffs[name]["auc"]
        assert d.mean == pytest.approx(c.metrics[name]["auc"] - c.metrics["base"]["auc"])
        assert d.low <= d.mean <= d.high and d.users == 40


def test_compare_refuses_other_datasets_repeats_and_a_single_run(
    tiny_run: Path, tiny_make_dataset, tiny_train_kwargs: dict, tmp_path: Path
) -> None:
    from dvbpr.config import TrainConfig
    from dvbpr.train import train

    data = tiny_make_dataset(tmp_path / "data-seed1", seed=1)  # same ids, other interactions
    run = tmp_path / "elsewhere"
    train(TrainConfig(data=str(data), out=str(run), **dict(tiny_train_kwargs, epochs=1)), progress=False)
    with pytest.raises(RunsNotComparableError, match=r"base and elsewhere .*different datasets"):
        compare_runs([tiny_run, run], device="cpu")
    with pytest.raises(RunsNotComparableError, match="more than once"):
        compare_runs([tiny_run, tiny_run])
    with pytest.raises(RunsNotComparableError, match="at least two runs"):
        compare_runs([tiny_run])


# ------------------------------------------------------------------------------------- CLI
def test_cli_compare_table_and_json(capsys, tiny_run: Path, other_run: Path) -> None:
    code = cli.main(["compare", str(tiny_run), str(other_run), "--k", "10", "--boot", "200", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert "auc vs base [95% CI]" in lines[0] and "recall@10 vs base [95% CI]" in lines[0]
    assert lines[2].startswith("base") and "(reference)" in lines[2]
    assert lines[3].startswith("other-seed") and lines[3].count("[") == 2

    code = cli.main(["compare", str(tiny_run), str(other_run), "--boot", "200", "--json", "--device", "cpu"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["reference"] == "base" and data["runs"] == ["base", "other-seed"]
    d = data["diffs"]["other-seed"]["recall@20"]
    assert d["low"] <= d["mean"] <= d["high"] and d["users"] == 40
    assert "per_user" not in data  # only with --per-user


def test_cli_compare_errors_are_one_line(capsys, tiny_run: Path) -> None:
    assert cli.main(["compare", str(tiny_run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: compare needs at least two runs") and err.count("\n") == 1
