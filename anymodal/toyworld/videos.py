"""Videos of the world: the object moves across a 32x32 canvas for 8 frames, a pixel per frame, in its
direction. Small enough that a 2D UNet over the frames stacked as channels and pixel-unshuffled (96x16x16) can
learn them on a CPU (TOYWORLD-NOTES.md: a UNet3D is 23x slower). At 16x16 a small object was 2 pixels wide:
even a judge trained on real videos read its shape only 90% of the time, and captions of videos failed on it.
Objects are as big as in images (the biggest path, 22 + 7 pixels, still fits): drawn 0.8x as big, the toy
ImageBind matched a video to its caption 94.9% of the time (97.3% now) and the video decoder judged 85.2% (94.9%).
"""

from __future__ import annotations

import random

import torch

from ..media import Video
from .images import IMAGE_SIZE, RADIUS, paint, shape_mask
from .world import Thing

VIDEO_SIZE, FRAMES, FPS = 32, 8, 8.0
STEP = 1.0  # pixels per frame
MOTION = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}  # (dy, dx)


def render_video(thing: Thing, rng: random.Random, size: int = VIDEO_SIZE, frames: int = FRAMES) -> Video:
    """[T, 3, size, size]: the object starts where its whole path stays inside the canvas."""
    low, high = RADIUS[thing.size]
    r = rng.uniform(low, high) * size / IMAGE_SIZE
    dy, dx = MOTION[thing.direction]
    travel = STEP * (frames - 1)

    def start(d: float) -> float:  # the start coordinate along one axis, so that start + d * travel stays inside
        lo, hi = r + 0.5 + max(0.0, -d * travel), size - r - 0.5 - max(0.0, d * travel)
        return rng.uniform(lo, max(lo, hi))

    cy, cx = start(dy), start(dx)
    shade_seed = rng.randrange(2 ** 31)  # one shade and one background for the whole clip
    clip = [paint(shape_mask(thing.shape, cy + dy * STEP * t, cx + dx * STEP * t, r, size), thing.colour,
                  random.Random(shade_seed)) for t in range(frames)]
    return Video(torch.stack(clip), fps=FPS)  # [T, 3, H, W]
