"""Training recipes on accelerate: stages (what trains + the loss), data, the loop. See recipes/README.md and the Training guide in README.md."""

from .data import Collator, Sample, TrainBatch, read_data
from .recipe import Recipe, load_recipe
from .stages import PRESETS, ModelStage, Stage
from .trainer import Trainer

__all__ = ["Collator", "ModelStage", "PRESETS", "Recipe", "Sample", "Stage", "TrainBatch", "Trainer", "load_recipe",
           "read_data"]
