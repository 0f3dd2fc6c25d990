"""Sound through the stock ``AudioLDMPipeline``: a CLAP text embedding [512] conditions a latent diffusion over
mel spectrograms, and the pipeline's HiFi-GAN vocoder turns the mel into a 16 kHz waveform.

AudioLDM feeds the embedding as the UNet's class embedding (not cross-attention), so the condition is one
vector per signal. The stock pipeline reads its text encoder's dtype even when given embeddings, so an
AudioLDM folder must keep ``text_encoder/`` and ``tokenizer/`` (the published ones do).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import AudioLDMPipeline, UNet2DConditionModel
from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

from anymodal.errors import ConfigError
from anymodal.media import Audio, Modality

from ..options import merge_spec
from .base import DiffusionDecoder
from .tiny import tiny_roberta_tokenizer, tiny_scheduler, tiny_unet_layout, tiny_vae

TINY_AUDIO = {
    "block_out_channels": [32, 64],  # UNet and VAE widths; the VAE downsamples by 2 ** (len - 1)
    "layers_per_block": 1,
    "clap_dim": 32,  # condition width (CLAP's 512 in AudioLDM)
    "num_mel_bins": 8,  # the vocoder's input mel bins (64 in AudioLDM)
    "mel_frames": 64,  # default length in mel frames (1024 in AudioLDM: 10.24 s)
    "sampling_rate": 16000,
    "upsample_rates": [4, 4],  # vocoder hop: waveform samples per mel frame is their product
    "seed": 0,
}


class AudioLDMDecoder(DiffusionDecoder):
    """``[B, clap_dim]`` CLAP embeddings -> B mono waveforms at the vocoder's rate, in one pipeline call."""

    modality = Modality.AUDIO
    pipeline_class = AudioLDMPipeline
    default_checkpoint = "cvssp/audioldm-s-full-v2"
    optional_components = ()
    default_steps = 10
    default_guidance_scale = 2.5

    def _condition_shape(self, num_tokens: int | None) -> tuple[int, ...]:
        if num_tokens is not None:
            raise ConfigError("AudioLDM takes one CLAP vector per signal; num_tokens does not apply")
        return (self.pipeline.unet.config.projection_class_embeddings_input_dim,)

    def _embed_text(self, texts: list[str]) -> torch.Tensor:
        # the pipeline's own CLAP encoding: projected text embedding, L2-normalised
        return self.pipeline._encode_prompt(texts, self.device, 1, False)  # [B, clap_dim]

    @property
    def sample_rate(self) -> int:
        return self.pipeline.vocoder.config.sampling_rate

    @property
    def min_seconds(self) -> float:
        """The shortest clip the pipeline makes: one latent row of mel frames."""
        vocoder = self.pipeline.vocoder.config
        return float(np.prod(vocoder.upsample_rates)) / vocoder.sampling_rate * self.pipeline.vae_scale_factor

    @classmethod
    def from_config(cls, spec: dict[str, Any] | None = None, progress: bool = False) -> "AudioLDMDecoder":
        """A tiny random pipeline built the way diffusers' fast tests do; ``spec`` overrides ``TINY_AUDIO``."""
        spec = merge_spec(TINY_AUDIO, spec, "tiny AudioLDM")
        channels = spec["block_out_channels"]
        torch.manual_seed(spec["seed"])
        unet = UNet2DConditionModel(
            **tiny_unet_layout(channels, spec["layers_per_block"], spec["mel_frames"]), cross_attention_dim=channels,
            # AudioLDM: the CLAP vector is projected and concatenated to the time embedding
            class_embed_type="simple_projection", projection_class_embeddings_input_dim=spec["clap_dim"],
            class_embeddings_concat=True)
        vae = tiny_vae(channels, spec["num_mel_bins"], in_channels=1)
        tokenizer = tiny_roberta_tokenizer()
        text_encoder = ClapTextModelWithProjection(ClapTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, projection_dim=spec["clap_dim"], bos_token_id=0, eos_token_id=2, pad_token_id=1))
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=spec["num_mel_bins"], sampling_rate=spec["sampling_rate"], upsample_initial_channel=16,
            upsample_rates=spec["upsample_rates"], upsample_kernel_sizes=[2 * r for r in spec["upsample_rates"]],
            resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], normalize_before=False))
        pipeline = AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                    scheduler=tiny_scheduler(), vocoder=vocoder)
        return cls(pipeline, progress=progress)

    @torch.inference_mode()
    def decode(self, condition: torch.Tensor, *, steps: int | None = None, guidance_scale: float | None = None,
               seed: int | None = None, generator: torch.Generator | None = None,
               audio_length_in_s: float | None = None, negative_condition: torch.Tensor | None = None) -> list[Audio]:
        """``condition`` ``[B, clap_dim]`` -> B clips ``[1, round(audio_length_in_s * sample_rate)]`` in [-1, 1].
        Defaults: 10 steps, guidance 2.5, the pipeline's native length (5.12 s for AudioLDM). The length must be
        at least ``min_seconds``."""
        if audio_length_in_s is not None and (not isinstance(audio_length_in_s, (int, float))
                                              or audio_length_in_s < self.min_seconds):
            raise ConfigError(f"audio_length_in_s must be a number >= {self.min_seconds} s for this pipeline, "
                              f"got {audio_length_in_s!r}")
        output = self._generate(condition, negative_condition, steps, guidance_scale, seed, generator,
                                audio_length_in_s=audio_length_in_s)
        waveforms = self._check_finite(output.audios, "audio")  # [B, N]
        return [Audio(waveform=w[None].clamp(-1, 1), sample_rate=self.sample_rate) for w in waveforms]
