"""CLIP vision encoder through transformers: pooled embedding or patch tokens from a chosen layer.

LLaVA feeds the penultimate layer's patch tokens (``feature="patch", layer=-2``); FROMAGe-style retrieval
uses the pooled embedding (``feature="pooled"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.interfaces import MediaBatch
from anymodal.media import Image, Media, Modality

FEATURES = ("pooled", "patch")


class CLIPVisionEncoder(nn.Module):
    modalities = (Modality.IMAGE,)

    def __init__(self, model: CLIPVisionModel, processor: CLIPImageProcessor, feature: str = "pooled", layer: int = -1):
        super().__init__()
        if feature not in FEATURES:
            raise ConfigError(f"CLIP feature must be one of {FEATURES}, got {feature!r}")
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.feature, self.layer = feature, layer
        config = model.config
        self.embed_dim = config.hidden_size
        self.tokens_per_item = 1 if feature == "pooled" else (config.image_size // config.patch_size) ** 2

    @classmethod
    def from_pretrained(cls, name_or_path: str, feature: str = "pooled", layer: int = -1, **load_options: Any):
        """A hub id (``openai/clip-vit-large-patch14``) or a local folder in the transformers layout; a full
        ``CLIPModel`` checkpoint works, only its vision tower is loaded."""
        try:
            model = CLIPVisionModel.from_pretrained(name_or_path, **load_options)
            processor = CLIPImageProcessor.from_pretrained(name_or_path)
        except OSError as e:
            raise CheckpointError(f"cannot load CLIP from {name_or_path!r}: {e}. Download the checkpoint "
                                  f"(e.g. `hf download openai/clip-vit-large-patch14`) or pass a local folder") from None
        return cls(model, processor, feature, layer)

    @classmethod
    def from_config(cls, config: dict[str, Any] | CLIPVisionConfig, feature: str = "pooled", layer: int = -1):
        """Random weights from a config, for tests and the toy world."""
        config = config if isinstance(config, CLIPVisionConfig) else CLIPVisionConfig(**config)
        size = config.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return cls(CLIPVisionModel(config), processor, feature, layer)

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)

    def preprocess(self, items: list[Media]) -> MediaBatch:
        wrong = [type(item).__name__ for item in items if not isinstance(item, Image)]
        if wrong:
            raise MediaError(f"the CLIP vision encoder takes images, got {wrong}")
        pixel_values = self.processor(images=[item.pixels for item in items], do_rescale=False,
                                      return_tensors="pt").pixel_values  # [B, 3, H, W]
        return MediaBatch(Modality.IMAGE, {"pixel_values": pixel_values})

    @torch.inference_mode()
    def encode(self, batch: MediaBatch) -> torch.Tensor:
        param = next(self.model.parameters())
        pixel_values = batch.tensors["pixel_values"].to(param.device, param.dtype)
        out = self.model(pixel_values=pixel_values, output_hidden_states=self.layer != -1)
        if self.feature == "pooled":
            return out.pooler_output[:, None]  # [B, 1, D]
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]  # [B, 1 + P, D]
        return hidden[:, 1:]  # [B, P, D]: patch tokens without CLS, as LLaVA
