"""Video through the stock ``TextToVideoSDPipeline`` (ModelScope text-to-video, Zeroscope): CLIP prompt
embeddings [77, 1024] condition a 3D UNet over per-frame SD latents."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import TextToVideoSDPipeline

from anymodal.errors import ConfigError
from anymodal.media import Modality, Video

from ..options import merge_spec
from .base import DiffusionDecoder
from .tiny import tiny_latent_parts, tiny_scheduler

TINY_VIDEO = {
    "sample_size": 32,  # pixels per side of the default output
    "block_out_channels": [16, 32],  # UNet and VAE widths; the VAE downsamples by 2 ** (len - 1)
    "layers_per_block": 1,
    "cross_attention_dim": 32,  # condition width (1024 in ModelScope / Zeroscope)
    "num_tokens": 77,
    "text_encoder": True,  # False: save a pipeline without tokenizer / text encoder
    "seed": 0,
}


class TextToVideoDecoder(DiffusionDecoder):
    """``[B, tokens, width]`` prompt embeddings -> B videos, in one pipeline call."""

    modality = Modality.VIDEO
    pipeline_class = TextToVideoSDPipeline
    default_checkpoint = "cerspense/zeroscope_v2_576w"
    default_steps = 50
    default_guidance_scale = 9.0

    @classmethod
    def from_config(cls, spec: dict[str, Any] | None = None, progress: bool = False) -> "TextToVideoDecoder":
        """A tiny random pipeline built the way diffusers' fast tests do; ``spec`` overrides ``TINY_VIDEO``."""
        spec = merge_spec(TINY_VIDEO, spec, "tiny text-to-video")
        pipeline = TextToVideoSDPipeline(**tiny_latent_parts(spec, "3D"), scheduler=tiny_scheduler())
        return cls(pipeline, num_tokens=None if spec["text_encoder"] else spec["num_tokens"], progress=progress)

    @torch.inference_mode()
    def decode(self, condition: torch.Tensor, *, steps: int | None = None, guidance_scale: float | None = None,
               seed: int | None = None, generator: torch.Generator | None = None, height: int | None = None,
               width: int | None = None, num_frames: int = 16, fps: float = 8.0,
               negative_condition: torch.Tensor | None = None) -> list[Video]:
        """``condition`` ``[B, *condition_shape]`` -> B videos ``[num_frames, 3, height, width]`` in [0, 1], tagged
        with ``fps`` (the pipeline has no clock; ModelScope / Zeroscope clips are usually shown at 8 fps).
        Defaults: 50 steps, guidance 9.0, 16 frames, the pipeline's native size (576x320 for Zeroscope 576w
        needs ``height=320, width=576``)."""
        self._check_size(height, width)
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ConfigError(f"num_frames must be a positive integer, got {num_frames!r}")
        if not isinstance(fps, (int, float)) or fps <= 0:
            raise ConfigError(f"fps must be a positive number, got {fps!r}")
        output = self._generate(condition, negative_condition, steps, guidance_scale, seed, generator,
                                height=height, width=width, num_frames=num_frames)
        videos = self._check_finite(output.frames, "frames")  # [B, T, 3, H, W] in [0, 1]
        return [Video(frames=frames, fps=float(fps)) for frames in videos]
