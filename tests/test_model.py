"""The DVBPR module: CNN shapes, score terms, cold-item scoring, loss and regularisers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dvbpr.errors import TrainingError
from dvbpr.model import (
    CNNF,
    DVBPR,
    ColourStream,
    ModelConfig,
    TwoStreamCNN,
    bpr_loss,
    build_cnn,
    cold_item_bias,
    nt_xent,
    random_crops,
    random_flip_shift,
    random_hue,
)


def _layers(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def small_model(terms: str = "full", n_users: int = 5, n_items: int = 7) -> DVBPR:
    torch.manual_seed(0)
    model = DVBPR(
        ModelConfig(n_users=n_users, n_items=n_items, arch="cnnf-small", image_size=32, dim=4, cf_dim=3, terms=terms)
    )
    with torch.no_grad():  # non-trivial values everywhere, so every term shows in the scores
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return model.eval()


# --- networks -------------------------------------------------------------------------------


def test_cnnf_224_has_the_papers_layers() -> None:
    net = CNNF(dim=50, image_size=224)
    convs, fcs = _layers(net, nn.Conv2d), _layers(net, nn.Linear)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 64, (11, 11), (4, 4)),
        (64, 256, (5, 5), (1, 1)),
        (256, 256, (3, 3), (1, 1)),
        (256, 256, (3, 3), (1, 1)),
        (256, 256, (3, 3), (1, 1)),
    ]
    assert [(f.in_features, f.out_features) for f in fcs] == [(256 * 7 * 7, 4096), (4096, 4096), (4096, 50)]
    assert len(_layers(net, nn.MaxPool2d)) == 3
    assert not _layers(net, nn.LocalResponseNorm)
    drops = _layers(net, nn.Dropout)
    assert len(drops) == 2 and all(d.p == 0.5 for d in drops)
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 50)


def test_dropout_active_in_train_mode_only() -> None:
    torch.manual_seed(0)
    net = CNNF(dim=8, image_size=32, small=True)
    for m in net.modules():  # non-zero biases so the fc activations are not all zero
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.bias, 0.1, 0.2)
    x = torch.randn(2, 3, 32, 32)
    net.train()
    assert not torch.allclose(net(x), net(x))
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_alexnet_variant_replaces_last_layer_and_downloads_nothing(monkeypatch) -> None:
    import torch.hub

    def no_download(*args, **kwargs):
        raise AssertionError("alexnet must not load pretrained weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    net = build_cnn(ModelConfig(n_users=2, n_items=3, arch="alexnet", image_size=224, dim=16)).eval()
    last = net.classifier[-1]
    assert isinstance(last, nn.Linear) and (last.in_features, last.out_features) == (4096, 16)
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 3
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 224, 224)).shape == (2, 16)


def test_cnnf_small_output_shape_and_config_checks() -> None:
    for size in (32, 64, 96):
        net = build_cnn(ModelConfig(n_users=1, n_items=1, arch="cnnf-small", image_size=size, dim=12)).eval()
        with torch.no_grad():
            assert net(torch.zeros(3, 3, size, size)).shape == (3, 12)
    with pytest.raises(TrainingError, match="architecture"):
        ModelConfig(n_users=1, n_items=1, arch="resnet")
    with pytest.raises(TrainingError, match="terms"):
        ModelConfig(n_users=1, n_items=1, terms="cf")
    with pytest.raises(TrainingError, match="at least 64"):
        ModelConfig(n_users=1, n_items=1, arch="cnnf", image_size=32)


# --- score terms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "terms, has_cf, has_bias",
    [
        ("visual", False, False),
        ("visual+cf", True, False),
        ("full", True, True),
    ],
)
def test_terms_parameters_and_score_formula(terms: str, has_cf: bool, has_bias: bool) -> None:
    model = small_model(terms)
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert ("gamma_users" in names) == has_cf and ("gamma_items" in names) == has_cf
    assert ("beta_items" in names) == has_bias and "theta_users" in names
    users, items = torch.tensor([0, 1, 4, 4]), torch.tensor([6, 0, 3, 2])
    phi = torch.randn(4, 4)
    expected = (model.theta_users.weight[users] * phi).sum(1)
    if has_cf:
        expected = expected + (model.gamma_users.weight[users] * model.gamma_items.weight[items]).sum(1)
    if has_bias:
        expected = expected + model.beta_items.weight[items, 0]
    with torch.no_grad():
        assert torch.allclose(model.score(users, items, phi), expected, atol=1e-6)
        # forward is x_ui - x_uj with phi from the CNN over [positives; negatives]
        images = torch.randn(8, 3, 32, 32)
        phi_all = model.cnn(images)
        x = model(users, items, items.flip(0), images)
        ref = model.score(users, items, phi_all[:4]) - model.score(users, items.flip(0), phi_all[4:])
        assert torch.allclose(x, ref, atol=1e-5)


@pytest.mark.parametrize("terms", ["visual", "visual+cf", "full"])
def test_serving_factors_score_cold_items_with_zero_gamma_and_mean_warm_bias(terms: str) -> None:
    model = small_model(terms)
    phi_all = torch.randn(7, 4)
    cold = torch.tensor([False, True, False, False, True, False, False])
    users = torch.tensor([0, 2, 3])
    factors = model.serving_factors(phi_all, cold)
    got = factors.scores(users)
    theta = model.theta_users.weight[users]
    expected = theta @ phi_all.T
    if terms != "visual":
        gamma_i = model.gamma_items.weight.clone()
        gamma_i[cold] = 0.0
        expected = expected + model.gamma_users.weight[users] @ gamma_i.T
    if terms == "full":
        beta = model.beta_items.weight[:, 0].clone()
        warm_mean = beta[~cold].mean()
        beta[cold] = warm_mean
        expected = expected + beta
        assert torch.allclose(factors.new_item_bias, warm_mean)
    else:
        assert float(factors.new_item_bias) == 0.0
    assert got.shape == (3, 7)
    assert torch.allclose(got, expected, atol=1e-5)
    # warm items score exactly as `score` (training's form of the rule) does
    warm = torch.tensor([0, 2, 3, 5, 6])
    for r, u in enumerate(users.tolist()):
        direct = model.score(torch.full((5,), u), warm, phi_all[warm])
        assert torch.allclose(got[r, warm], direct.detach(), atol=1e-5)
    # a new image scores as a cold item with the same phi does
    with torch.no_grad():
        new = factors.new_item_scores(phi_all[1])
    assert torch.allclose(new, model.serving_factors(phi_all, cold).scores(torch.arange(5))[:, 1], atol=1e-5)


def test_cold_item_bias_is_the_mean_warm_bias_and_zero_without_warm_items() -> None:
    beta = torch.tensor([1.0, 2.0, 3.0, 10.0])
    bias, new = cold_item_bias(beta, torch.tensor([False, False, True, True]))
    assert bias.tolist() == [1.0, 2.0, 1.5, 1.5] and float(new) == 1.5
    bias, new = cold_item_bias(beta, torch.tensor([True, True, True, True]))
    assert bias.tolist() == [0.0] * 4 and float(new) == 0.0
    bias, new = cold_item_bias(beta, None)
    assert torch.equal(bias, beta) and float(new) == 4.0


# --- loss and regularisers ------------------------------------------------------------------


def test_bpr_loss_is_summed_negative_log_sigmoid() -> None:
    x = torch.tensor([-30.0, -2.0, 0.0, 0.5, 3.0, 40.0])
    assert torch.allclose(bpr_loss(x), -torch.log(torch.sigmoid(x.double())).sum().float(), rtol=1e-6)
    assert torch.isclose(bpr_loss(torch.zeros(4)), torch.tensor(4 * 0.6931471805599453))
    assert torch.isfinite(bpr_loss(torch.tensor([-1e4])))  # stable where log(sigmoid) underflows


@pytest.mark.parametrize("terms", ["visual", "full"])
def test_in_batch_shares_the_batch_negatives_across_its_positives(terms: str) -> None:
    model = small_model(terms)
    users, pos, neg = torch.tensor([0, 1, 4]), torch.tensor([6, 0, 3]), torch.tensor([2, 5, 1])
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        x = model(users, pos, neg, images, in_batch=True)
        phi = model.cnn(images)
        assert x.shape == (3, 3)
        for b in range(3):
            for c in range(3):  # user b's positive against the batch's c-th negative
                ref = model.score(users[b : b + 1], pos[b : b + 1], phi[b : b + 1]) - model.score(
                    users[b : b + 1], neg[c : c + 1], phi[3 + c : 4 + c]
                )
                assert torch.allclose(x[b, c], ref[0], atol=1e-5)
        # column b is row b's own sampled negative: the plain triplet
        assert torch.allclose(x.diagonal(), model(users, pos, neg, images), atol=1e-5)


def test_bpr_loss_sums_only_the_kept_pairs() -> None:
    x = torch.tensor([[0.0, 1.0], [-2.0, float("nan")]])
    keep = torch.tensor([[True, False], [True, False]])  # a dropped pair may even be nan
    expected = -torch.log(torch.sigmoid(torch.tensor([0.0, -2.0]))).sum()
    assert torch.allclose(bpr_loss(x, keep), expected)


def test_regularisers_by_hand() -> None:
    model = small_model("full")
    u, i, j = torch.tensor([0, 3, 3]), torch.tensor([1, 2, 6]), torch.tensor([5, 0, 4])
    th, gu, gi, b = (
        model.theta_users.weight,
        model.gamma_users.weight,
        model.gamma_items.weight,
        model.beta_items.weight,
    )
    expected = 2.0 * 0.5 * (th[u] ** 2).sum() + 0.1 * 0.5 * (
        (gu[u] ** 2).sum() + (gi[i] ** 2).sum() + (gi[j] ** 2).sum() + (b[i] ** 2).sum() + (b[j] ** 2).sum()
    )
    assert torch.allclose(model.embedding_l2(u, i, j, 2.0, 0.1), expected, rtol=1e-5)
    weights = [m.weight for m in model.cnn.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weights) == 8  # 5 conv + 3 fc; biases excluded
    cnn = 0.5 * sum(float((w.detach().double() ** 2).sum()) for w in weights)
    everything = 0.5 * sum(float((p.detach().double() ** 2).sum()) for p in model.cnn.parameters())
    assert float(model.cnn_l2().detach()) == pytest.approx(cnn, rel=1e-5)
    assert everything > cnn * (1 + 1e-4)  # the biases are non-zero here, so excluding them shows
    # visual-only model: only theta is regularised
    vis = small_model("visual")
    assert torch.allclose(
        vis.embedding_l2(u, i, j, 2.0, 0.1), 2.0 * 0.5 * (vis.theta_users.weight[u] ** 2).sum(), rtol=1e-5
    )


def test_reset_parameters_follows_the_original_init() -> None:
    torch.manual_seed(1)
    model = DVBPR(ModelConfig(n_users=50, n_items=9, arch="cnnf-small", image_size=32, dim=8, cf_dim=4))
    theta = model.theta_users.weight.detach()
    assert float(theta.min()) >= 0.0 and float(theta.max()) <= 0.01
    assert torch.equal(model.beta_items.weight, torch.zeros(9, 1))
    for m in model.cnn.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def _luma(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("c,bchw->bhw", torch.tensor([0.299, 0.587, 0.114]), (x + 1) / 2)


def test_random_hue_keeps_luma_and_greys_and_changes_the_hue() -> None:
    torch.manual_seed(0)
    # Muted colours: no channel clips under any rotation, so luma is kept exactly.
    x = torch.rand(6, 3, 8, 8) * 0.4 - 0.2
    x[:, :, :2] = 0.3  # a grey band: no chroma to turn
    y = random_hue(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    torch.testing.assert_close(_luma(y), _luma(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, :, :2], x[:, :, :2], atol=1e-5, rtol=0)
    assert (y[:, :, 2:] - x[:, :, 2:]).abs().mean() > 0.02  # the colours did move
    assert not torch.allclose(y[0], random_hue(x[:1])[0])  # each call draws new angles
    last = random_hue(x.to(memory_format=torch.channels_last))  # the CUDA path's layout
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert random_hue(x.double()).dtype == torch.float64


def test_random_flip_shift_moves_each_image_as_a_whole() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    y = random_flip_shift(x, max_shift=0.25)  # up to 2 px each way
    assert y.shape == x.shape and y.dtype == x.dtype
    padded = torch.nn.functional.pad(torch.cat([x, x.flip(-1)]), (2, 2, 2, 2), mode="replicate")
    moves = set()
    for b in range(len(x)):  # each output is its own image, maybe mirrored, cut at some offset
        found = [
            (flip, dy, dx)
            for flip in (0, 1)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(y[b], padded[b + flip * len(x), :, dy : dy + 8, dx : dx + 8])
        ]
        assert found, f"image {b} is not a shifted copy of its input"
        moves.add(found[0])
    assert len(moves) > 4 and {m[0] for m in moves} == {0, 1}  # the moves are drawn per image
    last = random_flip_shift(x.to(memory_format=torch.channels_last))  # the CUDA path's layout
    assert last.is_contiguous(memory_format=torch.channels_last)


def test_colour_stream_sees_colours_but_no_layout() -> None:
    torch.manual_seed(0)
    net = ColourStream(dim=8).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    # Shuffling the 4x4 blocks (the stream's first pooling) keeps the histogram: same output.
    blocks = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, 3, 4, 4, 4, 4)
    order = torch.randperm(16)
    shuffled = blocks.reshape(2, 3, 16, 4, 4)[:, :, order].reshape(2, 3, 4, 4, 4, 4)
    shuffled = shuffled.permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 16, 16)
    torch.testing.assert_close(net(shuffled), net(x), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(net(x.flip(1)), net(x), atol=1e-3)  # swapping red and blue does matter


def test_two_stream_cnn_randomises_the_shape_streams_hue_in_training_only() -> None:
    cfg = ModelConfig(n_users=3, n_items=4, arch="cnnf-small", image_size=64, dim=8, colour_stream=True, norm="batch")
    net = build_cnn(cfg)
    assert isinstance(net, TwoStreamCNN) and isinstance(net.shape, CNNF)
    seen: list[torch.Tensor] = []
    net.shape.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    net.train()
    net(x)
    assert not torch.allclose(seen[-1], x)
    net.eval()
    out = net(x)
    torch.testing.assert_close(seen[-1], x)
    torch.testing.assert_close(out, net.shape(x) + net.colour(x))
    assert build_cnn(ModelConfig(n_users=3, n_items=4, dim=8)).__class__ is CNNF  # off by default in old configs


def test_texture_head_sees_which_patterns_occur_not_where() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_users=3, n_items=4, arch="cnnf-small", image_size=64, dim=8, texture=True, norm="batch")
    net = build_cnn(cfg).eval()
    assert isinstance(net, CNNF) and net.texture is not None
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    maps = net.features(x)
    # phi = the fc path + the texture head on the same conv maps, averaged over their positions
    torch.testing.assert_close(net(x), net.classifier(maps) + net.texture(maps))
    rolled = maps.roll(shifts=(1, 2), dims=(2, 3))  # the same local features elsewhere
    torch.testing.assert_close(net.texture(rolled), net.texture(maps))
    assert build_cnn(ModelConfig(n_users=3, n_items=4, dim=8)).texture is None  # off in old configs
    with pytest.raises(TrainingError, match="texture"):
        ModelConfig(n_users=3, n_items=4, arch="alexnet", texture=True)


def test_random_crops_are_windows_of_each_image_at_its_own_scale_away_from_the_border() -> None:
    torch.manual_seed(0)
    b, side = 64, 32
    rows = torch.arange(64.0)[:, None].expand(64, 64)
    cols = torch.arange(64.0)[None, :].expand(64, 64)
    x = torch.stack([rows, cols, torch.zeros(64, 64)])[None].repeat(b, 1, 1, 1)
    x[:, 2] = torch.arange(b, dtype=torch.float32)[:, None, None]  # which image
    crops = random_crops(x, side)
    assert crops.shape == (b, 3, side, side)
    dy, dx = crops[:, 0, 0, 0].long(), crops[:, 1, 0, 0].long()
    for k in range(b):
        torch.testing.assert_close(crops[k], x[k, :, dy[k] : dy[k] + side, dx[k] : dx[k] + side])
    assert int(dy.min()) >= 8 and int(dy.max()) <= 64 - side - 8 and int(dx.min()) >= 8  # 1/8 of the side clear
    assert len(set(dy.tolist())) > 4 and len(set(dx.tolist())) > 4  # drawn per image


def test_crop_agreement_loss_trains_the_conv_features_and_leaves_the_running_statistics() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_users=3, n_items=4, image_size=64, dim=8, norm="batch", colour_stream=True, crop_head=True)
    model = DVBPR(cfg)
    shape = model.cnn.shape
    assert isinstance(shape, CNNF) and shape.crop_head is not None
    x = torch.rand(8, 3, 64, 64) * 2 - 1
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k and "crop_head" not in k}
    loss = model.crop_agreement_loss(x)
    # NT-Xent over 16 crops: each must pick its partner among 15; a network that knows nothing
    # of the images scores about ln(15)
    assert 1.0 < loss.item() < 2 * math.log(15)
    after = model.state_dict()
    assert len(before) > 5 and all(torch.equal(before[k], after[k]) for k in before)  # those of whole images
    loss.backward()
    assert shape.features[0].weight.grad.abs().sum() > 0 and shape.crop_head[0].weight.grad.abs().sum() > 0
    assert shape.classifier[1].weight.grad is None  # the fc path, and with it phi's read-out, is not involved
    assert model.cnn.colour.project.weight.grad is None
    model.cnn(x)  # a training forward does update them
    key = "cnn.shape.features.1.running_mean"
    assert not torch.equal(before[key], model.state_dict()[key])

    # eight textures (stripes of their own period and angle): any two crops of one image share
    # it, so the crops learn to find each other
    k = torch.arange(8.0)[:, None, None]
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    angle, period = k * torch.pi / 8, 4 + 2 * (k % 4)
    x = torch.sin(2 * torch.pi * (xx * angle.cos() + yy * angle.sin()) / period)[:, None].repeat(1, 3, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        opt.zero_grad()
        step_loss = model.crop_agreement_loss(x)
        step_loss.backward()
        opt.step()
        first = first if first is not None else step_loss.item()
    assert step_loss.item() < 0.7 * first

    with pytest.raises(TrainingError, match="crop head"):
        DVBPR(ModelConfig(n_users=3, n_items=4, dim=8, norm="batch")).crop_agreement_loss(x)
    with pytest.raises(TrainingError, match="crop-agreement"):
        ModelConfig(n_users=3, n_items=4, arch="alexnet", crop_head=True)


def test_nt_xent_is_simclr_loss_per_row() -> None:
    """Each row's -log softmax of its other view among every row but itself, averaged: written
    out row by row against `nt_xent`'s matrix form."""
    torch.manual_seed(3)
    n, temperature = 3, 0.5
    z = F.normalize(torch.randn(2 * n, 4), dim=1)
    losses = []
    for a in range(2 * n):
        partner = (a + n) % (2 * n)
        logits = [float(z[a] @ z[b]) / temperature for b in range(2 * n) if b != a]
        positive = float(z[a] @ z[partner]) / temperature
        losses.append(-(positive - math.log(sum(math.exp(x) for x in logits))))
    assert nt_xent(z, temperature).item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)
