"""Issue 13, datasets: a malformed dataset folder is refused by every entry point (`dvbpr info`,
`dvbpr train`, the Data page's import) with a message naming file, row and field, and nothing is
left half-written: no dataset folder, no image cache a later load would trust, no run folder
claiming success. A corrupt image inside an otherwise good dataset stops training before its
first epoch, naming the file.

Each case in CASES is a good tiny dataset with one thing broken; the three entry points are run
on every case (the CLI in-process for all, as a subprocess for a few).
"""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dvbpr import cli, images
from dvbpr.config import TrainConfig
from dvbpr.data import load_dataset
from dvbpr.errors import DVBPRError, ImageError
from dvbpr.images import ImageStore, load_image
from dvbpr.importers import import_folder
from dvbpr.rundir import REPO_ROOT, read_status
from dvbpr.train import train
from tests.apptest import APP
from tests.helpers import item_colour, make_tiny_dataset, write_image

TRAIN = dict(arch="cnnf-small", image_size=32, dim=8, cf_dim=8, epochs=1, batch_size=16, device="cpu")


def good_dataset(root: Path) -> Path:
    """6 users x 4 rows (row 2 = u0,i0 ... each user's rows train, train, val, test) over 8
    items with images; items.csv rows 2.. are i0, i1, ..."""
    return make_tiny_dataset(root, n_users=6, n_items=8, per_user=4, timestamps=True, split_column=True)


def set_cell(path: Path, row: int, column: str, value: str) -> None:
    """Set one cell of a CSV file (row as a spreadsheet numbers it: the header is row 1)."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[row - 1][rows[0].index(column)] = value
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def image_column(root: Path, i1: str) -> None:
    """items.csv with an `image` column: images/<id>.png, except `i1` for item i1 (row 3)."""
    path = root / "items.csv"
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[0].append("image")
    for row in rows[1:]:
        row.append(i1 if row[0] == "i1" else f"images/{row[0]}.png")
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def replace_header(root: Path, old: str, new: str) -> None:
    path = root / "interactions.csv"
    head, rest = path.read_text().split("\n", 1)
    path.write_text(head.replace(old, new) + "\n" + rest)


def link_images_folder(root: Path, outside: Path) -> None:
    (root / "images").rename(outside / "images")
    (root / "images").symlink_to(outside / "images", target_is_directory=True)


def link_cell_folder(root: Path, outside: Path) -> None:
    (root / "pics").symlink_to(outside, target_is_directory=True)
    image_column(root, "pics/x.png")


@dataclass
class Case:
    name: str
    # breaks a good dataset folder; gets the folder and an outside folder holding x.png
    breaks: Callable[[Path, Path], None]
    expected: Callable[[Path, Path], list[str]]  # what the message names, from the same two


def names(*parts: str) -> Callable[[Path, Path], list[str]]:
    return lambda root, outside: list(parts)


CASES = [
    Case(
        "no user_id column", lambda r, o: replace_header(r, "user_id", "user"), names("interactions.csv", "'user_id'")
    ),
    Case(
        "no item_id column", lambda r, o: replace_header(r, "item_id", "item"), names("interactions.csv", "'item_id'")
    ),
    Case(
        "header only",
        lambda r, o: (r / "interactions.csv").write_text("user_id,item_id,timestamp,split\n"),
        names("interactions.csv", "no data rows"),
    ),
    Case(
        "zero bytes", lambda r, o: (r / "interactions.csv").write_bytes(b""), names("interactions.csv", "no data rows")
    ),
    Case(
        "binary junk",
        lambda r, o: (r / "interactions.csv").write_bytes(np.random.default_rng(0).bytes(4096)),
        names("interactions.csv", "binary data", "line"),
    ),
    Case(
        "a gzip file named .csv",
        lambda r, o: (r / "interactions.csv").write_bytes(gzip.compress((r / "interactions.csv").read_bytes())),
        names("interactions.csv", "binary data", "line 1"),
    ),
    Case(
        "latin-1 text",
        lambda r, o: (r / "interactions.csv").write_bytes(b"user_id,item_id\nu0,i0\nJos\xe9,i1\n"),
        names("interactions.csv", "not UTF-8", "byte 0xe9 on line 3"),
    ),
    Case(
        "split value other than train/val/test",
        lambda r, o: set_cell(r / "interactions.csv", 4, "split", "holdout"),
        names("interactions.csv", "field 'split'", "row 4", "'holdout'"),
    ),
    Case(
        "non-numeric timestamp",
        lambda r, o: set_cell(r / "interactions.csv", 5, "timestamp", "soon"),
        names("interactions.csv", "field 'timestamp'", "1 row(s): row 5", "'soon'"),
    ),
    Case(
        "blank user_id",
        lambda r, o: set_cell(r / "interactions.csv", 3, "user_id", "  "),
        names("interactions.csv", "field 'user_id'", "row 3"),
    ),
    Case(
        "blank item_id",
        lambda r, o: set_cell(r / "interactions.csv", 6, "item_id", ""),
        names("interactions.csv", "field 'item_id'", "row 6"),
    ),
    Case(
        "blank item_id in items.csv",
        lambda r, o: set_cell(r / "items.csv", 3, "item_id", ""),
        names("items.csv", "field 'item_id'", "row 3"),
    ),
    Case(
        "first row with more fields than the header",
        lambda r, o: (r / "interactions.csv").write_text("user_id,item_id\nu0,i0,x\nu0,i1\n"),
        names("interactions.csv", "row 2", "more fields than the header"),
    ),
    Case(
        "a later row with more fields",
        lambda r, o: (r / "interactions.csv").write_text("user_id,item_id\nu0,i0\nu0,i1\nu0,i2,x\n"),
        names("interactions.csv", "line 4"),
    ),
    Case(
        "user_id column twice",
        lambda r, o: (r / "interactions.csv").write_text("user_id,item_id,User_ID\nu0,i0,u1\nu0,i1,u1\n"),
        names("interactions.csv", "row 1", "'user_id'"),
    ),
    Case(
        "missing image file",
        lambda r, o: (r / "images" / "i2.png").unlink(),
        names("'i2'", "images/i2.png", "interactions.csv rows 4, 7, 10"),
    ),
    Case(
        "missing image named in items.csv",
        lambda r, o: image_column(r, "pics/none.png"),
        names("'i1'", "pics/none.png (items.csv row 3, field 'image')"),
    ),
    Case(
        "image path ../..",
        lambda r, o: image_column(r, "../../x.png"),
        names("items.csv", "field 'image'", "row 3", "'../../x.png'"),
    ),
    Case(
        "absolute image path",
        lambda r, o: image_column(r, str(o / "x.png")),
        lambda r, o: ["items.csv", "field 'image'", "row 3", repr(str(o / "x.png"))],
    ),
    Case(
        "image file a symlink outside",
        lambda r, o: ((r / "images" / "i1.png").unlink(), (r / "images" / "i1.png").symlink_to(o / "x.png")),
        lambda r, o: ["'i1'", f"images/i1.png -> {os.path.realpath(o / 'x.png')}", "symbolic link"],
    ),
    Case(
        "image cell through a symlinked folder outside",
        link_cell_folder,
        lambda r, o: ["'i1'", "pics/x.png (items.csv row 3, field 'image') ->", os.path.realpath(o / "x.png")],
    ),
    Case(
        "images/ a symlink outside",
        link_images_folder,
        lambda r, o: ["8 item image(s) lead outside", f"images/i0.png -> {os.path.realpath(o / 'images' / 'i0.png')}"],
    ),
]
IDS = [c.name for c in CASES]


def broken(base: Path, case: Case) -> tuple[Path, list[str]]:
    """A dataset folder broken as `case` says, and what its error must name."""
    outside = base / "outside"
    outside.mkdir(parents=True)
    write_image(outside / "x.png", (10, 20, 30))
    root = good_dataset(base / "ds")
    case.breaks(root, outside)
    return root, case.expected(root, outside)


def assert_names(message: str, expected: list[str]) -> None:
    flat = " ".join(message.split())  # the Data page joins lines with markdown breaks
    for part in expected:
        assert " ".join(part.split()) in flat, f"{part!r} not in {message!r}"
    assert "Traceback" not in message


def assert_no_image_cache(root: Path) -> None:
    """Nothing under .cache that ImageStore.open would use: no sidecar, no pixels, no temp file."""
    cache = root / ".cache"
    assert not cache.exists() or not list(cache.glob("images_*")) and not list(cache.glob(".images_*"))


def test_the_good_dataset_loads(tmp_path: Path) -> None:
    """The cases break a dataset that is itself fine (so each refusal is due to its one break)."""
    ds = load_dataset(good_dataset(tmp_path / "ds"))
    assert (ds.n_users, ds.n_items, len(ds.train), len(ds.val), len(ds.test)) == (6, 8, 12, 6, 6)


# --- dvbpr info -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_info_refuses(case: Case, tmp_path: Path, capsys) -> None:
    root, expected = broken(tmp_path, case)
    assert cli.main(["info", str(root)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ")
    assert_names(err, expected)
    assert_no_image_cache(root)


# --- dvbpr train (the Python API; the CLI below) ------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_train_refuses_before_anything_is_trained(case: Case, tmp_path: Path) -> None:
    root, expected = broken(tmp_path, case)
    run = tmp_path / "run"
    with pytest.raises(DVBPRError) as exc:
        train(TrainConfig(data=str(root), out=str(run), **TRAIN), progress=False)
    assert_names(str(exc.value), expected)
    status = read_status(run)
    assert status["state"] == "failed" and status["message"] == str(exc.value)
    assert not list(run.glob("*.pt")) and not (run / "metrics.jsonl").is_file()
    assert_no_image_cache(root)


# --- a corrupt image inside a good dataset ----------------------------------------------------


def corrupt(root: Path) -> list[Path]:
    """Two unreadable images: a truncated PNG and a text file named .png."""
    truncated, text = root / "images" / "i1.png", root / "images" / "i5.png"
    truncated.write_bytes(truncated.read_bytes()[:40])
    text.write_text("not an image\n")
    return [truncated, text]


def test_corrupt_images_stop_training_before_the_first_epoch_naming_the_files(tmp_path: Path) -> None:
    root = good_dataset(tmp_path / "ds")
    ImageStore.open(load_dataset(root), TRAIN["image_size"], progress=False)  # a cache trusted until now
    bad = corrupt(root)
    assert load_dataset(root).n_items == 8  # the folder itself is fine: info does not decode images
    run = tmp_path / "run"
    with pytest.raises(ImageError) as exc:
        train(TrainConfig(data=str(root), out=str(run), **TRAIN), progress=False)
    message = str(exc.value)
    assert "2 of 8 images cannot be read" in message
    assert_names(message, ["item 'i1'", str(bad[0]), "item 'i5'", str(bad[1]), "a text file"])
    status = read_status(run)
    assert status["state"] == "failed" and "2 of 8 images" in status["message"]
    assert not list(run.glob("*.pt")) and not (run / "metrics.jsonl").is_file()  # no epoch ran
    # The cache built before is no longer vouched for: a later load decodes again and refuses too.
    assert not list((root / ".cache").glob("images_*.json")) and not list((root / ".cache").glob(".images_*"))
    with pytest.raises(ImageError, match="2 of 8 images"):
        ImageStore.open(load_dataset(root), TRAIN["image_size"], progress=False)
    # Fixed, the dataset trains again from freshly decoded pixels.
    write_image(bad[0], item_colour(1))
    write_image(bad[1], item_colour(5))
    store = ImageStore.open(load_dataset(root), TRAIN["image_size"], progress=False)
    assert np.array_equal(store.array[1], load_image(bad[0], TRAIN["image_size"]))


def test_cli_subprocesses_refuse_with_one_message(tmp_path: Path) -> None:
    """`python -m dvbpr info` on a bad split value and `train` on a corrupt image, run side by
    side (each starts torch): exit status 2 and one error, no traceback."""
    case = next(c for c in CASES if c.name == "split value other than train/val/test")
    bad_split, expected = broken(tmp_path / "a", case)
    with_corrupt = good_dataset(tmp_path / "b" / "ds")
    bad = corrupt(with_corrupt)
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    commands = [
        ["info", str(bad_split)],
        ["train", "--data", str(with_corrupt), "--out", str(run), "--arch", "cnnf-small", "--epochs", "1"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dvbpr", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for argv in commands
    ]
    (info_out, info_err), (_, train_err) = (p.communicate(timeout=300) for p in procs)
    assert [p.returncode for p in procs] == [2, 2], (info_err, train_err[-2000:])
    assert info_out == "" and info_err.startswith("error: ")
    assert "\nerror: " in "\n" + train_err  # after the progress bars training writes to stderr
    assert_names(info_err, expected)
    assert_names(train_err, ["2 of 8 images cannot be read", str(bad[0]), str(bad[1])])
    assert read_status(run)["state"] == "failed" and not list(run.glob("*.pt"))
    assert_no_image_cache(with_corrupt)


def _die(chunk: range, task: object = None) -> list:
    os._exit(3)  # a decoder crash (or the OOM killer) in a worker process


def test_a_dying_decoder_process_is_an_error_and_leaves_no_cache(tmp_path: Path, monkeypatch) -> None:
    root = good_dataset(tmp_path / "ds")
    monkeypatch.setattr(images, "_decode_chunk", _die)  # workers are forked: they see it too
    with pytest.raises(ImageError, match="died"):
        ImageStore.open(load_dataset(root), 32, progress=False, workers=2)
    assert_no_image_cache(root)


# --- importing a dataset folder ---------------------------------------------------------------


def test_import_folder_refuses_links_leaving_the_folder_before_writing(tmp_path: Path) -> None:
    source = good_dataset(tmp_path / "ds")
    (tmp_path / "secret.txt").write_text("not for the copy")
    (source / "notes.txt").symlink_to(tmp_path / "secret.txt")  # not an image: load_dataset allows it
    load_dataset(source)
    with pytest.raises(DVBPRError) as exc:
        import_folder(source, tmp_path / "data" / "copy")
    assert_names(str(exc.value), ["notes.txt ->", str(tmp_path / "secret.txt")])
    assert not (tmp_path / "data").exists()
    with pytest.raises(DVBPRError, match="a folder inside it"):
        import_folder(source, source / "copy")
    assert not (source / "copy").exists()
    # A relative link inside the folder stays a link to the copy's own file.
    (source / "notes.txt").unlink()
    (source / "notes.txt").symlink_to("items.csv")
    (source / ".cache").mkdir()
    (source / ".cache" / "images_32.u8").write_bytes(b"stale")
    out = import_folder(source, tmp_path / "data" / "copy")
    assert os.readlink(out / "notes.txt") == "items.csv" and not (out / ".cache").exists()
    assert load_dataset(out).n_items == 8
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["copy"]  # no staging folder left


def test_cli_import_folder_copies_a_good_folder_and_refuses_a_bad_one(tmp_path: Path, capsys) -> None:
    source = good_dataset(tmp_path / "ds")
    assert cli.main(["import", "folder", str(source), "--out", str(tmp_path / "data" / "copy")]) == 0
    assert "items: 8" in capsys.readouterr().out
    assert load_dataset(tmp_path / "data" / "copy").n_items == 8
    (source / "interactions.csv").write_text("user_id\nu1\n")
    assert cli.main(["import", "folder", str(source), "--out", str(tmp_path / "data" / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "interactions.csv" in err and "item_id" in err
    assert not (tmp_path / "data" / "bad").exists()


# --- the Data page's import ------------------------------------------------------------------


@pytest.fixture
def data_page(tmp_path: Path, monkeypatch) -> tuple[AppTest, Path]:
    data_root, models_root = tmp_path / "data", tmp_path / "models"
    good_dataset(data_root / "default")  # present: the app does not generate the default dataset
    models_root.mkdir()
    monkeypatch.setenv("DVBPR_DATA_ROOT", str(data_root))
    monkeypatch.setenv("DVBPR_MODELS_ROOT", str(models_root))
    monkeypatch.delenv("DVBPR_PUBLIC", raising=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/data.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at, data_root


def _submit(at: AppTest, tab: int, values: dict[str, str]) -> str:
    """Fill one import tab's text inputs, submit, and return the errors shown."""
    for key, value in values.items():
        at.text_input(key=key).set_value(value)
    at.tabs[tab].button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    return "\n".join(e.value for e in at.error)


def _left_over(data_root: Path) -> list[str]:
    return sorted(p.name for p in data_root.iterdir() if p.name != "default")


def test_data_page_import_refuses_every_case(data_page, tmp_path: Path) -> None:
    at, data_root = data_page
    for k, case in enumerate(CASES):
        source, expected = broken(tmp_path / f"case{k}", case)
        shown = _submit(at, 0, {"imp_src": str(source), "imp_name": f"case{k}"})
        assert shown.startswith("Cannot import: "), (case.name, shown)
        assert_names(shown, expected)
        assert _left_over(data_root) == [], case.name  # no dataset folder, no staging folder
    # A good folder is imported, so the form itself works. One with a corrupt image is too (its
    # images are decoded by training, which refuses it), and the page shows it without a traceback.
    source = good_dataset(tmp_path / "good")
    corrupt(source)
    _submit(at, 0, {"imp_src": str(source), "imp_name": "good"})
    assert any("Imported **good**" in s.value for s in at.success)
    assert _left_over(data_root) == ["good"]
    at.run()  # the dataset list is read before the form: it shows the new one on the next run
    at.selectbox(key="dt_pick").set_value("good").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert at.metric[1].value == "8"  # its items


def test_data_page_visrec_and_kang_imports_refuse_bad_files(data_page, tmp_path: Path) -> None:
    at, data_root = data_page
    folder = tmp_path / "imgs"
    for j in range(3):
        write_image(folder / f"i{j}.jpg", item_colour(j))
    visrec = {
        "header only": ("user_id,item_id,timestamp,evaluation\n", ["wiki.csv", "no data rows"]),
        "zero bytes": ("", ["wiki.csv", "is empty"]),
        "blank item_id": ("user_id,item_id\nu0,i0\nu0, \n", ["wiki.csv", "field 'item_id'", "row 3"]),
        "non-numeric timestamp": (
            "user_id,item_id,timestamp,evaluation\nu0,i0,1,false\nu0,i1,x,false\nu0,i2,3,true\n",
            ["wiki.csv", "field 'timestamp'", "row 3", "'x'"],
        ),
        "missing image": ("user_id,item_id\nu0,i0\nu0,i9\n", ["i9", str(folder)]),
    }
    for name, (text, expected) in visrec.items():
        csv_path = tmp_path / name.replace(" ", "-") / "wiki.csv"
        csv_path.parent.mkdir()
        csv_path.write_text(text)
        shown = _submit(at, 2, {"imp_csv": str(csv_path), "imp_imgs": str(folder), "imp_visrec_name": "v"})
        assert shown.startswith("Cannot import: ") and ".importing-" not in shown, (name, shown)
        assert_names(shown, expected)
        assert _left_over(data_root) == [], name
    for name, data in {"zero bytes": b"", "junk": np.random.default_rng(1).bytes(3000)}.items():
        npy = tmp_path / f"{name}.npy"
        npy.write_bytes(data)
        at.checkbox(key="imp_trust").check()
        shown = _submit(at, 1, {"imp_npy": str(npy), "imp_npy_name": "k"})
        assert shown.startswith("Cannot import: ") and str(npy) in shown, (name, shown)
        assert _left_over(data_root) == [], name
