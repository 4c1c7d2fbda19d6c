"""A clone works anywhere: run folders record no absolute path, find their dataset in the
documented order (dvbpr.rundir), and the shipped model gives the same results from a copy of the
repository at another path, run from another working folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dvbpr import cli
from dvbpr.checkpoint import load_checkpoint
from dvbpr.config import TrainConfig
from dvbpr.errors import DataError
from dvbpr.recommender import Recommender
from dvbpr.rundir import REPO_ROOT, relative_to_run
from dvbpr.synth import DEFAULT_DATA_DIR, ensure_default_dataset
from dvbpr.train import train

DEFAULT_RUN = REPO_ROOT / "models" / "default"
# This checkout's and this user's folders, and the usual homes of checkouts on other machines.
MACHINE_PATH = re.compile(
    "|".join(re.escape(p) for p in {str(REPO_ROOT), str(Path.home()) + "/", "/work/", "/home/", "/Users/"})
)


def _strings(obj: object):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _strings(value)


def _absolute(strings) -> list[str]:
    return [s for s in strings if os.path.isabs(s) or re.match(r"^[A-Za-z]:[\\/]", s)]


def _tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    )
    return [REPO_ROOT / name for name in out.stdout.decode().split("\0") if name]


def test_no_tracked_file_and_nothing_in_the_default_model_holds_an_absolute_path() -> None:
    offenders = []
    for path in _tracked_files():
        if not path.is_file() or path.suffix in {".png", ".pt", ".jpg"}:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        offenders += [
            f"{path.relative_to(REPO_ROOT)}: {m.group(0)}"
            for m in MACHINE_PATH.finditer(text)
            if path.name != Path(__file__).name
        ]
    assert not offenders
    for name in ("config.json", "status.json"):
        recorded = json.loads((DEFAULT_RUN / name).read_text())
        assert not _absolute(_strings(recorded)), name
    ckpt = load_checkpoint(DEFAULT_RUN / "best.pt")
    stored = {k: ckpt[k] for k in ("train_config", "model_config", "metrics")}
    assert not _absolute(_strings(stored))
    assert ckpt["train_config"]["data"] == "../../data/default"


def test_a_new_run_records_its_dataset_relative_to_itself(
    tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "runs" / "r1"
    assert (
        train(TrainConfig(data=str(tiny_data), out=str(run), **dict(tiny_train_kwargs, epochs=1)), progress=False)[
            "state"
        ]
        == "finished"
    )
    expected = relative_to_run(tiny_data, run)
    assert not os.path.isabs(expected) and expected.endswith("/data")
    for recorded in (
        json.loads((run / "config.json").read_text()),
        json.loads((run / "status.json").read_text()),
        load_checkpoint(run / "best.pt")["train_config"],
    ):
        assert recorded["data"] == expected
        assert not _absolute(_strings(recorded))


def _layout(base: Path, tiny_run: Path, tiny_data: Path) -> tuple[Path, Path]:
    """The tiny run and its data copied to `base`, keeping their relative places."""
    run, data = base / "runs" / "base", base / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns(".cache"))
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(".lock", "cache"))
    return run, data


def test_a_run_moved_together_with_its_dataset_still_works(
    tiny_run: Path, tiny_data: Path, tiny_rec, tmp_path: Path
) -> None:
    run, data = _layout(tmp_path / "moved", tiny_run, tiny_data)
    rec = Recommender.from_run(run, device="cpu")
    assert rec.dataset.root.resolve() == data.resolve()
    assert rec.recommend("u3", k=5)[0] == tiny_rec.recommend("u3", k=5)[0]


def test_the_dataset_is_found_by_name_under_the_data_root_and_else_a_clear_error(
    tiny_run: Path, tiny_data: Path, tmp_path: Path, monkeypatch
) -> None:
    run, data = _layout(tmp_path / "a", tiny_run, tiny_data)
    lonely = tmp_path / "elsewhere" / "base"
    shutil.move(run, lonely)  # the relative path no longer reaches the data
    monkeypatch.setenv("DVBPR_DATA_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"cannot find the dataset.*tried: .*nowhere.*--data") as err:
        Recommender.from_run(lonely, device="cpu")
    assert str(tmp_path / "data") in str(err.value)  # the relative candidate (../../data from the run) was tried
    monkeypatch.setenv("DVBPR_DATA_ROOT", str(data.parent))  # the data root holds a folder "data"
    assert Recommender.from_run(lonely, device="cpu").dataset.root.resolve() == data.resolve()


def test_every_run_command_takes_data(tiny_run: Path, tiny_data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    lonely = tmp_path / "lonely" / "deeper" / "run"
    shutil.copytree(tiny_run, lonely, ignore=shutil.ignore_patterns(".lock", "cache"))
    monkeypatch.setenv("DVBPR_DATA_ROOT", str(tmp_path / "nowhere"))
    image = str(tiny_data / "images" / "i6.png")
    commands = [
        ["recommend", "--user", "u1", "--json"],
        ["evaluate", "--json"],
        ["rank-users", image, "--json"],
        ["similar", "--item", "i6", "--json"],
        ["precompute"],
    ]
    for command in commands:
        assert cli.main([command[0], str(lonely), "--device", "cpu", *command[1:]]) == 2
        assert "--data" in capsys.readouterr().err
        assert cli.main([command[0], str(lonely), "--device", "cpu", "--data", str(tiny_data), *command[1:]]) == 0
        capsys.readouterr()
    # resume too: the dataset is given again when the run cannot find it
    assert cli.main(["train", "--out", str(lonely), "--resume", "--epochs", "4", "--data", str(tiny_data)]) == 0


def _json_of(cmd: list[str], cwd: Path, env: dict) -> dict:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A copy of the repository's tracked files (as `git clone` of this working tree would give)
    at another path; it reuses the generated default dataset through a link."""
    ensure_default_dataset(progress=False)
    target = tmp_path_factory.mktemp("another-place") / "dvbpr-clone"
    for path in _tracked_files():
        if path.is_file():
            dest = target / path.relative_to(REPO_ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    (target / "data").mkdir(exist_ok=True)
    (target / "data" / "default").symlink_to(DEFAULT_DATA_DIR, target_is_directory=True)
    return target


def test_the_shipped_model_gives_the_same_results_from_a_clone_elsewhere(clone: Path, tmp_path: Path) -> None:
    assert clone.resolve() != REPO_ROOT
    elsewhere = tmp_path / "some-working-folder"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(clone), OMP_NUM_THREADS="1")  # the clone's package, not ours
    env.pop("DVBPR_DATA_ROOT", None)
    here = dict(os.environ, OMP_NUM_THREADS="1")
    run = str(clone / "models" / "default")
    where = _json_of([sys.executable, "-c", "import dvbpr, json; print(json.dumps(dvbpr.__file__))"], elsewhere, env)
    assert Path(where).resolve().is_relative_to(clone)

    recommend = ["-m", "dvbpr", "recommend", "--user", "u0001", "-k", "20", "--json", "--device", "cpu"]
    there = _json_of([sys.executable, *recommend[:3], run, *recommend[3:]], elsewhere, env)
    ours = _json_of([sys.executable, *recommend[:3], str(DEFAULT_RUN), *recommend[3:]], REPO_ROOT, here)
    our_ids = [i["item_id"] for i in ours["items"]]
    assert [i["item_id"] for i in there["items"]] == our_ids
    assert [i["score"] for i in there["items"]] == pytest.approx([i["score"] for i in ours["items"]], abs=1e-5)

    evaluate = ["-m", "dvbpr", "evaluate", "--json", "--device", "cpu"]
    there = _json_of([sys.executable, *evaluate[:3], run, *evaluate[3:]], elsewhere, env)
    ours = _json_of([sys.executable, *evaluate[:3], str(DEFAULT_RUN), *evaluate[3:]], REPO_ROOT, here)
    assert there["dvbpr"] == pytest.approx(ours["dvbpr"], abs=1e-6, nan_ok=True)

    api = (
        "import json; from dvbpr import Recommender; rec = Recommender.from_run('dvbpr-clone/models/default'); "
        "ids, scores = rec.recommend('u0001', k=20); print(json.dumps(ids))"
    )
    ids = _json_of([sys.executable, "-c", api], clone.parent, env)
    assert ids == our_ids
