"""Diffusion decoders: stock diffusers pipelines fed ``prompt_embeds`` from the output projection.

    decoder                 modality  pipeline                 condition (real checkpoints)
    StableDiffusionDecoder  image     StableDiffusionPipeline  [77, 768] SD 1.x, [77, 1024] SD 2.x
    AudioLDMDecoder         audio     AudioLDMPipeline         [512] CLAP (AudioLDM s/m/l)
    TextToVideoDecoder      video     TextToVideoSDPipeline    [77, 1024] ModelScope t2v, Zeroscope
"""

from .audio import AudioLDMDecoder
from .base import DiffusionDecoder
from .image import StableDiffusionDecoder
from .video import TextToVideoDecoder

__all__ = ["AudioLDMDecoder", "DiffusionDecoder", "StableDiffusionDecoder", "TextToVideoDecoder"]
