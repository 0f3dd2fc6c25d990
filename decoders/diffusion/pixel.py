"""Tiny pixel-space diffusion (no VAE) for the toy world: images, videos and sounds from ``prompt_embeds``.

The UNet runs on the media itself, pixel-unshuffled so that it sees few, deep positions (TOYWORLD-NOTES.md:
a free stand-in for a VAE, 4x cheaper than raw 32x32 pixels):

    modality  media                        UNet sample (unshuffle)
    image     [3, 32, 32] in [0, 1]        [12, 16, 16]  (2)
    video     [8, 3, 16, 16] in [0, 1]     [24, 16, 16]  (1: the 8 frames stacked as channels; larger frames,
                                           like the world's 32x32, are area-downsampled for training: unshuffled
                                           32x32 frames are 96 channels, more than a 32-channel first UNet level
                                           can carry, and samples stayed noise)
    audio     [1, 16000] 16 kHz            log-mel [1, 128 bins, 64 frames] -> [16, 32, 16]  (4); back to a
                                           waveform by spectral peaks + torchaudio's GriffinLim

``PixelDiffusionPipeline`` is a diffusers ``DiffusionPipeline`` (unet, DDIM scheduler, CLIP tokenizer and text
encoder) that saves and loads with ``save_pretrained`` / ``from_pretrained``; ``PixelDiffusionDecoder`` is
its anymodal decoder, loaded and checked by ``DiffusionDecoder``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from anymodal.errors import ConfigError
from anymodal.media import Audio, Image, Media, Modality, Video

from ..options import merge_spec
from .base import DiffusionDecoder
from .tiny import tiny_clip_text, tiny_unet_layout

# media size and unshuffle factor per modality: (media channels, height, width, unshuffle). Audio needs 128
# mel bins: with fewer, the judge hears the smeared partials of a pure tone as vibrato (a circle as a cross)
LAYOUTS = {"image": (3, 32, 32, 2), "video": (3 * 8, 16, 16, 1), "audio": (1, 128, 64, 4)}
# peak-normalised log-mel values of the world's sounds span about [-5.5, 11]: this maps them into [-1, 1]
LOG_MEL_CENTER, LOG_MEL_SCALE = 3.0, 8.5
# the quietest spectral level, relative to the clip's loudest, that is treated as a partial rather than noise
PARTIAL_FLOOR = 1e-3

TINY_PIXEL = {
    "modality": "image",  # image | video | audio
    "block_out_channels": [32, 64, 64],  # one UNet level each (16x16, 8x8, 4x4 for the image)
    "layers_per_block": 1,
    "attention_levels": 1,  # how many of the lowest levels cross-attend to the condition (1: only 4x4)
    # the timestep (+ pooled condition) embedding scales and shifts each ResNet block's features (FiLM), rather
    # than only shifting them: judged image attributes 34% -> 45% at 1500 steps
    "resnet_time_scale_shift": "scale_shift",
    "cross_attention_dim": 32,  # condition width
    "num_tokens": 8,  # condition length: the tokenizer pads / truncates to it
    "words": [],  # whole-word tokens (the toy world's vocabulary); other text is tokenized byte by byte
    "guidance_scale": 3.0,  # the pipeline's default classifier-free guidance
    # what the UNet predicts: "v_prediction" (velocity) or "epsilon" (noise). Epsilon is ill-conditioned at the
    # noisiest steps, where pixel space has no VAE to hide it: it left tinted backgrounds (image shape 53%)
    "prediction_type": "v_prediction",
    # the condition, attention-pooled, is also added to the timestep embedding (diffusers' addition_embed_type
    # "text"), so that every ResNet block at every resolution sees it, not only the 4x4 cross-attention
    "pooled_condition": True,
    "beta_schedule": "squaredcos_cap_v2",  # the noise schedule (diffusers' names)
    "seed": 0,
}


@dataclass
class PixelDiffusionOutput(BaseOutput):
    """``media``: images [B, 3, H, W] / videos [B, T, 3, H, W] in [0, 1], or waveforms [B, 1, N] in [-1, 1]."""

    media: torch.Tensor


def _pair(size: int | list[int]) -> tuple[int, int]:
    """A UNet's ``sample_size``: one side (square) or [height, width]."""
    return (size, size) if isinstance(size, int) else tuple(size)


class PixelDiffusionPipeline(DiffusionPipeline):
    """Text-conditioned DDIM sampling straight in (unshuffled) media space, with classifier-free guidance."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet: UNet2DConditionModel, scheduler: DDIMScheduler, tokenizer: CLIPTokenizer,
                 text_encoder: CLIPTextModel, modality: str = "image", unshuffle: int = 2, frames: int = 8,
                 fps: float = 8.0, sample_rate: int = 16_000, seconds: float = 1.0, n_fft: int = 1024,
                 hop_length: int = 252, guidance_scale: float = 3.0):
        super().__init__()
        if modality not in LAYOUTS:
            raise ConfigError(f"unknown modality {modality!r} for a pixel diffusion pipeline; use one of {sorted(LAYOUTS)}")
        self.register_modules(unet=unet, scheduler=scheduler, tokenizer=tokenizer, text_encoder=text_encoder)
        self.register_to_config(modality=modality, unshuffle=unshuffle, frames=frames, fps=fps, sample_rate=sample_rate,
                                seconds=seconds, n_fft=n_fft, hop_length=hop_length, guidance_scale=guidance_scale)
        height, width = _pair(unet.config.sample_size)
        self.sample_shape = (unet.config.in_channels, height, width)  # what the UNet denoises
        self.media_shape = (unet.config.in_channels // unshuffle ** 2, height * unshuffle, width * unshuffle)
        if modality == "audio":  # the log-mel "image": bins x frames of a clip of ``seconds``
            bins, frames_per_clip = self.media_shape[1:]
            self.num_samples = round(seconds * sample_rate)
            if 1 + self.num_samples // hop_length != frames_per_clip:
                raise ConfigError(f"{seconds} s at hop {hop_length} gives {1 + self.num_samples // hop_length} mel "
                                  f"frames, but the UNet is {frames_per_clip} frames wide; change hop_length or seconds")
            self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=bins)
            filters = self.mel.mel_scale.fb  # [frequencies, bins]
            self.unmel = filters / filters.sum(1, keepdim=True).clamp_min(1e-8)  # each bin spread over its band
            self.griffin_lim = torchaudio.transforms.GriffinLim(n_fft, hop_length=hop_length, length=self.num_samples)

    # ---- media <-> UNet samples ------------------------------------------------------------------------

    def encode_media(self, media: torch.Tensor) -> torch.Tensor:
        """The training target: images [B, 3, H, W] / videos [B, T, 3, H, W] in [0, 1] (area-resized to the
        pipeline's media size), or waveforms [B, N] -> UNet samples [B, C, h, w] in [-1, 1]."""
        if self.config.modality == "audio":
            waves = F.pad(media, (0, max(0, self.num_samples - media.shape[-1])))[:, :self.num_samples]  # [B, N]
            waves = waves / waves.abs().amax(-1, keepdim=True).clamp_min(1e-4)  # loudness is not an attribute
            log_mel = (self.mel(waves) + 1e-5).log()  # [B, bins, frames]
            x = ((log_mel - LOG_MEL_CENTER) / LOG_MEL_SCALE)[:, None].clamp(-1, 1)  # [B, 1, bins, frames]
        else:
            x = media.flatten(1, -3) * 2 - 1  # video: frames stacked as channels [B, T * 3, H, W]
            if x.shape[-2:] != self.media_shape[-2:]:
                x = F.interpolate(x, size=self.media_shape[-2:], mode="area")
        return F.pixel_unshuffle(x, self.config.unshuffle)  # [B, C * r * r, H / r, W / r]

    def decode_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """The inverse of ``encode_media`` (audio: a waveform [B, 1, N] with peak 0.5, phase by Griffin-Lim)."""
        x = F.pixel_shuffle(sample.float(), self.config.unshuffle).clamp(-1, 1)  # [B, C, H, W]
        if self.config.modality == "image":
            return (x + 1) / 2
        if self.config.modality == "video":
            return ((x + 1) / 2).unflatten(1, (self.config.frames, 3))  # [B, T, 3, H, W]
        mel_power = (x[:, 0].cpu() * LOG_MEL_SCALE + LOG_MEL_CENTER).exp()  # [B, bins, frames]
        waves = self.griffin_lim(self._partials(self.unmel @ mel_power))  # [B, N]
        return (0.5 * waves / waves.abs().amax(-1, keepdim=True).clamp_min(1e-8))[:, None]

    @staticmethod
    def _partials(power: torch.Tensor) -> torch.Tensor:
        """Power spectra [B, frequencies, frames] spread from mel bins -> only their local peaks (over 5
        frequencies) where the clip is loud: the world's sounds are sums of partials, and Griffin-Lim turns a
        smeared band into a warble. Quiet parts (noise, gaps between beeps) stay as they are."""
        peaks = power == F.max_pool1d(power.transpose(1, 2), 5, 1, 2).transpose(1, 2)  # pooled over frequency
        loud = power > PARTIAL_FLOOR * power.amax((1, 2), keepdim=True)
        return torch.where(loud & ~peaks, torch.zeros_like(power), power)

    # ---- text ---------------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: list[str], device: torch.device, num_images_per_prompt: int = 1,
                      do_classifier_free_guidance: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As Stable Diffusion's: (prompt_embeds [B * n, tokens, width], the embedding of "" likewise when guided)."""
        def embed(texts: list[str]) -> torch.Tensor:
            ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            return self.text_encoder(ids.to(device))[0].repeat_interleave(num_images_per_prompt, 0)

        prompt_embeds = embed(list(prompt))  # [B * n, tokens, width]
        return prompt_embeds, embed([""] * len(prompt)) if do_classifier_free_guidance else None

    # ---- sampling -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor | None = None,
                 num_inference_steps: int = 20, guidance_scale: float | None = None,
                 generator: torch.Generator | None = None, output_type: str = "pt",
                 return_dict: bool = True) -> PixelDiffusionOutput | tuple:
        """``prompt_embeds`` [B, tokens, width] -> B media (see ``PixelDiffusionOutput``); guidance above 1 runs
        the UNet on [negative, prompt] (default negative: the embedding of "")."""
        if output_type != "pt":
            raise ConfigError(f"output_type must be 'pt' (media tensors), got {output_type!r}")
        guidance_scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        guided = guidance_scale > 1
        batch, dtype = prompt_embeds.shape[0], self.unet.dtype
        condition = prompt_embeds.to(self.device, dtype)
        if guided:
            if negative_prompt_embeds is None:
                negative_prompt_embeds = self.encode_prompt([""], self.device)[0].expand_as(condition)
            condition = torch.cat([negative_prompt_embeds.to(self.device, dtype), condition])  # [2B, tokens, width]
        sample = randn_tensor((batch, *self.sample_shape), generator=generator, device=self.device, dtype=dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        sample = sample * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(torch.cat([sample] * 2) if guided else sample, t)
            noise = self.unet(model_input, t, encoder_hidden_states=condition).sample  # [B or 2B, C, h, w]
            if guided:
                unconditional, conditional = noise.chunk(2)
                noise = unconditional + guidance_scale * (conditional - unconditional)
            sample = self.scheduler.step(noise, t, sample, generator=generator).prev_sample
        media = self.decode_sample(sample)
        self.maybe_free_model_hooks()
        return PixelDiffusionOutput(media=media) if return_dict else (media,)


class PixelDiffusionDecoder(DiffusionDecoder):
    """``[B, tokens, width]`` prompt embeddings -> B images, videos or sounds (the pipeline's modality)."""

    pipeline_class = PixelDiffusionPipeline
    default_checkpoint = "runs/toyworld/decoder_image"
    optional_components = ()  # the toy world's decoders always carry their text encoder (NExT-GPT's target)
    default_steps = 20

    def __init__(self, pipeline: PixelDiffusionPipeline, num_tokens: int | None = None, progress: bool = True):
        if pipeline.dtype == torch.float16 and pipeline.device.type == "cpu":  # folders store float16 to stay small
            pipeline.unet.float()  # Module.float, not .to(dtype): diffusers warns on every .to(dtype)
            pipeline.text_encoder.float()
        super().__init__(pipeline, num_tokens, progress)
        self.modality = Modality(pipeline.config.modality)
        self.default_guidance_scale = pipeline.config.guidance_scale  # the best one measured when it was trained

    @classmethod
    def _download_hint(cls) -> str:
        return ("Train one with anymodal.toyworld.decoder.train_decoder(kind, out) (the toy-world recipe does) "
                "and pass its folder.")

    @classmethod
    def from_config(cls, spec: dict[str, Any] | None = None, progress: bool = False) -> "PixelDiffusionDecoder":
        """A random (untrained) pipeline; ``spec`` overrides ``TINY_PIXEL``."""
        spec = merge_spec(TINY_PIXEL, spec, "pixel diffusion")
        if spec["modality"] not in LAYOUTS:
            raise ConfigError(f"unknown modality {spec['modality']!r}; use one of {sorted(LAYOUTS)}")
        channels, height, width, unshuffle = LAYOUTS[spec["modality"]]
        torch.manual_seed(spec["seed"])
        layout = tiny_unet_layout(spec["block_out_channels"], spec["layers_per_block"], height)
        layout.update(sample_size=(height // unshuffle, width // unshuffle), in_channels=channels * unshuffle ** 2,
                      out_channels=channels * unshuffle ** 2,  # tiny_unet_layout assumes a square VAE latent
                      resnet_time_scale_shift=spec["resnet_time_scale_shift"])
        levels, attended = len(spec["block_out_channels"]), spec["attention_levels"]
        if not 1 <= attended <= levels:
            raise ConfigError(f"attention_levels must be 1..{levels} (the UNet's levels), got {attended}")
        layout.update(down_block_types=["DownBlock2D"] * (levels - attended) + ["CrossAttnDownBlock2D"] * attended,
                      up_block_types=["CrossAttnUpBlock2D"] * attended + ["UpBlock2D"] * (levels - attended))
        if spec["pooled_condition"]:
            layout.update(addition_embed_type="text", addition_embed_type_num_heads=4)
        unet = UNet2DConditionModel(**layout, cross_attention_dim=spec["cross_attention_dim"])
        tokenizer, text_encoder = tiny_clip_text(spec["cross_attention_dim"], spec["num_tokens"], spec["words"])
        # "trailing" DDIM steps start at the last training timestep; the default "leading" ones left visible noise
        # at 20 steps (judged colour 55% instead of 94% for the same weights)
        scheduler = DDIMScheduler(timestep_spacing="trailing", prediction_type=spec["prediction_type"],
                                  beta_schedule=spec["beta_schedule"])
        pipeline = PixelDiffusionPipeline(unet=unet, scheduler=scheduler, tokenizer=tokenizer, text_encoder=text_encoder,
                                          modality=spec["modality"], unshuffle=unshuffle,
                                          guidance_scale=spec["guidance_scale"])
        return cls(pipeline, progress=progress)

    @torch.inference_mode()
    def decode(self, condition: torch.Tensor, *, steps: int | None = None, guidance_scale: float | None = None,
               seed: int | None = None, generator: torch.Generator | None = None,
               negative_condition: torch.Tensor | None = None) -> list[Media]:
        """``condition`` ``[B, *condition_shape]`` -> B images [3, 32, 32], videos [8, 3, 16, 16] at 8 fps or
        sounds [1, 16000] at 16 kHz, like the toy world's own. Defaults: 20 DDIM steps and the guidance the
        decoder was trained to use."""
        output = self._generate(condition, negative_condition, steps, guidance_scale, seed, generator)
        media = self._check_finite(output.media, self.modality.value)
        config = self.pipeline.config
        if self.modality == Modality.IMAGE:
            return [Image(pixels=pixels) for pixels in media]
        if self.modality == Modality.VIDEO:
            return [Video(frames=frames, fps=float(config.fps)) for frames in media]
        return [Audio(waveform=waveform, sample_rate=config.sample_rate) for waveform in media]
