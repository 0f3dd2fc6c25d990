"""The toy world's vocabulary: every object is a shape x colour x size x direction of motion, and every
caption, question and spoken sentence is made of these words. Sampling is seeded; the three splits draw
from disjoint seeds so that no test object is a copy of a training one.

    Thing("circle", "red", "small", "left").caption  ->  "a small red circle"
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from ..errors import ConfigError

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "big")
DIRECTIONS = ("left", "right", "up", "down")
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "direction": DIRECTIONS}
RGB = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.1, 0.2, 0.9), "yellow": (0.9, 0.9, 0.1)}

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Thing:
    """One object of the world. Images and sounds show shape, colour and size; videos add the direction."""

    shape: str
    colour: str
    size: str
    direction: str

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"

    @property
    def motion_caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} moving {self.direction}"

    def attribute(self, name: str) -> str:
        return getattr(self, name)


ALL_THINGS = [Thing(*t) for t in itertools.product(SHAPES, COLOURS, SIZES, DIRECTIONS)]  # 128


def split_seed(seed: int, split: str) -> int:
    """The seed of one split: seeds of different splits (and different ``seed`` values) never collide."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {SPLITS}")
    return seed * len(SPLITS) + SPLITS.index(split)


def sample_things(n: int, rng: random.Random) -> list[Thing]:
    """``n`` things, balanced: whole shuffled passes over all 128 combinations, then a shuffled part of one."""
    things: list[Thing] = []
    while len(things) < n:
        things += rng.sample(ALL_THINGS, len(ALL_THINGS))
    return things[:n]
