"""Diffusion decoders: stock diffusers pipelines fed ``prompt_embeds`` from the output projection.

    StableDiffusionDecoder  images  (StableDiffusionPipeline)      condition [77, 768] / [77, 1024]
"""

from .base import DiffusionDecoder
from .image import StableDiffusionDecoder

__all__ = ["DiffusionDecoder", "StableDiffusionDecoder"]
