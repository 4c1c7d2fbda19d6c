"""Visual explanations: where in an image a user's visual score theta_u . phi(X) comes from.

The map is gradient x (input - blank), per pixel and summed over the colour channels: the
first-order share of each pixel in the difference between the image's visual score and that
of a blank white canvas, which is what `images.load_image` pads every image with (the model's
"nothing here"). Plain gradient x input would measure against the input 0, a mid-grey canvas
that means nothing to the model. Its positive part is what raises the score; pixels that are
white contribute nothing, whatever the network.

One forward and one backward pass through the CNN in eval mode, for any architecture (CNN-F,
AlexNet, the two-stream network): no hook into the model. A batch of images is explained in one
pass too, each image's map its own (in eval mode no image affects another's features).

Why this map: on the default dataset, whose garment silhouettes the generator knows
(`synth.silhouettes`), it passes both sanity checks of Adebayo et al. ("Sanity checks for
saliency maps", 2018) that tests/test_explain.py runs on the shipped model: it changes completely
when the CNN's weights are re-initialised (rank correlation near 0), and most of its mass lies on
the garment. Grad-CAM on the last convolutional layer, tried first, put only about half of its
mass there (its cells are 8 pixels wide at 64 px) and so did gradient x input against grey.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .images import to_model_input
from .model import DVBPR


@dataclass(frozen=True)
class Explanation:
    """What raises one user's visual score of one image, pixel by pixel."""

    heatmap: np.ndarray  # float32 (size, size) >= 0, aligned with `pixels`: score units per pixel
    visual_score: float  # theta_u . phi(X)
    pixels: np.ndarray  # uint8 (size, size, 3): the image as the model sees it

    @property
    def attribution(self) -> float:
        """The heatmap's total: the first-order gain of the visual score over a blank canvas
        that the pixels raising it account for."""
        return float(self.heatmap.sum())


def explain_pixels(model: DVBPR, theta: torch.Tensor, pixels: np.ndarray) -> list[Explanation]:
    """Explanations of preprocessed images (uint8 (N, size, size, 3)) for one user's theta (K,),
    in one forward and one backward pass. `model` is expected in eval mode."""
    device = theta.device
    rows = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    x = to_model_input(rows).requires_grad_(True)
    with torch.enable_grad():
        scores = model.cnn(x).float() @ theta.detach().float()
        (grad,) = torch.autograd.grad(scores.sum(), x)
    # (x - 1): the blank canvas is white, 1.0 in the model's [-1, 1] scale
    maps = (grad * (x.detach() - 1.0)).sum(dim=1).clamp_(min=0.0).cpu().numpy().astype(np.float32)
    return [
        Explanation(heatmap, float(score), np.asarray(image))
        for heatmap, score, image in zip(maps, scores.detach().cpu().tolist(), pixels)
    ]


# A dark-to-hot colour ramp (black, purple, red, orange, yellow), for the overlay.
_RAMP = np.array([[0, 0, 0], [88, 28, 135], [220, 38, 38], [249, 115, 22], [253, 224, 71]], dtype=np.float32)


def overlay(explanation: Explanation, size: int | None = None) -> np.ndarray:
    """The heatmap over the image as uint8 (size, size, 3) RGB (default: the image's own size):
    the image dimmed, hot colours blended in where the map is high. A per-pixel gradient is
    speckled, so the map is smoothed for showing (a Gaussian of 1/48 of the side) and scaled to
    its 99.5th percentile, so that a few hot pixels do not wash out the rest."""
    pixels = explanation.pixels
    size = size or pixels.shape[0]
    heat = _smooth(explanation.heatmap, explanation.heatmap.shape[0] / 48)
    heat = np.asarray(Image.fromarray(heat).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    image = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    top = float(np.percentile(heat, 99.5)) or float(heat.max())  # the max for a map of a few pixels
    t = np.clip(heat / top, 0.0, 1.0) ** 0.8 if top > 0 else np.zeros_like(heat)
    colours = np.stack([np.interp(t, np.linspace(0, 1, len(_RAMP)), _RAMP[:, c]) for c in range(3)], axis=-1)
    alpha = (0.8 * t)[..., None]
    dimmed = 0.35 * 255 + 0.65 * image  # pale, so the heat colours stand out from the garment's
    return np.clip(dimmed * (1 - alpha) + colours * alpha, 0, 255).astype(np.uint8)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """A 2-D Gaussian blur (separable, zero beyond the edges)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    rows = np.apply_along_axis(np.convolve, 0, values, kernel, mode="same")
    return np.apply_along_axis(np.convolve, 1, rows, kernel, mode="same").astype(np.float32)
