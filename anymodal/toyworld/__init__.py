"""The toy world: a seeded synthetic multimodal world (images, sounds, videos, a toy spoken language),
its tasks as training conversations, and judges + metrics that score a model on it. See docs/toyworld.md."""

from .render import KINDS, WorldItem, world_items
from .world import ALL_THINGS, ATTRIBUTES, SPLITS, Thing

__all__ = ["ALL_THINGS", "ATTRIBUTES", "KINDS", "SPLITS", "Thing", "WorldItem", "world_items"]
