"""Images through the stock ``StableDiffusionPipeline`` (SD 1.x: prompt_embeds [77, 768]; SD 2.x: [77, 1024])."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from anymodal.media import Image, Modality

from ..options import merge_spec
from .base import DiffusionDecoder
from .tiny import tiny_latent_parts, tiny_scheduler

TINY_IMAGE = {
    "sample_size": 32,  # pixels per side of the default output
    "block_out_channels": [32, 64],  # UNet and VAE widths; the VAE downsamples by 2 ** (len - 1)
    "layers_per_block": 1,
    "cross_attention_dim": 32,  # condition width (768 in SD 1.x)
    "num_tokens": 77,  # condition length (the tokenizer's context)
    "text_encoder": True,  # False: save a pipeline without tokenizer / text encoder
    "seed": 0,
}


class StableDiffusionDecoder(DiffusionDecoder):
    """``[B, tokens, width]`` prompt embeddings -> B images, in one pipeline call."""

    modality = Modality.IMAGE
    pipeline_class = StableDiffusionPipeline
    default_checkpoint = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    optional_components = ("tokenizer", "text_encoder", "safety_checker", "feature_extractor")
    # anymodal never loads the NSFW safety checker: its images go back to the model, not straight to a user
    load_defaults = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    default_steps = 50
    default_guidance_scale = 7.5

    @classmethod
    def from_config(cls, spec: dict[str, Any] | None = None, progress: bool = False) -> "StableDiffusionDecoder":
        """A tiny random pipeline built the way diffusers' fast tests do; ``spec`` overrides ``TINY_IMAGE``."""
        spec = merge_spec(TINY_IMAGE, spec, "tiny Stable Diffusion")
        pipeline = StableDiffusionPipeline(**tiny_latent_parts(spec), scheduler=tiny_scheduler(), safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)
        return cls(pipeline, num_tokens=None if spec["text_encoder"] else spec["num_tokens"], progress=progress)

    @torch.inference_mode()
    def decode(self, condition: torch.Tensor, *, steps: int | None = None, guidance_scale: float | None = None,
               seed: int | None = None, generator: torch.Generator | None = None, height: int | None = None,
               width: int | None = None, negative_condition: torch.Tensor | None = None) -> list[Image]:
        """``condition`` ``[B, *condition_shape]`` -> B images ``[3, height, width]`` in [0, 1]. Defaults: the
        pipeline's 50 steps, guidance 7.5, and its native size (512 px for SD 1.5). ``seed`` makes the result
        reproducible; ``negative_condition`` ``[*condition_shape]`` or ``[B, ...]`` replaces the embedding of ""."""
        self._check_size(height, width)
        output = self._generate(condition, negative_condition, steps, guidance_scale, seed, generator,
                                height=height, width=width)
        images = self._check_finite(output.images, "images")  # [B, 3, H, W] in [0, 1]
        return [Image(pixels=pixels) for pixels in images]
