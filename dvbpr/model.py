"""The DVBPR model: x_ui = beta_i + gamma_u . gamma_i + theta_u . phi(X_i).

phi is a CNN trained jointly with the ranking objective (never pretrained). Three networks:
`cnnf` (the paper's CNN-F at 224x224), `alexnet` (torchvision's AlexNet, untrained, as the
tutorial) and `cnnf-small` (a CNN-F-shaped network for 64-96 px images that trains on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TrainingError

ARCHS = ("cnnf", "cnnf-small", "alexnet")
TERMS = ("visual", "visual+cf", "full")
NORMS = ("none", "batch", "batch+phi")  # none: the paper's CNN-F; batch: BatchNorm after every conv and hidden fc
THETA_INITS = ("uniform", "normal")  # uniform: U(0, 0.01) as the original code; normal: N(0, 0.01)
DEFAULT_IMAGE_SIZE = {"cnnf": 224, "alexnet": 224, "cnnf-small": 64}


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved inside every checkpoint."""

    n_users: int
    n_items: int
    arch: str = "cnnf-small"
    image_size: int = 64
    dim: int = 100  # K: visual embedding size (paper 50, original code 100)
    cf_dim: int = 100  # gamma size (the tutorial's 100)
    terms: str = "full"  # visual | visual+cf | full
    dropout: float = 0.5
    norm: str = "none"  # checkpoints from before the field existed had none
    theta_init: str = "uniform"
    colour_stream: bool = False  # checkpoints from before the field existed had one stream
    texture: bool = False  # checkpoints from before the field existed had no texture head
    crop_head: bool = False  # projection head of the crop-agreement loss (training only)
    # The one image preprocessing (dvbpr.images.load_image), recorded so that inference and
    # uploads are treated exactly as training was.
    preprocessing: dict = field(default_factory=lambda: {"pad": "white-square", "resize": "bicubic", "scale": "[-1,1]"})

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise TrainingError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.terms not in TERMS:
            raise TrainingError(f"unknown score terms {self.terms!r}; choose one of {', '.join(TERMS)}")
        if self.norm not in NORMS:
            raise TrainingError(f"unknown normalisation {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.theta_init not in THETA_INITS:
            raise TrainingError(f"unknown theta init {self.theta_init!r}; choose one of {', '.join(THETA_INITS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise TrainingError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size < 32:
            raise TrainingError(f"image size {self.image_size} is too small (at least 32)")
        if self.texture and self.arch == "alexnet":
            raise TrainingError("the texture head is built for cnnf and cnnf-small, not alexnet")
        if self.crop_head and self.arch == "alexnet":
            raise TrainingError("the crop-agreement loss is built for cnnf and cnnf-small, not alexnet")
        if self.arch in ("cnnf", "alexnet") and self.image_size < 64:
            raise TrainingError(f"{self.arch} needs images of at least 64 px, got {self.image_size}")

    @property
    def uses_cf(self) -> bool:
        return self.terms in ("visual+cf", "full")

    @property
    def uses_bias(self) -> bool:
        return self.terms == "full"


def _conv(cin: int, cout: int, k: int, stride: int = 1, norm: bool = False) -> list[nn.Module]:
    """conv ("same"-style padding) [-> BatchNorm] -> ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)]
    return layers + ([nn.BatchNorm2d(cout)] if norm else []) + [nn.ReLU(inplace=True)]


def _fc(cin: int, cout: int, dropout: float, norm: bool = False) -> list[nn.Module]:
    """Linear [-> BatchNorm] -> ReLU -> dropout."""
    layers: list[nn.Module] = [nn.Linear(cin, cout)]
    return layers + ([nn.BatchNorm1d(cout)] if norm else []) + [nn.ReLU(inplace=True), nn.Dropout(dropout)]


class CNNF(nn.Module):
    """CNN-F (Chatfield et al. 2014) as used by DVBPR, with the widths as parameters.

    conv1 11x11/4 -> pool, conv2 5x5 -> pool, conv3-5 3x3 -> pool, fc -> fc -> K. No LRN, as the
    original code. `small=True` keeps the shape but shrinks it for 64-96 px images on a CPU.
    `norm=True` adds BatchNorm after every conv and hidden fc: without it most units of the deep
    layers die and phi collapses to a few directions (docs/training.md). `norm_phi=True` also
    standardises phi itself (BatchNorm without affine): every one of its K dimensions keeps unit
    variance over the catalogue, so the dominant visual factor (colour) cannot drown the others.
    `texture=True` adds to phi a projection of the last conv maps averaged over the image: what
    local patterns occur, wherever they are (the fc layers see them tied to their position).
    `crop_head=True` adds the projection head of `crop_agreement_loss` (training only).
    """

    def __init__(
        self,
        dim: int,
        image_size: int,
        small: bool = False,
        dropout: float = 0.5,
        norm: bool = False,
        norm_phi: bool = False,
        texture: bool = False,
        crop_head: bool = False,
    ):
        super().__init__()
        if small:
            widths, k1, s1, fc = (16, 32, 64, 64, 64), 5, 2, 256
        else:
            widths, k1, s1, fc = (64, 256, 256, 256, 256), 11, 4, 4096
        c1, c2, c3, c4, c5 = widths
        self.features = nn.Sequential(
            *_conv(3, c1, k1, s1, norm),
            nn.MaxPool2d(2),
            *_conv(c1, c2, 5, 1, norm),
            nn.MaxPool2d(2),
            *_conv(c2, c3, 3, 1, norm),
            *_conv(c3, c4, 3, 1, norm),
            *_conv(c4, c5, 3, 1, norm),
            nn.MaxPool2d(2),
        )
        self.features.eval()
        with torch.no_grad():  # flattened size depends on the input resolution
            flat = self.features(torch.zeros(1, 3, image_size, image_size)).numel()
        self.features.train()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            *_fc(flat, fc, dropout, norm),
            *_fc(fc, fc, dropout, norm),
            nn.Linear(fc, dim),
            *([nn.BatchNorm1d(dim, affine=False)] if norm_phi else []),
        )
        self.texture = None
        if texture:
            self.texture = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(c5), nn.Linear(c5, dim))
        self.crop_head = None
        if crop_head:  # SimCLR's projection: the loss acts on its output, phi keeps the features
            self.crop_head = nn.Sequential(
                nn.Linear(c5, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Linear(128, 64)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.features(x)
        phi = self.classifier(maps)
        return phi if self.texture is None else phi + self.texture(maps)

    def crop_agreement_loss(
        self, images: torch.Tensor, temperature: float = 0.2, gather: RowGather | None = None
    ) -> torch.Tensor:
        """Two random crops of each image, half its side at its own scale and each with its own
        random hue, must find each other among the crops of the batch's other images (NT-Xent, as
        SimCLR) through the conv features averaged over the crop. Two crops of one item share its
        texture, not its silhouette or colour: the BPR loss alone teaches pattern only weakly
        (docs/training.md). The crops leave the BatchNorm running statistics alone: they are
        those of whole images, which is what the network sees when it serves. `gather`: see
        `nt_xent` (the crops of every process of a distributed run)."""
        if self.crop_head is None:
            raise TrainingError("this network has no crop head (ModelConfig.crop_head)")
        crops = torch.cat([random_hue(random_crops(images, images.shape[-1] // 2)) for _ in range(2)])
        with frozen_running_stats(self.features):
            pooled = self.features(crops).float().mean(dim=(2, 3))
        return nt_xent(F.normalize(self.crop_head(pooled), dim=1), temperature, gather)


RowGather = Callable[[torch.Tensor], tuple[torch.Tensor, int]]
"""Rows of every process stacked in rank order, and where this process's rows start."""


def nt_xent(z: torch.Tensor, temperature: float, gather: RowGather | None = None) -> torch.Tensor:
    """SimCLR's loss on unit rows z = [view 1 of n images; view 2 of the same n]: each row must
    pick its other view among all rows but itself, by cosine / temperature. With `gather`, the
    candidates are the rows of every process (`distributed.gather_rows`, whose backward returns
    each process the gradient all of them sent its rows), so a distributed run, its gradients
    averaged, trains as one process on the whole batch does."""
    everyone, start = gather(z) if gather is not None else (z, 0)
    rows = torch.arange(len(z), device=z.device)
    sim = (z @ everyone.T / temperature).index_put((rows, start + rows), torch.tensor(float("-inf"), device=z.device))
    partner = start + (rows + len(z) // 2) % len(z)
    return F.cross_entropy(sim, partner)


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of `module` normalise with their batch's statistics as in training but
    leave their running statistics as they are (momentum 0) until the block ends."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def random_hue(x: torch.Tensor) -> torch.Tensor:
    """Each image of a [-1, 1] RGB batch with its chroma turned by its own random angle in YIQ:
    luma and every edge stay, the hue becomes noise (white and grey stay put). The output keeps
    the input's dtype and memory format (channels-last on CUDA)."""
    rgb_to_yiq = torch.tensor(_RGB_TO_YIQ, device=x.device)  # float32 whatever x is: inv needs it
    angle = torch.rand(x.shape[0], device=x.device) * (2 * torch.pi)
    cos, sin = angle.cos(), angle.sin()
    rotate = torch.zeros(x.shape[0], 3, 3, device=x.device)
    rotate[:, 0, 0] = 1.0
    rotate[:, 1, 1], rotate[:, 1, 2], rotate[:, 2, 1], rotate[:, 2, 2] = cos, -sin, sin, cos
    transform = (torch.linalg.inv(rgb_to_yiq) @ rotate @ rgb_to_yiq).to(x.dtype)  # (B, 3, 3)
    # Colour maps act on [0, 1] intensities; the model's input is 2 * intensity - 1.
    out = torch.einsum("bij,bjhw->bihw", transform, (x + 1) / 2)
    return torch.empty_like(x).copy_(out.clamp(0.0, 1.0) * 2 - 1)


def random_flip_shift(x: torch.Tensor, max_shift: float = 0.125) -> torch.Tensor:
    """Light augmentation of a training batch: each image mirrored left-right with probability
    1/2 and moved by its own random offset of up to `max_shift` of its side in x and y, the
    uncovered border filled by repeating the edge pixels (white on the padded catalogue images).
    What an item looks like does not depend on where it sits in the frame; a CNN that sees every
    item at one place learns that place too (and overfits the few thousand images sooner)."""
    b, _, h, w = x.shape
    pad = max(1, round(max_shift * max(h, w)))
    flip = torch.rand(b, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate").to(x.dtype)
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    out = padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols]  # (B, H, W, C)
    return torch.empty_like(x).copy_(out.permute(0, 3, 1, 2))


def random_crops(x: torch.Tensor, side: int) -> torch.Tensor:
    """One random `side` x `side` crop of each image of a batch, at the image's own scale (a
    pattern keeps its period), its corner drawn so that the crop keeps 1/8 of the image's side
    clear of the border, where the padded catalogue images are mostly background."""
    b, c, h, w = x.shape
    margin_y, margin_x = min(h // 8, (h - side) // 2), min(w // 8, (w - side) // 2)
    dy = torch.randint(margin_y, h - side - margin_y + 1, (b,), device=x.device)
    dx = torch.randint(margin_x, w - side - margin_x + 1, (b,), device=x.device)
    rows = (dy[:, None] + torch.arange(side, device=x.device))[:, :, None]  # (B, side, 1)
    cols = (dx[:, None] + torch.arange(side, device=x.device))[:, None, :]  # (B, 1, side)
    out = x.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols]  # (B, side, side, C)
    layout = torch.channels_last if x.is_cuda else torch.contiguous_format  # as the CUDA path feeds the CNN
    return out.permute(0, 3, 1, 2).contiguous(memory_format=layout)


class ColourStream(nn.Module):
    """A learned colour histogram: per-pixel 1x1 convolutions (no spatial context, so no shape or
    pattern) averaged over the image, then projected to K."""

    def __init__(self, dim: int, width: int = 32):
        super().__init__()
        self.pixels = nn.Sequential(*_conv(3, width, 1), *_conv(width, width, 1))
        # Standardised over the batch so that the histogram learns as fast as the shape network's
        # normalised features (without it the colour taste came epochs late). Per image, not per
        # pixel: BatchNorm on the pixel maps cost as much as the whole CNN.
        self.norm = nn.BatchNorm1d(width)
        self.project = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A histogram needs no full resolution: 4x4 blocks cost 1/16 of the pixels, and a
        # pattern's second colour still shows in the mix.
        x = F.avg_pool2d(x, 4)
        return self.project(self.norm(self.pixels(x).mean(dim=(2, 3))))


class TwoStreamCNN(nn.Module):
    """phi(X) = shape(X) + colour(X): the shape network sees every training image with a random
    hue, so it cannot explain the users' colours and has to learn what colour does not explain
    (category, pattern, silhouette); the colour stream sees no spatial layout. With one network,
    colour, the strongest and easiest visual taste, takes the whole embedding (docs/training.md)."""

    def __init__(self, shape: nn.Module, dim: int):
        super().__init__()
        self.shape = shape
        self.colour = ColourStream(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shape(random_hue(x) if self.training else x) + self.colour(x)


def _alexnet(dim: int, dropout: float) -> nn.Module:
    from torchvision.models import alexnet

    net = alexnet(weights=None, dropout=dropout)  # untrained: nothing is downloaded
    net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, dim)
    return net


def build_cnn(cfg: ModelConfig) -> nn.Module:
    shape = _shape_cnn(cfg)
    return TwoStreamCNN(shape, cfg.dim) if cfg.colour_stream else shape


def _shape_cnn(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "alexnet":
        return _alexnet(cfg.dim, cfg.dropout)
    return CNNF(
        cfg.dim,
        cfg.image_size,
        small=cfg.arch == "cnnf-small",
        dropout=cfg.dropout,
        norm=cfg.norm != "none",
        norm_phi=cfg.norm == "batch+phi",
        texture=cfg.texture,
        crop_head=cfg.crop_head,
    )


def cold_item_bias(beta: torch.Tensor, cold_items: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The one cold-item bias rule. Items without a training interaction have an untrained beta_i:
    they get the mean bias of the warm items (0 when none is warm), as does a new item that has
    only an image. Returns (beta_i of every item with the cold ones replaced, that mean)."""
    if cold_items is None:
        return beta, beta.mean()
    warm = ~cold_items
    mean = beta[warm].mean() if bool(warm.any()) else beta.new_zeros(())
    return (torch.where(cold_items, mean, beta) if bool(cold_items.any()) else beta), mean


@dataclass(frozen=True)
class ServingFactors:
    """A model folded into factor matrices: score(u, i) = users[u] . items_t[:, i] + bias[i].

    The first `visual_dim` columns are the visual term: a new item with only an image scores
    users[:, :visual_dim] . phi + new_item_bias. Evaluation, the recommender and the baselines
    all score through this one rule (`DVBPR.serving_factors`, `BPRMF.serving_factors`).
    """

    users: torch.Tensor  # (n_users, D) float32
    # (D, n_items): a user's scores then stream through contiguous rows, twice as fast on the CPU
    # as the (n_items, D) layout
    items_t: torch.Tensor
    bias: torch.Tensor  # (n_items,)
    new_item_bias: torch.Tensor  # ()
    visual_dim: int

    @classmethod
    def build(
        cls,
        users: list[torch.Tensor],
        items: list[torch.Tensor],
        bias: torch.Tensor,
        new_item_bias: torch.Tensor,
        visual_dim: int,
    ) -> ServingFactors:
        """From the per-term user and item parts, (n_users, d) and (n_items, d) each."""
        return cls(
            torch.cat(users, 1).float().contiguous(),
            torch.cat(items, 1).float().T.contiguous(),
            bias.float(),
            new_item_bias.float(),
            visual_dim,
        )

    @property
    def device(self) -> torch.device:
        return self.users.device

    @torch.inference_mode()
    def scores(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_items) scores of the users given by index (a long tensor on `device`), written
        into `out` when given (fresh memory is slow to fault in: reuse a buffer for many calls)."""
        return torch.addmm(self.bias, self.users[users], self.items_t, out=out)

    @torch.inference_mode()
    def new_item_scores(self, phi: torch.Tensor) -> torch.Tensor:
        """(n_users,) scores of a new item from its visual features phi (K,) alone."""
        return self.users[:, : self.visual_dim] @ phi + self.new_item_bias


class DVBPR(nn.Module):
    """Visual term theta_u . phi(X_i) plus, by `terms`, gamma_u . gamma_i and beta_i."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.cnn = build_cnn(cfg)
        self.theta_users = nn.Embedding(cfg.n_users, cfg.dim)
        if cfg.uses_cf:
            self.gamma_users = nn.Embedding(cfg.n_users, cfg.cf_dim)
            self.gamma_items = nn.Embedding(cfg.n_items, cfg.cf_dim)
        if cfg.uses_bias:
            self.beta_items = nn.Embedding(cfg.n_items, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As the original code: Xavier weights and zero biases in the CNN, theta ~ U(0, 1) / 100.
        # theta_init="normal" centres theta: all-positive thetas pull every item's phi along the
        # same direction at the start, which feeds the collapse (docs/training.md).
        for m in self.cnn.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cfg.theta_init == "uniform":
            nn.init.uniform_(self.theta_users.weight, 0.0, 0.01)
        else:
            nn.init.normal_(self.theta_users.weight, std=0.01)
        if self.cfg.uses_cf:
            nn.init.normal_(self.gamma_users.weight, std=0.01)
            nn.init.normal_(self.gamma_items.weight, std=0.01)
        if self.cfg.uses_bias:
            nn.init.zeros_(self.beta_items.weight)

    @property
    def shape_cnn(self) -> nn.Module:
        """The `--arch` network: the shape stream of two streams, else the whole CNN."""
        return self.cnn.shape if isinstance(self.cnn, TwoStreamCNN) else self.cnn

    def crop_agreement_loss(self, images: torch.Tensor, gather: RowGather | None = None) -> torch.Tensor:
        """The shape network's `CNNF.crop_agreement_loss` on a batch of model-input images."""
        return self.shape_cnn.crop_agreement_loss(images, gather=gather)

    def cnn_weights(self) -> list[torch.Tensor]:
        """CNN weight tensors that take L2 regularisation (biases excluded, as the original)."""
        return [m.weight for m in self.cnn.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def score(self, users: torch.Tensor, items: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """x_ui for aligned (users, items) pairs, phi = phi(X_items) already computed (training;
        serving folds the same terms into `serving_factors`)."""
        x = (self.theta_users(users) * phi).sum(-1)
        if self.cfg.uses_cf:
            x = x + (self.gamma_users(users) * self.gamma_items(items)).sum(-1)
        if self.cfg.uses_bias:
            x = x + self.beta_items(items).squeeze(-1)
        return x

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """x_ui for every (user, item) pair, (len(users), len(items)), phi = phi(X_items)."""
        x = self.theta_users(users) @ phi.T
        if self.cfg.uses_cf:
            x = x + self.gamma_users(users) @ self.gamma_items(items).T
        if self.cfg.uses_bias:
            x = x + self.beta_items(items).squeeze(-1)[None, :]
        return x

    def forward(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, images: torch.Tensor, in_batch: bool = False
    ) -> torch.Tensor:
        """x_uij = x_ui - x_uj. `images` holds the positives' then the negatives' images (2B),
        so the CNN runs once over both halves (the siamese pair shares weights anyway).

        in_batch=False: one sampled j per (u, i), shape (B,). in_batch=True: the batch's sampled
        negatives are shared, every j a negative of every (u, i) of the batch, shape (B, B), column
        b being row b's own j (the caller masks pairs where j is one of u's positives)."""
        phi = self.cnn(images).float()
        phi_pos, phi_neg = phi.chunk(2)
        if in_batch:
            return self.score(users, pos, phi_pos)[:, None] - self.pair_scores(users, neg, phi_neg)
        return self.score(users, pos, phi_pos) - self.score(users, neg, phi_neg)

    def embedding_l2(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, l2_theta: float, l2_cf: float
    ) -> torch.Tensor:
        """L2 (sum of squares / 2, TF's l2_loss) on the batch's rows of theta, gamma and beta."""
        reg = l2_theta * 0.5 * self.theta_users(users).pow(2).sum()
        if self.cfg.uses_cf:
            reg = reg + l2_cf * 0.5 * (
                self.gamma_users(users).pow(2).sum()
                + self.gamma_items(pos).pow(2).sum()
                + self.gamma_items(neg).pow(2).sum()
            )
        if self.cfg.uses_bias:
            reg = reg + l2_cf * 0.5 * (self.beta_items(pos).pow(2).sum() + self.beta_items(neg).pow(2).sum())
        return reg

    def cnn_l2(self) -> torch.Tensor:
        """L2 (sum of squares / 2) on every CNN weight, biases excluded (as the original)."""
        return 0.5 * sum(w.pow(2).sum() for w in self.cnn_weights())

    @torch.inference_mode()
    def serving_factors(self, phi: torch.Tensor, cold_items: torch.Tensor | None = None) -> ServingFactors:
        """The model folded for serving and evaluation, phi = phi(X_i) of every item: users
        [theta_u, gamma_u], items [phi_i, gamma_i] and beta_i, by `terms`. Cold items (no
        training interaction) have untrained gamma_i and beta_i, so they are scored as a new
        image is: gamma_i = 0 and the mean bias of the warm items (`cold_item_bias`)."""
        users, items = [self.theta_users.weight], [phi]
        if self.cfg.uses_cf:
            gamma = self.gamma_items.weight
            users.append(self.gamma_users.weight)
            items.append(gamma if cold_items is None else gamma.masked_fill(cold_items[:, None], 0.0))
        if self.cfg.uses_bias:
            bias, new_item_bias = cold_item_bias(self.beta_items.weight.squeeze(-1), cold_items)
        else:
            bias, new_item_bias = phi.new_zeros(self.cfg.n_items), phi.new_zeros(())
        return ServingFactors.build(users, items, bias, new_item_bias, visual_dim=self.cfg.dim)


def bpr_loss(x_uij: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """-ln sigmoid(x_uij) summed over the pairs used: all of them, or where `keep` is True (in-batch
    negatives: every kept (u, i, j) counts as one BPR triplet). softplus(-x) is the stable form."""
    losses = F.softplus(-x_uij.float())
    return losses.sum() if keep is None else losses.masked_fill(~keep, 0.0).sum()
