"""CLIP through transformers: image features (pooled, patch tokens from a chosen layer, or the joint-space
embedding) and the text tower in the same joint space.

LLaVA feeds the penultimate layer's patch tokens (``feature="patch", layer=-2``); FROMAGe-style retrieval
uses the pooled embedding (``feature="pooled"``); text -> image search compares ``feature="embeds"`` with
``encode_text`` (both are CLIP's projected joint-space embeddings, ``get_image_features`` /
``get_text_features``, not normalised).

The published layout is a full ``CLIPModel`` folder (config.json, model.safetensors,
preprocessor_config.json, tokenizer files), e.g. ``openai/clip-vit-large-patch14``. A vision-only folder
(``CLIPVisionModel``) also loads; it has no text tower and no ``embeds``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn
from transformers import (AutoConfig, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, CLIPVisionConfig,
                          CLIPVisionModel, CLIPVisionModelWithProjection, PreTrainedTokenizerBase)

from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.interfaces import MediaBatch
from anymodal.media import Image, Media, Modality

from .pretrained import cannot_load, load_model

log = logging.getLogger(__name__)

FEATURES = ("pooled", "patch", "embeds")

# CLIPModel (both towers) and CLIPVisionModelWithProjection hold a CLIPVisionModel as `.vision_model` and add
# `.visual_projection`; a bare CLIPVisionModel is the vision tower itself.
CLIPVisionTower = Union[CLIPModel, CLIPVisionModelWithProjection, CLIPVisionModel]


class CLIPVisionEncoder(nn.Module):
    """Images -> ``[B, T, D]``:

    - ``feature="pooled"``: the final layer's pooled CLS token, T=1, D = vision hidden size
    - ``feature="patch"``: patch tokens (CLS dropped, as LLaVA) of hidden layer ``layer``, T = (size/patch)^2
    - ``feature="embeds"``: the projected joint-space embedding (``visual_projection``), T=1, D = projection_dim

    ``layer`` indexes transformers' ``hidden_states`` (0 = embeddings, -1 = last, -2 = penultimate); it only
    applies to ``patch``. With a text tower, ``encode_text`` gives ``[B, projection_dim]`` in the same space.
    """

    modalities = (Modality.IMAGE,)
    default_checkpoint = "openai/clip-vit-large-patch14"

    def __init__(self, model: CLIPVisionTower, processor: CLIPImageProcessor, feature: str = "pooled", layer: int = -1,
                 tokenizer: PreTrainedTokenizerBase | None = None):
        super().__init__()
        vision_config = model.config.vision_config if isinstance(model, CLIPModel) else model.config
        if feature not in FEATURES:
            raise ConfigError(f"CLIP feature must be one of {FEATURES}, got {feature!r}")
        if feature == "embeds" and not hasattr(model, "visual_projection"):
            raise ConfigError("CLIP feature 'embeds' needs the visual projection: load a full CLIPModel checkpoint "
                              "(e.g. openai/clip-vit-large-patch14), not a vision-only one")
        if feature != "patch" and layer != -1:
            raise ConfigError(f"CLIP layer={layer} only applies to feature='patch'; {feature!r} always comes from "
                              f"the last layer. Use feature='patch' or drop the layer option")
        num_states = vision_config.num_hidden_layers + 1  # the embeddings, then one per layer
        if not -num_states <= layer < num_states:
            raise ConfigError(f"CLIP layer={layer} is out of range: this model has hidden states "
                              f"{-num_states}..{num_states - 1}")
        if isinstance(model, CLIPModel) and tokenizer is None:
            raise ConfigError("a CLIPModel with its text tower needs a tokenizer; pass tokenizer=CLIPTokenizer(...)")
        self.model = model.eval().requires_grad_(False)
        self.processor, self.tokenizer = processor, tokenizer
        self.feature, self.layer = feature, layer
        self.embed_dim = model.config.projection_dim if feature == "embeds" else vision_config.hidden_size
        self.tokens_per_item = 1 if feature != "patch" else (vision_config.image_size // vision_config.patch_size) ** 2

    @classmethod
    def from_pretrained(cls, name_or_path: str, feature: str = "pooled", layer: int = -1, text: bool = True,
                        **load_options: Any) -> "CLIPVisionEncoder":
        """A hub id (``openai/clip-vit-large-patch14``) or a local folder in the transformers layout. A full
        ``CLIPModel`` folder loads both towers and the tokenizer (``text=False``: the vision tower and its
        projection only, to save memory); a vision-only folder loads the vision tower."""
        try:
            config = AutoConfig.from_pretrained(name_or_path)
            processor = CLIPImageProcessor.from_pretrained(name_or_path)
            tokenizer = CLIPTokenizer.from_pretrained(name_or_path) if text and isinstance(config, CLIPConfig) else None
        except (OSError, ValueError) as e:
            raise cannot_load("CLIP", name_or_path, cls.default_checkpoint, e) from None
        if tokenizer is not None and len(tokenizer) <= len(tokenizer.all_special_tokens):
            # transformers builds an empty tokenizer when the files are absent: never pair it with the text tower
            log.info("%s has no tokenizer files: loading CLIP's vision tower only (no encode_text)", name_or_path)
            tokenizer = None
        if isinstance(config, CLIPConfig) and tokenizer is not None:
            model_class = CLIPModel
        elif isinstance(config, CLIPConfig):
            # older configs give the projection width only at the top level
            model_class = CLIPVisionModelWithProjection
            config.vision_config.projection_dim = config.projection_dim
            config = config.vision_config
        elif isinstance(config, CLIPVisionConfig):
            model_class = CLIPVisionModel
        else:
            raise CheckpointError(f"{name_or_path!r} holds a {config.model_type!r} model, not CLIP; pass a "
                                  f"CLIPModel folder or hub id such as {cls.default_checkpoint}")
        model = load_model(model_class, name_or_path, "CLIP", cls.default_checkpoint, config=config, **load_options)
        return cls(model, processor, feature, layer, tokenizer)

    @classmethod
    def from_config(cls, config: dict[str, Any] | CLIPVisionConfig | CLIPConfig, feature: str = "pooled",
                    layer: int = -1, tokenizer: PreTrainedTokenizerBase | None = None) -> "CLIPVisionEncoder":
        """Random weights from a config, for tests and the toy world. A ``CLIPConfig`` builds both towers (pass
        its ``tokenizer``); a ``CLIPVisionConfig`` or a dict of its fields builds the vision tower only."""
        if isinstance(config, CLIPConfig):
            model, vision_config = CLIPModel(config), config.vision_config
        else:
            vision_config = config if isinstance(config, CLIPVisionConfig) else CLIPVisionConfig(**config)
            model = CLIPVisionModel(vision_config)
        size = vision_config.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return cls(model, processor, feature, layer, tokenizer)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the published layout: model weights + config, image processor, tokenizer (if any)."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)

    def preprocess(self, items: list[Media]) -> MediaBatch:
        wrong = [type(item).__name__ for item in items if not isinstance(item, Image)]
        if not items or wrong:
            raise MediaError(f"the CLIP vision encoder takes a non-empty list of images, got {wrong or 'none'}")
        pixel_values = self.processor(images=[item.pixels for item in items], do_rescale=False,
                                      return_tensors="pt").pixel_values  # [B, 3, H, W]
        return MediaBatch(Modality.IMAGE, {"pixel_values": pixel_values})

    @torch.inference_mode()
    def encode(self, batch: MediaBatch) -> torch.Tensor:
        param = next(self.model.parameters())
        pixel_values = batch.tensors["pixel_values"].to(param.device, param.dtype)
        vision = getattr(self.model, "vision_model", self.model)  # the CLIPVisionModel inside, or the model itself
        out = vision(pixel_values=pixel_values, output_hidden_states=self.layer != -1)
        if self.feature == "pooled":
            return out.pooler_output[:, None]  # [B, 1, D]
        if self.feature == "embeds":
            return self.model.visual_projection(out.pooler_output)[:, None]  # [B, 1, projection_dim]
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]  # [B, 1 + P, D]
        return hidden[:, 1:]  # [B, P, D]: patch tokens without CLS, as LLaVA

    @torch.inference_mode()
    def encode_text(self, texts: list[str], normalize: bool = False) -> torch.Tensor:
        """Texts -> ``[B, projection_dim]`` in the joint space of ``feature="embeds"`` (CLIP's
        ``get_text_features``). Texts longer than the model's context (77 tokens for OpenAI CLIP) are truncated.
        ``normalize=True`` returns unit vectors, ready for cosine / inner-product search."""
        if not isinstance(self.model, CLIPModel):
            raise ConfigError("this CLIP encoder has no text tower: load a full CLIPModel checkpoint that has its "
                              "tokenizer files (tokenizer.json, or vocab.json + merges.txt) with text=True")
        if not texts or not all(isinstance(t, str) for t in texts):
            raise MediaError(f"encode_text needs a non-empty list of strings, got {texts!r:.80}")
        param = next(self.model.parameters())
        max_length = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out = self.model.text_model(input_ids=tokens.input_ids.to(param.device),
                                    attention_mask=tokens.attention_mask.to(param.device))
        embeds = self.model.text_projection(out.pooler_output)  # [B, projection_dim]
        return nn.functional.normalize(embeds, dim=-1) if normalize else embeds
