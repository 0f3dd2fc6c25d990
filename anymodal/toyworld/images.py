"""Images of the world: one object on a grey background, 32x32 RGB, at a jittered place.

``shape_mask`` draws any shape at any (float) centre and radius; videos reuse it frame by frame.
"""

from __future__ import annotations

import random

import torch

from ..media import Image
from .world import RGB, Thing

IMAGE_SIZE = 32
RADIUS = {"small": (5.0, 6.5), "big": (9.0, 11.0)}  # pixels at 32x32; scaled for other sizes
BACKGROUND = 0.5


def shape_mask(shape: str, cy: float, cx: float, r: float, size: int) -> torch.Tensor:
    """Bool [size, size]: where ``shape`` of radius ``r`` centred at (cy, cx) covers the canvas."""
    ys, xs = torch.meshgrid(torch.arange(size).float() + 0.5, torch.arange(size).float() + 0.5, indexing="ij")
    dy, dx = ys - cy, xs - cx
    if shape == "circle":
        return dy ** 2 + dx ** 2 <= r ** 2
    if shape == "square":
        return (dy.abs() <= r * 0.8) & (dx.abs() <= r * 0.8)
    if shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= r * 0.8) & (dx.abs() <= (dy + r) * 0.55)
    if shape == "cross":
        arm = max(r * 0.3, 0.8)
        return ((dy.abs() <= arm) & (dx.abs() <= r)) | ((dx.abs() <= arm) & (dy.abs() <= r))
    raise ValueError(f"unknown shape {shape!r}")


def paint(mask: torch.Tensor, colour: str, rng: random.Random) -> torch.Tensor:
    """[3, H, W] in [0, 1]: grey with a little noise, the mask filled with ``colour`` (brightness jittered)."""
    generator = torch.Generator().manual_seed(rng.randrange(2 ** 31))
    pixels = BACKGROUND + 0.03 * torch.randn((3, *mask.shape), generator=generator)
    shade = rng.uniform(0.9, 1.1)
    pixels[:, mask] = (torch.tensor(RGB[colour]) * shade)[:, None]
    return pixels.clamp(0, 1)


def render_image(thing: Thing, rng: random.Random, size: int = IMAGE_SIZE) -> Image:
    """The object at a random place (fully inside the canvas) with a random radius for its size class."""
    low, high = RADIUS[thing.size]
    r = rng.uniform(low, high) * size / IMAGE_SIZE
    cy, cx = rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1)
    return Image(paint(shape_mask(thing.shape, cy, cx, r, size), thing.colour, rng))
