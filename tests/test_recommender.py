"""The id-space Recommender API over the shared tiny run."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dvbpr.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from dvbpr.errors import CheckpointError, ImageError, UnknownIdError
from dvbpr.images import load_image, to_model_input
from dvbpr.recommender import Recommender


def test_from_run_loads_ids_in_dataset_order(tiny_rec: Recommender) -> None:
    assert tiny_rec.users() == [f"u{k}" for k in range(40)]
    assert tiny_rec.items() == [f"i{k}" for k in range(48)]
    assert tiny_rec.item_embeddings().shape == (48, 8)
    assert len(tiny_rec.user_history("u0")) == 3 and len(tiny_rec.held_out("u0", "test")) == 1


def test_recommend_excludes_history_and_round_trips_ids_and_scores(tiny_rec: Recommender) -> None:
    for user in ("u0", "u1", "u17"):
        ids, scores = tiny_rec.recommend(user, k=10)
        assert len(ids) == 10 and set(ids) <= set(tiny_rec.items())
        assert not set(ids) & set(tiny_rec.user_history(user))
        assert np.all(np.diff(scores) <= 0)
        row = tiny_rec.scores([tiny_rec.dataset.users.index(user)])[0].numpy()
        # the precomputed lists come from a batched product: equal up to float rounding
        np.testing.assert_allclose(scores, row[tiny_rec.dataset.items.indices(ids)], rtol=1e-6, atol=1e-7)
        # nothing outside the list (and not seen) scores higher than its last item
        rest = set(tiny_rec.items()) - set(ids) - set(tiny_rec.user_history(user))
        assert row[tiny_rec.dataset.items.indices(sorted(rest))].max() <= scores[-1] + 1e-6


def test_precomputed_top_lists_equal_the_exact_scan(tiny_run: Path, tiny_data: Path, tiny_copy) -> None:
    run = tiny_copy(tiny_run, "run")
    rec = Recommender.from_run(run, data=tiny_data, device="cpu")  # small: lists computed at load
    assert rec.top_ids is not None and rec.top_ids.shape == (40, 48)  # K capped at the catalogue
    lists = sorted(p.name.split("_")[0] for p in (run / "cache").glob("top*.npy"))
    assert lists == ["topids", "topscores"]
    scan = Recommender.from_run(run, data=tiny_data, device="cpu", top_lists=False)
    assert scan.top_ids is None
    for user in scan.users():
        for k in (1, 5, 45, 48):
            ids, scores = rec.recommend(user, k=k)
            exact_ids, exact_scores = scan.recommend(user, k=k)
            assert ids == exact_ids
            np.testing.assert_allclose(scores, exact_scores, rtol=1e-6, atol=1e-7)
    # the lists on disk are the ones used: doctor them and see them come back
    (ids_file,) = (run / "cache").glob("topids_*.npy")
    doctored = np.load(ids_file)
    doctored[0, :2] = doctored[0, [1, 0]]
    np.save(ids_file, doctored)
    again = Recommender.from_run(run, data=tiny_data, device="cpu")
    assert again.recommend("u0", k=2)[0] == rec.recommend("u0", k=2)[0][::-1]
    # calls the lists cannot answer scan exactly
    assert again.recommend("u0", k=3, exclude_seen=False)[0] == scan.recommend("u0", k=3, exclude_seen=False)[0]
    some = ["i1", "i2", "i3"]
    assert again.recommend("u0", k=2, items=some)[0] == scan.recommend("u0", k=2, items=some)[0]


def test_k_beyond_the_catalogue_returns_every_candidate(tiny_rec: Recommender) -> None:
    history = tiny_rec.user_history("u1")
    ids, scores = tiny_rec.recommend("u1", k=1000)
    assert len(ids) == len(scores) == 48 - len(history) and len(set(ids)) == len(ids)
    ids, _ = tiny_rec.recommend("u1", k=1000, exclude_seen=False)
    assert sorted(ids) == sorted(tiny_rec.items())
    top, _ = tiny_rec.recommend("u1", k=48, exclude_seen=False)
    assert set(history) <= set(top)


def test_items_restricts_the_ranking(tiny_rec: Recommender) -> None:
    history = tiny_rec.user_history("u2")
    allowed = [history[0], "i1", "i3", "i5", "i46"]
    ids, scores = tiny_rec.recommend("u2", k=10, items=allowed)
    assert sorted(ids) == sorted(set(allowed) - set(history))
    ids, _ = tiny_rec.recommend("u2", k=10, items=allowed, exclude_seen=False)
    assert sorted(ids) == sorted(allowed)
    ids, _ = tiny_rec.recommend("u2", k=2, items=allowed)
    assert len(ids) == 2


def test_recommend_batch_equals_recommend_per_user(tiny_rec: Recommender) -> None:
    users = ["u3", "u0", "u38", "u3"]
    for kwargs in ({"k": 7}, {"k": 100, "items": ["i0", "i1", "i2", "i9", "i40"]}, {"k": 5, "exclude_seen": False}):
        batch_ids, batch_scores = tiny_rec.recommend_batch(users, **kwargs)
        for user, ids, scores in zip(users, batch_ids, batch_scores):
            one_ids, one_scores = tiny_rec.recommend(user, **kwargs)
            assert ids == one_ids
            np.testing.assert_allclose(scores, one_scores, rtol=1e-6)


def test_score_breakdown_parts_sum_to_the_score(tiny_rec: Recommender) -> None:
    items = tiny_rec.items()
    parts = tiny_rec.score_breakdown("u5", items)
    np.testing.assert_allclose(
        parts["visual"] + parts["collaborative"] + parts["bias"], parts["total"], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(parts["total"], tiny_rec.scores([5])[0].numpy(), rtol=1e-5, atol=1e-6)
    model = tiny_rec.model
    with torch.no_grad():
        visual = (tiny_rec.phi @ model.theta_users.weight[5]).numpy()
    np.testing.assert_allclose(parts["visual"], visual, rtol=1e-5, atol=1e-6)
    # cold items: no collaborative part, the mean bias of the warm items
    cold = tiny_rec.dataset.cold_items
    assert cold.sum() >= 4
    beta = model.beta_items.weight[:, 0].detach().numpy()
    assert np.all(parts["collaborative"][cold] == 0)
    np.testing.assert_allclose(parts["bias"][cold], beta[~cold].mean(), rtol=1e-5)
    np.testing.assert_allclose(parts["bias"][~cold], beta[~cold], rtol=1e-6)


def test_rank_of_agrees_with_a_manual_rank(tiny_rec: Recommender) -> None:
    ds = tiny_rec.dataset
    for user in ("u0", "u9", "u30"):
        u = ds.users.index(user)
        scores = tiny_rec.scores([u])[0].numpy()
        excluded = set(tiny_rec.user_history(user)) | set(tiny_rec.held_out(user, "val"))
        for item in tiny_rec.held_out(user, "test") + ["i7", "i44"]:
            others = [j for j in range(ds.n_items) if ds.items.ids[j] not in excluded and ds.items.ids[j] != item]
            manual = 1 + int((scores[others] >= scores[ds.items.index(item)]).sum())
            assert tiny_rec.rank_of(user, item) == manual
        # on the validation split the test item stays a candidate and the val item is ranked
        (val,) = tiny_rec.held_out(user, "val")
        others = [
            j
            for j in range(ds.n_items)
            if ds.items.ids[j] not in set(tiny_rec.user_history(user)) and ds.items.ids[j] != val
        ]
        manual = 1 + int((scores[others] >= scores[ds.items.index(val)]).sum())
        assert tiny_rec.rank_of(user, val, split="val") == manual


def test_rank_users_accepts_path_bytes_and_file_object(tiny_rec: Recommender, tiny_data: Path) -> None:
    path = tiny_data / "images" / "i2.png"
    by_path = tiny_rec.rank_users(path, k=5)
    by_bytes = tiny_rec.rank_users(path.read_bytes(), k=5)
    with open(path, "rb") as fh:
        by_file = tiny_rec.rank_users(fh, k=5)
    by_str = tiny_rec.rank_users(str(path), k=5)
    for other in (by_bytes, by_file, by_str):
        assert other[0] == by_path[0]
        np.testing.assert_allclose(other[1], by_path[1], rtol=1e-6)
    assert len(by_path[0]) == 5 and np.all(np.diff(by_path[1]) <= 0)
    all_scores = tiny_rec.user_scores_for_image(path)
    assert by_path[1][0] == pytest.approx(all_scores.max())
    assert sum(int(u[1:]) % 2 == 0 for u in tiny_rec.rank_users(path, k=10)[0]) >= 7  # a red item: red users


def test_user_scores_for_image_is_theta_phi_plus_mean_warm_bias(tiny_rec: Recommender, tiny_data: Path) -> None:
    path = tiny_data / "images" / "i5.png"
    model = tiny_rec.model
    pixels = load_image(path, model.cfg.image_size)
    with torch.no_grad():
        phi = model.cnn(to_model_input(torch.from_numpy(pixels)[None]))[0]
        beta = model.beta_items.weight[:, 0]
        warm = ~torch.as_tensor(tiny_rec.dataset.cold_items)
        expected = (model.theta_users.weight @ phi + beta[warm].mean()).numpy()
    got = tiny_rec.user_scores_for_image(path)
    assert got.shape == (40,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # a catalogue item's own image gives its phi: the visual part of its scores
    np.testing.assert_allclose(tiny_rec.embed_image(path).numpy(), tiny_rec.phi[5].numpy(), rtol=1e-4, atol=1e-5)


def test_similar_items_by_item_and_by_image(tiny_rec: Recommender, tiny_data: Path) -> None:
    ids, sims = tiny_rec.similar_items(item_id="i4", k=10)
    assert "i4" not in ids and len(ids) == 10 and np.all(np.diff(sims) <= 0)
    phi = tiny_rec.phi
    cos = torch.nn.functional.cosine_similarity(phi, phi[4][None], dim=1).numpy()
    np.testing.assert_allclose(sims, cos[tiny_rec.dataset.items.indices(ids)], rtol=1e-5)
    ids, _ = tiny_rec.similar_items(item_id="i4", k=100)
    assert len(ids) == 47
    path = tiny_data / "images" / "i4.png"
    ids, sims = tiny_rec.similar_items(image=path, k=3)
    cos = torch.nn.functional.cosine_similarity(phi, tiny_rec.embed_image(path)[None], dim=1).numpy()
    np.testing.assert_allclose(sims, cos[tiny_rec.dataset.items.indices(ids)], rtol=1e-5)
    assert sims[0] == pytest.approx(cos.max()) and cos[4] == pytest.approx(1.0, abs=1e-4)
    assert len(ids) == 3  # by image nothing is excluded


def test_unknown_ids_and_unreadable_images(tiny_rec: Recommender, tmp_path: Path) -> None:
    for call in (
        lambda: tiny_rec.recommend("nobody"),
        lambda: tiny_rec.user_history("nobody"),
        lambda: tiny_rec.recommend_batch(["u0", "nobody"]),
        lambda: tiny_rec.rank_of("nobody", "i0"),
        lambda: tiny_rec.score_breakdown("nobody", ["i0"]),
    ):
        with pytest.raises(UnknownIdError, match="nobody"):
            call()
    for call in (
        lambda: tiny_rec.rank_of("u0", "no-item"),
        lambda: tiny_rec.similar_items(item_id="no-item"),
        lambda: tiny_rec.recommend("u0", items=["i0", "no-item"]),
        lambda: tiny_rec.score_breakdown("u0", ["no-item"]),
    ):
        with pytest.raises(UnknownIdError, match="no-item"):
            call()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    for source in (bad, bad.read_bytes(), io.BytesIO(b"\x89PNG\r\n\x1a\n broken"), tmp_path / "missing.jpg"):
        with pytest.raises(ImageError):
            tiny_rec.rank_users(source)


def test_changed_dataset_is_refused(tiny_run: Path, tiny_data: Path, tiny_copy) -> None:
    data = tiny_copy(tiny_data, "data")
    Recommender.from_run(tiny_run, data=data, device="cpu")  # an identical copy is fine
    with open(data / "interactions.csv", "a") as fh:
        fh.write("u3,i9,1800000000\n")
    with pytest.raises(CheckpointError, match="changed") as err:
        Recommender.from_run(tiny_run, data=data, device="cpu")
    assert "--init-from" in str(err.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        Recommender.from_run(tiny_run.parent / "no-such-run", device="cpu")


def test_checkpoint_fallback_and_damaged_checkpoints(tiny_run: Path, tiny_data: Path, tiny_copy) -> None:
    run = tiny_copy(tiny_run, "run")
    (run / "best.pt").unlink()
    rec = Recommender.from_run(run, data=tiny_data, device="cpu")
    assert rec.checkpoint_path.name == "last.pt" and "training_state" in rec.checkpoint
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])  # cut short
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        Recommender.from_run(run, data=tiny_data, device="cpu")
    (run / "last.pt").unlink()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Recommender.from_run(run, data=tiny_data, device="cpu")


def test_phi_cache_is_written_once_reused_and_invalidated(tiny_run: Path, tiny_data: Path, tiny_copy) -> None:
    run = tiny_copy(tiny_run, "run")
    first = Recommender.from_run(run, data=tiny_data, device="cpu")
    (cache,) = (run / "cache").glob("phi_best_*.npy")
    stamp = cache.stat().st_mtime_ns
    time.sleep(0.02)
    again = Recommender.from_run(run, data=tiny_data, device="cpu")
    assert cache.stat().st_mtime_ns == stamp and list((run / "cache").glob("phi_*")) == [cache]
    torch.testing.assert_close(again.phi, first.phi)
    # the cached features are really used: doctor the file and see them come back
    np.save(cache, np.load(cache) + 1.0)
    os.utime(cache, ns=(stamp, stamp))
    doctored = Recommender.from_run(run, data=tiny_data, device="cpu")
    torch.testing.assert_close(doctored.phi, first.phi + 1.0)

    ckpt = load_checkpoint(run / "best.pt")
    model = model_from_checkpoint(ckpt)
    with torch.no_grad():
        # the CNN's last linear layer adds its bias to phi (CNNF: the output layer; two streams: colour's)
        [m for m in model.cnn.modules() if isinstance(m, torch.nn.Linear)][-1].bias.add_(0.5)
    save_checkpoint(
        run / "best.pt",
        model,
        train_config=ckpt["train_config"],
        user_ids=ckpt["user_ids"],
        item_ids=ckpt["item_ids"],
        cold_items=ckpt["cold_items"],
        dataset_signature=ckpt["dataset_signature"],
        epoch=ckpt["epoch"],
        step=ckpt["step"],
        metrics=ckpt["metrics"],
    )
    changed = Recommender.from_run(run, data=tiny_data, device="cpu")
    (new_cache,) = (run / "cache").glob("phi_best_*.npy")  # the stale file is gone
    assert new_cache != cache
    torch.testing.assert_close(changed.phi, first.phi + 0.5)


def test_phi_cache_follows_a_changed_image(tiny_run: Path, tiny_data: Path, tiny_copy) -> None:
    from PIL import Image

    run, data = tiny_copy(tiny_run, "run"), tiny_copy(tiny_data, "data")
    before = Recommender.from_run(run, data=data, device="cpu")
    path = Path(before.dataset.image_paths[0])
    Image.new("RGB", (32, 32), (255, 0, 255)).save(path)  # same item id, new picture
    after = Recommender.from_run(run, data=data, device="cpu")
    assert not torch.allclose(after.phi[0], before.phi[0])
    torch.testing.assert_close(after.phi[1:], before.phi[1:])
    assert len(list((run / "cache").glob("phi_best_*.npy"))) == 1


@pytest.mark.parametrize("terms", ["visual", "visual+cf"])
def test_runs_with_fewer_score_terms_score_by_their_formula(
    terms: str, tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    from dvbpr.config import TrainConfig
    from dvbpr.train import train

    run = tmp_path / terms.replace("+", "-")
    train(
        TrainConfig(data=str(tiny_data), out=str(run), **{**tiny_train_kwargs, "epochs": 1, "terms": terms}),
        progress=False,
    )
    rec = Recommender.from_run(run, device="cpu")
    model = rec.model
    assert (model.cfg.terms, hasattr(model, "gamma_users"), hasattr(model, "beta_items")) == (
        terms,
        terms == "visual+cf",
        False,
    )
    with torch.no_grad():
        expected = model.theta_users.weight @ rec.phi.T
        if terms == "visual+cf":
            gamma_i = model.gamma_items.weight.masked_fill(torch.as_tensor(rec.dataset.cold_items)[:, None], 0.0)
            expected = expected + model.gamma_users.weight @ gamma_i.T
    torch.testing.assert_close(rec.scores(np.arange(40)), expected, rtol=1e-5, atol=1e-5)
    parts = rec.score_breakdown("u1", rec.items())
    assert np.all(parts["bias"] == 0)
    assert np.any(parts["collaborative"] != 0) == (terms == "visual+cf")
    image = tiny_data / "images" / "i1.png"
    with torch.no_grad():  # no bias term: no mean bias either
        expected_users = (model.theta_users.weight @ rec.embed_image(image)).numpy()
    np.testing.assert_allclose(rec.user_scores_for_image(image), expected_users, rtol=1e-5, atol=1e-6)
