"""New items in the catalogue without retraining (dvbpr/catalogue.py): the dataset folder written
atomically, the image caches extended, and every run on the dataset serving the item at once as a
cold item, with phi computed for it alone and the cached top lists updated, not recomputed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dvbpr.catalogue as catalogue
import dvbpr.images as images
from dvbpr import cli
from dvbpr.catalogue import add_item, remove_item
from dvbpr.checkpoint import load_checkpoint
from dvbpr.data import load_dataset
from dvbpr.errors import DataError, DatasetChangedError, DVBPRError, ImageError, UnknownIdError
from dvbpr.images import ImageStore, load_image
from dvbpr.recommender import Recommender
from tests.helpers import write_csv

RED = (230, 20, 30)  # the red users' colour (conftest: red items are reddish solids)


def png(colour=RED, size=(24, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(colour=RED) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def folder_state(root: Path) -> dict[str, bytes]:
    """Every file of a dataset folder but its caches, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def same_dataset(a, b) -> None:
    assert a.items.ids == b.items.ids and a.users.ids == b.users.ids
    assert a.item_categories == b.item_categories and a.item_titles == b.item_titles
    assert a.image_paths.strings == b.image_paths.strings
    for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.cold_items, b.cold_items)


@pytest.fixture
def data(tiny_data: Path, tiny_copy) -> Path:
    return tiny_copy(tiny_data, "data")


@pytest.fixture
def run(tiny_run: Path, tiny_copy) -> Path:
    return tiny_copy(tiny_run, "run")


# --------------------------------------------------------------------------- the folder
def test_add_item_writes_image_row_and_caches_as_the_loader_reads_them(data: Path, monkeypatch) -> None:
    before = load_dataset(data)
    store = ImageStore.open(before, 32, progress=False)
    old_rows = np.array(store.array)
    grown = add_item(data, png(), item_id="new-red", category="red", title="A red item")
    assert grown.items.ids == before.items.ids + ["new-red"]
    same_dataset(grown, load_dataset(data))  # what add_item returns is what the folder holds
    assert grown.item_titles[-1] == "A red item" and grown.item_categories[-1] == "red"
    assert grown.cold_items[-1] and grown.item_popularity[-1] == 0
    assert (data / "images" / "new-red.png").read_bytes() == png()
    assert (data / "items.csv").read_text().splitlines()[-1] == "new-red,red,A red item"
    # the 32 px cache is extended in place: no image is decoded again
    monkeypatch.setattr(images, "_build", lambda *a, **k: pytest.fail("the cache was rebuilt"))
    extended = ImageStore.open(grown, 32, progress=False)
    np.testing.assert_array_equal(extended.array[:-1], old_rows)
    np.testing.assert_array_equal(extended.array[-1], load_image(png(), 32))
    # the format is kept, the default title is the id, and the default id is the image's hash
    jpeg_item = add_item(grown, jpeg((20, 20, 240)))
    new_id = jpeg_item.items.ids[-1]
    assert new_id.startswith("item-") and jpeg_item.item_titles[-1] == new_id
    assert (data / "images" / f"{new_id}.jpg").read_bytes() == jpeg((20, 20, 240))
    same_dataset(jpeg_item, load_dataset(data))


def test_refusals_leave_the_folder_as_it_was(data: Path) -> None:
    named = add_item(data, png(), item_id="once").items.ids[-1]
    hashed = add_item(data, png((9, 9, 9))).items.ids[-1]
    assert named == "once" and hashed.startswith("item-")
    state = folder_state(data)
    cases = [
        (dict(image=png((1, 2, 3)), item_id="i3"), DataError, "already"),  # a trained item's id
        (dict(image=png((1, 2, 3)), item_id="once"), DataError, "already"),
        (dict(image=png((9, 9, 9))), DataError, "already"),  # the same image again: its hash id is taken
        (dict(image=png((1, 2, 3)), item_id="../escape"), DVBPRError, "invalid item id"),
        (dict(image=png((1, 2, 3)), item_id="a/b"), DVBPRError, "invalid item id"),
        (dict(image=b"just some text", item_id="text"), ImageError, "a text file, not a JPEG, PNG, WebP or GIF"),
        (dict(image=png()[:60], item_id="cut"), ImageError, "cannot read image"),
        (dict(image=png((1, 2, 3)), item_id="x", title="two\nlines"), DataError, "one line"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            add_item(data, **kwargs)
        assert folder_state(data) == state, kwargs
    (data / "images" / "stray.webp").write_bytes(b"left over")  # a file of that name, in no row
    with pytest.raises(DataError, match="stray.webp exists already"):
        add_item(data, png((1, 2, 3)), item_id="stray")
    with pytest.raises(DataError, match="not a dataset folder"):
        add_item(data / "images", png())


def test_a_failed_commit_removes_the_image_again(data: Path, monkeypatch) -> None:
    state = folder_state(data)
    real = catalogue.atomic_write_bytes

    def failing(path, payload):
        if Path(path).name == "items.csv":
            raise OSError(28, "No space left on device")
        return real(path, payload)

    monkeypatch.setattr(catalogue, "atomic_write_bytes", failing)
    with pytest.raises(DataError, match="No space left"):
        add_item(data, png(), item_id="doomed")
    assert folder_state(data) == state
    assert not list((data / "images").glob("doomed*"))


def test_remove_item_undoes_add_item(data: Path, monkeypatch) -> None:
    original = load_dataset(data)
    ImageStore.open(original, 32, progress=False)
    rows = np.array(ImageStore.open(original, 32, progress=False).array)
    add_item(data, png(), item_id="first")
    add_item(data, png((0, 0, 250)), item_id="second")
    monkeypatch.setattr(images, "_build", lambda *a, **k: pytest.fail("the cache was rebuilt"))
    after = remove_item(data, "first")  # not the last one: the rows after it move up
    assert after.items.ids == original.items.ids + ["second"]
    assert not (data / "images" / "first.png").exists() and (data / "images" / "second.png").exists()
    store = ImageStore.open(after, 32, progress=False)
    np.testing.assert_array_equal(store.array[:-1], rows)
    np.testing.assert_array_equal(store.array[-1], load_image(png((0, 0, 250)), 32))
    same_dataset(remove_item(data, "second"), original)
    with pytest.raises(DataError, match=r"has \d+ interaction\(s\) in .*interactions.csv"):
        remove_item(data, "i0")
    with pytest.raises(UnknownIdError, match="unknown item 'nope'"):
        remove_item(data, "nope")


def test_items_named_only_by_interactions_keep_their_indices(tmp_path: Path) -> None:
    """Without items.csv (or with one that lists only some items) the loader puts the others after
    the listed ones: the new item must come after all of them, so every old index stays."""
    root = tmp_path / "data"
    write_csv(root / "interactions.csv", [{"user_id": f"u{k % 3}", "item_id": f"i{k}"} for k in range(9)])
    (root / "images").mkdir()
    for k in range(9):
        Image.new("RGB", (8, 8), (k * 20, 0, 0)).save(root / "images" / f"i{k}.png")
    before = load_dataset(root)
    grown = add_item(root, png(), item_id="new", category="shoes")
    assert grown.items.ids == before.items.ids + ["new"]
    same_dataset(grown, load_dataset(root))
    write_csv(root / "items.csv", [{"item_id": "i4", "title": "Listed"}])  # i4 first, the rest after
    before = load_dataset(root)
    grown = add_item(root, png((0, 250, 0)), item_id="newer", title="Newer")
    assert grown.items.ids == before.items.ids + ["newer"]
    assert grown.item_titles[:1] == ["Listed"] and grown.item_titles[-1] == "Newer"
    same_dataset(grown, load_dataset(root))


# -------------------------------------------------------------------------------- runs
def test_runs_serve_an_added_item_as_a_cold_item_at_once(run: Path, data: Path) -> None:
    before = Recommender.from_run(run, data=data, device="cpu")
    add_item(data, png(), item_id="red-new")
    grown = Recommender.from_run(run, data=data, device="cpu")
    assert grown.items() == before.items() + ["red-new"]
    torch.testing.assert_close(grown.phi[:-1], before.phi)
    cold = grown.user_scores_for_image(data / "images" / "red-new.png")
    np.testing.assert_allclose(grown.scores(np.arange(40))[:, -1].numpy(), cold, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grown.scores(np.arange(40))[:, :-1].numpy(), before.scores(np.arange(40)).numpy())
    # the incrementally updated lists are the exact ranking of the grown catalogue
    exact = Recommender.from_run(run, data=data, device="cpu", top_lists=False)
    shown = {"red": 0, "blue": 0}
    for user in grown.users():
        ids, scores = grown.recommend(user, k=20)
        exact_ids, exact_scores = exact.recommend(user, k=20)
        assert ids == exact_ids, user
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-6)
        shown["red" if int(user[1:]) % 2 == 0 else "blue"] += "red-new" in ids
    assert shown["red"] + shown["blue"] > 0


def test_phi_of_the_new_item_only_and_the_lists_inserted_not_recomputed(run: Path, data: Path, monkeypatch) -> None:
    Recommender.from_run(run, data=data, device="cpu")  # caches phi and the lists
    add_item(data, png(), item_id="red-new")
    embedded = []
    real_embed = Recommender.__init__.__globals__["embed_items"]

    def counting(model, images_, n_items, **kwargs):
        embedded.append(n_items)
        return real_embed(model, images_, n_items, **kwargs)

    monkeypatch.setitem(Recommender.__init__.__globals__, "embed_items", counting)
    monkeypatch.setattr(Recommender, "precompute_top_lists", lambda *a, **k: pytest.fail("lists recomputed"))
    rec = Recommender.from_run(run, data=data, device="cpu")
    assert embedded == [1] and rec.top_ids.shape == (40, 49)
    # the grown caches are written: the next load computes nothing
    embedded.clear()
    again = Recommender.from_run(run, data=data, device="cpu")
    assert embedded == [] and np.array_equal(again.top_ids, rec.top_ids)
    assert sorted(p.name.split("_")[0] for p in (run / "cache").glob("*.npy")) == ["phi", "topids", "topscores"]


def test_recommender_add_item_serves_it_in_process(run: Path, data: Path) -> None:
    rec = Recommender.from_run(run, data=data, device="cpu")
    twentieth = {u: rec.recommend(u, k=20)[1][-1] for u in rec.users()}
    item = rec.add_item(png(), item_id="live", category="red", title="Live")
    assert item == "live" and rec.items()[-1] == "live" and rec.dataset.cold_items[-1]
    # shown to exactly the users who score it above their 20th item
    score = rec.scores(np.arange(40))[:, -1].numpy()
    fans = {u for u, s in zip(rec.users(), score, strict=True) if s > twentieth[u]}
    assert fans and fans == {u for u in rec.users() if "live" in rec.recommend(u, k=20)[0]}
    reloaded = Recommender.from_run(run, data=data, device="cpu")
    torch.testing.assert_close(rec.phi, reloaded.phi)
    np.testing.assert_array_equal(rec.top_ids, reloaded.top_ids)
    torch.testing.assert_close(rec.scores(np.arange(40)), reloaded.scores(np.arange(40)))
    assert rec.explain("u0", item="live").heatmap.shape == (32, 32)  # its pixels are in the store
    add_item(data, png((0, 0, 250)), item_id="elsewhere")  # by another writer: served too
    rec.add_item(png((250, 250, 0)), item_id="later")
    assert rec.items()[-3:] == ["live", "elsewhere", "later"]
    np.testing.assert_array_equal(rec.top_ids, Recommender.from_run(run, data=data, device="cpu").top_ids)
    remove_item(data, "live")  # another writer removed one: the indices this one serves are stale
    with pytest.raises(DatasetChangedError, match="load the run again"):
        rec.add_item(png((250, 0, 250)), item_id="last")
    assert "last" in load_dataset(data).items  # added on disk all the same


def test_compatibility_accepts_only_items_added_after_the_models(run: Path, data: Path) -> None:
    interactions = (data / "interactions.csv").read_text()
    add_item(data, png(), item_id="fine")
    Recommender.from_run(run, data=data, device="cpu")
    (data / "interactions.csv").write_text(interactions + "u3,fine,1800000000\n")  # bought: not an added item
    with pytest.raises(DatasetChangedError, match="have interactions"):
        Recommender.from_run(run, data=data, device="cpu")
    (data / "interactions.csv").write_text(interactions)
    header, *rows = (data / "items.csv").read_text().splitlines()
    (data / "items.csv").write_text("\n".join([header, rows[-1], *rows[:-1]]) + "\n")  # first, not last
    with pytest.raises(DatasetChangedError, match="items differ"):
        Recommender.from_run(run, data=data, device="cpu")


def test_fine_tuning_picks_the_added_items_up(run: Path, data: Path, tmp_path: Path, tiny_train_kwargs) -> None:
    from dvbpr.config import TrainConfig
    from dvbpr.train import train

    add_item(data, png(), item_id="added")
    out = tmp_path / "tuned"
    kwargs = dict(tiny_train_kwargs, epochs=1)
    status = train(TrainConfig(data=str(data), out=str(out), init_from=str(run), **kwargs), progress=False)
    assert status["state"] == "finished"
    assert load_checkpoint(out / "best.pt")["item_ids"][-1] == "added"
    assert Recommender.from_run(out, device="cpu").items()[-1] == "added"


# --------------------------------------------------------------------------------- CLI
def test_cli_add_and_remove_item(capsys, data: Path, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(png())
    code = cli.main(["add-item", str(data), str(image), "--id", "cli-item", "--category", "red", "--title", "T"])
    out, err = capsys.readouterr()
    assert code == 0 and "added cli-item" in out and "49 items" in out, err
    assert load_dataset(data).items.ids[-1] == "cli-item"
    code = cli.main(["add-item", str(data), str(image), "--id", "cli-item"])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and "already" in err and err.count("\n") == 1
    code = cli.main(["remove-item", str(data), "cli-item"])
    out, err = capsys.readouterr()
    assert code == 0 and "removed cli-item" in out and "48 items" in out
    assert not (data / "images" / "cli-item.png").exists()
    code = cli.main(["remove-item", str(data), "i0"])
    assert code == 2 and "interaction" in capsys.readouterr().err
