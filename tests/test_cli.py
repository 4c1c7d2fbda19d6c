"""The command line: help texts, one-line errors, and evaluation checked against rankings."""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dvbpr import cli
from dvbpr.data import load_dataset

REPO = Path(__file__).resolve().parent.parent


def subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for every (nested) subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"subcommand {' '.join(path + (name,))} has no help"
                yield path + (name,), sub
                yield from subparsers(sub, path + (name,))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- help -----------------------------------------------------------------------------------


def test_every_subcommand_has_help_and_every_flag_a_help_string(capsys) -> None:
    commands = list(subparsers(cli.build_parser()))
    names = {" ".join(path) for path, _ in commands}
    assert {"make-default", "info", "train", "recommend", "evaluate", "rank-users", "similar"} <= names
    for path, parser in commands:
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help.strip(), f"{' '.join(path)} {action.option_strings or action.dest}"
        with pytest.raises(SystemExit) as exit_:
            cli.main([*path, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: python -m dvbpr " + " ".join(path))


def test_train_flags_cover_every_training_option() -> None:
    from dataclasses import fields

    from dvbpr.config import TrainConfig

    train_parser = dict(subparsers(cli.build_parser()))[("train",)]
    dests = {a.dest for a in train_parser._actions}
    assert {f.name for f in fields(TrainConfig)} <= dests


# --- errors ---------------------------------------------------------------------------------


def test_errors_are_one_line_on_stderr_with_status_2(capsys, tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "interactions.csv").write_text("user_id,item_id\nu1\n")
    cases = [
        (["recommend", tiny_run, "--user", "nobody", "--device", "cpu"], "nobody"),
        (["recommend", tmp_path / "missing-run", "--user", "u0"], "missing-run"),
        (["evaluate", tmp_path / "missing-run"], "does not exist"),
        (["similar", tiny_run, "--item", "no-item", "--device", "cpu"], "no-item"),
        (["rank-users", tiny_run, tmp_path / "nope.png", "--device", "cpu"], "nope.png"),
        (["info", bad], "interactions.csv"),
        (["info", tmp_path / "no-data"], "no-data"),
        (["train", "--data", bad, "--out", tmp_path / "r"], "interactions.csv"),
        (["train", "--out", tmp_path / "r2", "--resume"], "nothing to resume"),
        (["train", "--data", bad, "--out", tmp_path / "r3", "--lr", "-1"], "learning rate"),
        (["train", "--data", bad, "--out", tmp_path / "r4", "--log-every", "0"], "log interval"),
        (["similar", tiny_run, "--item", "i1", "-k", "0", "--device", "cpu"], "k must be at least 1"),
        (
            ["rank-users", tiny_run, tiny_data / "images" / "i1.png", "-k", "-2", "--device", "cpu"],
            "k must be at least 1",
        ),
        (["recommend", tiny_run, "--user", "u0", "-k", "0", "--device", "cpu"], "k must be at least 1"),
    ]
    for argv, needle in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        # progress bars may come first (cleared with \r); the error is one last line
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        assert errors == lines[-1:] and needle in errors[0], (argv, err)
        assert "Traceback" not in err


def test_real_entry_point_exits_2_without_traceback(tiny_run: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dvbpr", "recommend", str(tiny_run), "--user", "ghost", "--device", "cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "error: unknown user 'ghost'"


# --- recommend and evaluate -----------------------------------------------------------------


def recommend_json(capsys, run: Path, user: str, *extra: str) -> dict:
    code, out, _ = run_cli(capsys, "recommend", run, "--user", user, "--json", "--device", "cpu", *extra)
    assert code == 0
    return json.loads(out)


def test_recommend_json_lists_ranked_items(capsys, tiny_run: Path, tiny_rec) -> None:
    result = recommend_json(capsys, tiny_run, "u4", "-k", "5")
    assert result["user"] == "u4" and len(result["items"]) == 5
    ids, scores = tiny_rec.recommend("u4", k=5)
    assert [r["item_id"] for r in result["items"]] == ids
    assert [r["score"] for r in result["items"]] == pytest.approx(scores.tolist())
    seen = recommend_json(capsys, tiny_run, "u4", "-k", "48", "--include-seen")
    assert len(seen["items"]) == 48


def test_precompute_caches_every_users_top_list(
    capsys, tiny_run: Path, tiny_data: Path, tiny_copy, monkeypatch
) -> None:
    import dvbpr.recommender as recommender

    monkeypatch.setattr(recommender, "AUTO_TOP_LIST_SCORES", 0)  # as if the catalogue were large
    run = tiny_copy(tiny_run, "run")
    assert recommender.Recommender.from_run(run, data=tiny_data).top_ids is None  # not at load
    code, out, _ = run_cli(capsys, "precompute", run, "--data", tiny_data)
    assert code == 0 and "top-48 lists of 40 users" in out
    rec = recommender.Recommender.from_run(run, data=tiny_data)  # loaded from the cache
    assert rec.top_ids is not None and rec.top_ids.shape == (40, 48)
    assert rec.recommend("u4", k=5)[0] == rec.recommend_batch(["u4"], k=5, items=rec.items())[0][0]


def test_rank_users_and_similar_json(capsys, tiny_run: Path, tiny_data: Path, tiny_rec) -> None:
    image = tiny_data / "images" / "i6.png"
    code, out, _ = run_cli(capsys, "rank-users", tiny_run, image, "-k", "4", "--json", "--device", "cpu")
    assert code == 0
    users, scores = tiny_rec.rank_users(image, k=4)
    assert [r["user_id"] for r in json.loads(out)["users"]] == users
    for query in (["--item", "i6"], ["--image", str(image)]):
        code, out, _ = run_cli(capsys, "similar", tiny_run, *query, "-k", "3", "--json", "--device", "cpu")
        assert code == 0
        items = json.loads(out)["items"]
        assert len(items) == 3 and [r["similarity"] for r in items] == sorted(
            (r["similarity"] for r in items), reverse=True
        )
    assert "i6" not in [
        r["item_id"]
        for r in json.loads(
            run_cli(capsys, "similar", tiny_run, "--item", "i6", "-k", "47", "--json", "--device", "cpu")[1]
        )["items"]
    ]


def test_evaluate_agrees_with_an_independent_computation_from_rankings(capsys, tiny_run: Path, tiny_data: Path) -> None:
    code, out, _ = run_cli(capsys, "evaluate", tiny_run, "--json", "--device", "cpu")
    assert code == 0
    reported = json.loads(out)["dvbpr"]

    dataset = load_dataset(tiny_data)
    val_ptr, val_idx = dataset.user_items("val")
    test_ptr, test_idx = dataset.user_items("test")
    per_user: dict[str, list[float]] = {"auc": [], "rr": [], "recall@20": [], "ndcg@20": []}
    for u, user in enumerate(dataset.users.ids):
        ranking = recommend_json(capsys, tiny_run, user, "-k", str(dataset.n_items))["items"]
        # recommend drops training items; evaluation on test also drops the validation items
        val = set(dataset.items.to_ids(val_idx[val_ptr[u] : val_ptr[u + 1]]))
        scores = {r["item_id"]: r["score"] for r in ranking if r["item_id"] not in val}
        (target,) = dataset.items.to_ids(test_idx[test_ptr[u] : test_ptr[u + 1]])
        others = np.array([s for i, s in scores.items() if i != target])
        rank = 1 + int((others >= scores[target]).sum())  # ties count against the target
        per_user["auc"].append(float((others < scores[target]).mean()))
        per_user["rr"].append(1 / rank)
        per_user["recall@20"].append(float(rank <= 20))
        per_user["ndcg@20"].append(1 / math.log2(rank + 1) if rank <= 20 else 0.0)
    assert reported["users"] == dataset.n_users
    for key, values in per_user.items():
        assert reported[key] == pytest.approx(np.mean(values), abs=1e-9), key


def test_evaluate_baselines_per_user_csv_and_cutoffs(capsys, tiny_run: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "per_user.csv"
    code, out, err = run_cli(
        capsys, "evaluate", tiny_run, "--json", "--device", "cpu", "--baselines", "--per-user", csv_path, "--k", "5,10"
    )
    assert code == 0
    assert re.search(r"bpr-mf: L2 [0-9.e-]+, epoch \d+ \(validation AUC 0\.\d{4}\)", err)  # tuned, and says how
    table = json.loads(out)
    assert set(table) == {"dvbpr", "popularity", "bpr-mf"}
    for metrics in table.values():
        assert {"auc", "rr", "recall@5", "recall@10", "ndcg@5", "ndcg@10"} <= set(metrics)
        assert not any(k.endswith("@20") or k.endswith("@100") for k in metrics)
        assert 0 <= metrics["auc"] <= 1
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 40 and len({r["user_id"] for r in rows}) == 40
    assert np.mean([float(r["auc"]) for r in rows]) == pytest.approx(table["dvbpr"]["auc"])

    code, out, _ = run_cli(capsys, "evaluate", tiny_run, "--device", "cpu", "--split", "val")
    assert code == 0 and out.splitlines()[0].split()[0] == "model" and "recall@20" in out
