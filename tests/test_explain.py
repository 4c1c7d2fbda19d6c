"""Visual explanations (dvbpr/explain.py): the map's definition, the API and the CLI, every CNN,
the garment masks of dvbpr.synth, and the sanity checks of Adebayo et al. ("Sanity checks for
saliency maps", 2018) on the shipped model: its maps change completely when the CNN's weights are
re-initialised, and most of their mass lies on the garment, not the background."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr
from torch import nn

from dvbpr import cli, synth
from dvbpr.errors import DataError, DVBPRError, UnknownIdError
from dvbpr.explain import explain_pixels, overlay
from dvbpr.images import load_image, to_model_input
from dvbpr.model import DVBPR, ModelConfig
from dvbpr.recommender import Recommender
from dvbpr.synth import DEFAULT_DATA_DIR, ensure_default_dataset, render_item, silhouettes

DEFAULT_MODEL = DEFAULT_DATA_DIR.parent.parent / "models" / "default"


# ----------------------------------------------------------------------------- the API
def test_explain_an_item_or_an_image_gives_the_visual_score(tiny_rec: Recommender, tiny_data: Path) -> None:
    e = tiny_rec.explain("u0", item="i2")  # a red user, a red item
    assert e.heatmap.shape == (32, 32) and e.heatmap.dtype == np.float32
    assert e.heatmap.min() >= 0 and e.attribution > 0
    assert e.pixels.shape == (32, 32, 3) and np.array_equal(e.pixels, tiny_rec.store.array[2])
    visual = tiny_rec.score_breakdown("u0", ["i2"])["visual"][0]
    assert e.visual_score == pytest.approx(float(visual), rel=1e-4, abs=1e-6)
    path = tiny_data / "images" / "i2.png"
    for source in (path, path.read_bytes(), tiny_rec.cold_item(path), load_image(path, 32)):
        np.testing.assert_allclose(tiny_rec.explain("u0", image=source).heatmap, e.heatmap, rtol=1e-5, atol=1e-7)
    batch = tiny_rec.explain_items("u0", ["i5", "i2", "i5"])
    np.testing.assert_allclose(batch[1].heatmap, e.heatmap, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(batch[0].heatmap, tiny_rec.explain("u0", item="i5").heatmap, rtol=1e-5, atol=1e-7)
    with pytest.raises(DVBPRError, match="exactly one"):
        tiny_rec.explain("u0")
    with pytest.raises(DVBPRError, match="exactly one"):
        tiny_rec.explain("u0", item="i2", image=path)
    with pytest.raises(UnknownIdError):
        tiny_rec.explain("nobody", item="i2")
    with pytest.raises(UnknownIdError):
        tiny_rec.explain("u0", item="nothing")


def test_the_map_is_gradient_times_input_minus_a_white_canvas() -> None:
    """With a linear CNN the gradient is W^T theta everywhere: the map is, per pixel, the positive
    part of sum_c (W^T theta)_c (x_c - 1), and a white pixel (x = 1) gets nothing."""

    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cnn = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))

    torch.manual_seed(0)
    model = Linear().eval()
    theta = torch.randn(4)
    pixels = np.full((1, 8, 8, 3), 255, dtype=np.uint8)
    pixels[0, 2:6, 1:7] = np.random.default_rng(0).integers(0, 255, (4, 6, 3))
    (e,) = explain_pixels(model, theta, pixels)
    x = to_model_input(torch.from_numpy(pixels))[0]
    weight = (model.cnn[1].weight.T @ theta).reshape(3, 8, 8)
    expected = (weight * (x - 1)).sum(0).clamp(min=0).detach().numpy()
    np.testing.assert_allclose(e.heatmap, expected, rtol=1e-5, atol=1e-6)
    assert np.all(e.heatmap[pixels[0].min(-1) == 255] == 0)
    with torch.no_grad():
        assert e.visual_score == pytest.approx(float(model.cnn(x[None])[0] @ theta), rel=1e-5)


def test_a_batch_takes_one_forward_and_one_backward_pass(tiny_rec: Recommender) -> None:
    calls = {"forward": [], "backward": []}
    cnn = tiny_rec.model.cnn
    forward = cnn.register_forward_hook(lambda m, args, out: calls["forward"].append(len(out)))
    backward = cnn.register_full_backward_hook(lambda m, grad_in, grad_out: calls["backward"].append(len(grad_out[0])))
    try:
        explanations = tiny_rec.explain_items("u1", tiny_rec.items()[:20])
    finally:
        forward.remove()
        backward.remove()
    assert calls == {"forward": [20], "backward": [20]} and len(explanations) == 20
    assert not tiny_rec.model.training and all(p.grad is None for p in tiny_rec.model.parameters())


@pytest.mark.parametrize(
    "arch, colour_stream", [("cnnf-small", False), ("cnnf-small", True), ("cnnf", False), ("alexnet", True)]
)
def test_every_network_is_explained(arch: str, colour_stream: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_users=2, n_items=2, arch=arch, image_size=64, dim=8, colour_stream=colour_stream)
    model = DVBPR(cfg).eval()
    pixels = np.full((2, 64, 64, 3), 255, dtype=np.uint8)
    pixels[0, 16:48, 20:44] = (200, 30, 40)
    theta = model.theta_users.weight[1]
    first, blank = explain_pixels(model, theta, pixels)
    with torch.no_grad():
        scores = model.cnn(to_model_input(torch.from_numpy(pixels))) @ theta
    assert first.visual_score == pytest.approx(float(scores[0]), rel=1e-4, abs=1e-6)
    assert first.heatmap.shape == (64, 64) and first.heatmap.min() >= 0
    assert first.heatmap[pixels[0].min(-1) == 255].sum() == 0  # only the red patch can raise it
    assert blank.attribution == 0


def test_overlay_is_the_image_with_heat_where_the_map_is_high(tiny_rec: Recommender) -> None:
    e = tiny_rec.explain("u0", item="i2")
    picture = overlay(e, size=96)
    assert picture.shape == (96, 96, 3) and picture.dtype == np.uint8
    assert not np.array_equal(overlay(e), np.asarray(e.pixels))  # dimmed, heat blended in


# ------------------------------------------------------------------------------ the CLI
def test_cli_explain_writes_the_overlay(capsys, tiny_run: Path, tiny_data: Path, tiny_rec, tmp_path: Path) -> None:
    out = tmp_path / "map.png"
    code = cli.main(["explain", str(tiny_run), "--user", "u0", "--item", "i2", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["user"] == "u0" and result["item"] == "i2" and result["map_size"] == 32
    assert result["visual_score"] == pytest.approx(tiny_rec.explain("u0", item="i2").visual_score, rel=1e-5)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (256, 256)
    image = tiny_data / "images" / "i7.png"
    code = cli.main(["explain", str(tiny_run), "--user", "u1", "--image", str(image), "--out", str(tmp_path / "m.jpg")])
    captured = capsys.readouterr()
    assert code == 0 and "visual score" in captured.out and (tmp_path / "m.jpg").is_file()
    for argv, message in (
        (["--user", "u0", "--item", "i2", "--out", str(tmp_path / "map.txt")], ".png, .jpg or .webp"),
        (["--user", "nobody", "--item", "i2", "--out", str(out)], "unknown user 'nobody'"),
    ):
        code = cli.main(["explain", str(tiny_run), *argv])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


# ------------------------------------------------------------------ the garment masks
LOOKS = [
    ("t-shirt", "red", "solid"),
    ("dress", "blue", "dots"),
    ("shoes", "pink", "stripes"),
    ("bag", "yellow", "checks"),
    ("scarf", "black", "zigzag"),
    ("hat", "teal", "dots"),
    ("jacket", "navy", "checks"),
    ("skirt", "purple", "stripes"),
    ("trousers", "green", "zigzag"),
    ("shorts", "orange", "solid"),
]


def test_masks_leave_the_drawn_pixels_unchanged() -> None:
    """The pixels of render_item are those drawn before the mask existed (their sha256 then),
    with or without the mask, so the shipped dataset is the same byte for byte."""
    h = hashlib.sha256()
    for i, look in enumerate(LOOKS):
        image, mask = render_item(*look, 128, seed=[0, i], with_mask=True)
        assert np.array_equal(np.asarray(image), np.asarray(render_item(*look, 128, seed=[0, i])))
        assert mask.shape == (128, 128) and mask.dtype == bool and 0.15 < mask.mean() < 0.5
        h.update(np.asarray(image).tobytes())
    assert h.hexdigest() == "224d45837f971930409749a72f2ce909335ca6ac9742693c4a008be14ab5ef50"


def test_the_mask_is_the_garment_not_the_background() -> None:
    image, mask = render_item("dress", "red", "solid", 128, seed=[0, 7], with_mask=True)
    pixels = np.asarray(image, dtype=np.float32)
    background = np.array([243, 241, 236], dtype=np.float32)
    distance = np.abs(pixels - background).sum(-1)
    assert np.median(distance[mask]) > 150  # red fabric (or its dark outline)
    assert np.median(distance[~mask]) < 15  # the background (the faint shadow included)


def test_silhouettes_of_a_generated_dataset(tmp_path: Path) -> None:
    folder = synth.make_dataset(tmp_path / "d", synth.SynthConfig(n_items=60, n_users=20, mean_interactions=6, seed=4))
    tastes = json.loads((folder / "hidden_tastes.json").read_text())
    masks = silhouettes(folder, ["i00003", "i00001"])
    for mask, (item_id, position) in zip(masks, (("i00003", 2), ("i00001", 0)), strict=True):
        look = tastes["items"][item_id]
        image, expected = render_item(look["category"], look["colour"], look["pattern"], 128, [4, position], True)
        assert np.array_equal(mask, expected)
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(folder / "images" / f"{item_id}.png")))
    with pytest.raises(DataError, match="not generated"):
        silhouettes(folder, ["i99999"])


# ------------------------------------------------------- sanity checks on the shipped model
@pytest.fixture(scope="module")
def shipped() -> tuple[Recommender, list[tuple[str, str]]]:
    """The shipped model, and 60 (user, item) pairs: each user with one of their top 20 items,
    the cards the app explains."""
    ensure_default_dataset(progress=False)
    rec = Recommender.from_run(DEFAULT_MODEL, device="cpu")
    rng = np.random.default_rng(0)
    users = rec.dataset.users.to_ids(rng.choice(rec.dataset.n_users, 60, replace=False))
    tops, _ = rec.recommend_batch(users, k=20)
    return rec, [(user, top[rng.integers(20)]) for user, top in zip(users, tops, strict=True)]


def test_maps_change_when_the_cnn_is_reinitialised(shipped) -> None:
    """Model randomisation: the same users' theta over a CNN with fresh weights. A map that stayed
    the same would show the image, not what the model learned."""
    rec, pairs = shipped
    torch.manual_seed(0)
    random = DVBPR(rec.model.cfg).eval()
    random.theta_users.weight.data.copy_(rec.model.theta_users.weight.data)
    correlations = []
    for user, item in pairs:
        pixels = rec.store.array[rec.dataset.items.indices([item])]
        theta = rec.model.theta_users.weight[rec.dataset.users.index(user)]
        (trained,) = explain_pixels(rec.model, theta, pixels)
        (fresh,) = explain_pixels(random, theta, pixels)
        correlations.append(spearmanr(trained.heatmap.ravel(), fresh.heatmap.ravel())[0])
    mean = float(np.nanmean(correlations))
    print(f"rank correlation of the maps, trained vs re-initialised CNN: mean {mean:.3f}")
    assert mean < 0.3 and max(correlations) < 0.6


def test_most_attribution_mass_lies_on_the_garment(shipped) -> None:
    rec, pairs = shipped
    items = [item for _, item in pairs]
    size = rec.model.cfg.image_size
    # each pixel's share of garment at the model's resolution (the masks are at 128 px)
    coverage = [
        np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BOX)) / 255.0
        for m in silhouettes(DEFAULT_DATA_DIR, items)
    ]
    on, total = 0.0, 0.0
    for (user, item), garment in zip(pairs, coverage, strict=True):
        heat = rec.explain(user, item=item).heatmap
        on, total = on + float((heat * garment).sum()), total + float(heat.sum())
    area = float(np.mean(coverage))
    print(f"attribution mass on the garment: {on / total:.3f} (the garment covers {area:.3f} of the image)")
    assert area < 0.4  # not a trivial figure: most of each image is background
    assert on / total >= 0.80
