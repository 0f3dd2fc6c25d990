"""HuBERT through transformers: frame features from a chosen layer, and speech-to-units (SpeechGPT style).

Audio is downmixed to mono and resampled to 16 kHz; HuBERT gives one frame per 20 ms (320 samples), each
seeing a 25 ms window (400 samples). Mixed-length batches are padded and masked so that every item gets
exactly the features it gets alone (see ``_real_steps_group_norm`` for the one place transformers' padded path
differs). Unit logic (k-means, assignment, dedup) is feature-agnostic and lives in ``anymodal.speech_units``.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import nn
from tqdm.auto import tqdm
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from anymodal.errors import ConfigError, MediaError
from anymodal.interfaces import MediaBatch
from anymodal.media import Audio, Media, Modality
from anymodal.speech_units import UnitQuantizer, dedup

from .pretrained import load_model

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
FEATURES = ("frames", "mean")


class HubertEncoder(nn.Module):
    """Audio -> ``[B, T, D]`` hidden states of layer ``layer`` (0 = after the positional convolution, -1 = last).

    - ``feature="frames"``: one token per 20 ms frame; T varies with the clip (``tokens_per_item`` is 0),
      padded frames of shorter items are zero and ``token_lengths(batch)`` gives each item's real T
    - ``feature="mean"``: the mean over each item's real frames, T=1
    """

    modalities = (Modality.AUDIO,)
    default_checkpoint = "facebook/hubert-base-ls960"

    def __init__(self, model: HubertModel, feature_extractor: Wav2Vec2FeatureExtractor, layer: int = -1,
                 feature: str = "frames"):
        super().__init__()
        if feature not in FEATURES:
            raise ConfigError(f"HuBERT feature must be one of {FEATURES}, got {feature!r}")
        num_states = model.config.num_hidden_layers + 1
        if not -num_states <= layer < num_states:
            raise ConfigError(f"HuBERT layer={layer} is out of range: this model has hidden states "
                              f"{-num_states}..{num_states - 1}")
        self.model = model.eval().requires_grad_(False)
        self.feature_extractor = feature_extractor
        self.layer = layer % num_states  # stored non-negative: it names the layer in saved quantizers
        self.feature = feature
        self.embed_dim = model.config.hidden_size
        self.tokens_per_item = 1 if feature == "mean" else 0  # 0: varies with the clip's length
        self.window = _receptive_field(model.config)  # samples one frame sees (400 for HuBERT base/large)

    @classmethod
    def from_pretrained(cls, name_or_path: str, layer: int = -1, feature: str = "frames",
                        **load_options: Any) -> "HubertEncoder":
        """A hub id (``facebook/hubert-base-ls960``) or a local folder in the transformers layout (config.json,
        model.safetensors, optionally preprocessor_config.json)."""
        model = load_model(HubertModel, name_or_path, "HuBERT", cls.default_checkpoint, **load_options)
        try:
            feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(name_or_path)
        except OSError:
            feature_extractor = _default_feature_extractor(model.config)
            log.info("%s has no preprocessor_config.json; using fairseq's default (normalize=%s)", name_or_path,
                     feature_extractor.do_normalize)
        return cls(model, feature_extractor, layer, feature)

    @classmethod
    def from_config(cls, config: dict[str, Any] | HubertConfig, layer: int = -1,
                    feature: str = "frames") -> "HubertEncoder":
        """Random weights from a config, for tests and the toy world."""
        config = config if isinstance(config, HubertConfig) else HubertConfig(**config)
        return cls(HubertModel(config), _default_feature_extractor(config), layer, feature)

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)
        self.feature_extractor.save_pretrained(directory)

    # ----------------------------------------------------------------------------------------- encode
    def preprocess(self, items: list[Media]) -> MediaBatch:
        """Mono 16 kHz waveforms, padded: ``input_values`` [B, N] and ``attention_mask`` [B, N] (1 = real)."""
        if not items:
            raise MediaError("HuBERT preprocess needs at least one audio item")
        waveforms = [self._mono_16k(item) for item in items]
        inputs = self.feature_extractor([w.numpy() for w in waveforms], sampling_rate=SAMPLE_RATE, padding=True,
                                        return_attention_mask=True, return_tensors="pt")
        return MediaBatch(Modality.AUDIO, {"input_values": inputs.input_values,  # [B, N]
                                           "attention_mask": inputs.attention_mask})  # [B, N]

    @torch.inference_mode()
    def encode(self, batch: MediaBatch) -> torch.Tensor:
        hidden = self._hidden_states(batch, self.layer)  # [B, T, D], padded frames zero
        if self.feature == "frames":
            return hidden
        lengths = self._frame_lengths(batch.tensors["attention_mask"].sum(dim=1)).to(hidden.device)  # [B]
        return (hidden.sum(dim=1) / lengths[:, None].to(hidden.dtype))[:, None]  # [B, 1, D]

    def token_lengths(self, batch: MediaBatch) -> torch.Tensor:
        """Each item's real number of tokens in ``encode(batch)``: LongTensor [B]."""
        if self.feature == "mean":
            return torch.ones(len(batch), dtype=torch.long)
        return self._frame_lengths(batch.tensors["attention_mask"].sum(dim=1))

    def frame_features(self, items: list[Audio], layer: int | None = None) -> list[torch.Tensor]:
        """Each item's real frames of ``layer`` (default: the encoder's), unpadded: a list of [T_i, D]."""
        batch = self.preprocess(items)
        hidden = self._hidden_states(batch, self.layer if layer is None else layer)  # [B, T, D]
        lengths = self._frame_lengths(batch.tensors["attention_mask"].sum(dim=1))
        return [h[:n] for h, n in zip(hidden, lengths.tolist())]

    # ------------------------------------------------------------------------------------------ units
    def fit_units(self, items: list[Audio], k: int, layer: int | None = None, seed: int = 0,
                  batch_size: int = 16) -> UnitQuantizer:
        """K-means speech units on the frames of ``items`` (SpeechGPT: mHuBERT layer 11, k=1000; GSLM: HuBERT
        base layer 6, k=50..200)."""
        layer = self.layer if layer is None else layer % (self.model.config.num_hidden_layers + 1)
        frames = [f for start in tqdm(range(0, len(items), batch_size), desc="HuBERT frames", unit="batch")
                  for f in self.frame_features(items[start:start + batch_size], layer)]
        return UnitQuantizer.fit(torch.cat(frames), k, seed=seed, source="hubert", layer=layer)

    def batch_units(self, items: list[Audio], quantizer: UnitQuantizer) -> list[list[int]]:
        """Deduplicated unit ids per item, from the layer the quantizer was fit on."""
        if quantizer.source != "hubert" or quantizer.dim != self.embed_dim:
            raise ConfigError(f"this quantizer was fit on {quantizer.dim}-dim {quantizer.source!r} features, not on "
                              f"this {self.embed_dim}-dim HuBERT; fit one with HubertEncoder.fit_units")
        features = self.frame_features(items, quantizer.layer)
        return [dedup(quantizer.assign(f)) for f in features]

    def units(self, audio: Audio, quantizer: UnitQuantizer) -> list[int]:
        """One clip -> deduplicated unit ids, e.g. [12, 7, 12, 40]."""
        return self.batch_units([audio], quantizer)[0]

    # -------------------------------------------------------------------------------------- internals
    def _mono_16k(self, item: Media) -> torch.Tensor:
        """[C, N] at any rate -> [N] mono at 16 kHz, checked long enough for one frame."""
        name = item.source or "audio item"
        if not isinstance(item, Audio):
            raise MediaError(f"{name}: the HuBERT encoder takes audio, got {type(item).__name__}")
        waveform = item.waveform.mean(dim=0)  # [N]: stereo -> mono
        if item.sample_rate != SAMPLE_RATE:
            log.info("%s: resampling from %d Hz to %d Hz for HuBERT", name, item.sample_rate, SAMPLE_RATE)
            waveform = torchaudio.functional.resample(waveform, item.sample_rate, SAMPLE_RATE)
        if waveform.numel() < self.window:
            raise MediaError(f"{name}: {waveform.numel() / SAMPLE_RATE * 1000:.1f} ms of audio is shorter than "
                             f"one HuBERT window ({self.window} samples = {self.window / 16:.0f} ms at 16 kHz); "
                             f"pad the clip with silence or leave it out")
        if not torch.isfinite(waveform).all():
            raise MediaError(f"{name}: the waveform holds NaN or inf samples; re-export the file")
        return waveform

    def _frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            sample_lengths = torch.div(sample_lengths - kernel, stride, rounding_mode="floor") + 1
        return sample_lengths.long()

    @torch.inference_mode()
    def _hidden_states(self, batch: MediaBatch, layer: int) -> torch.Tensor:
        """Hidden states of ``layer`` [B, T, D], frames past each item's end set to zero."""
        param = next(self.model.parameters())
        input_values = batch.tensors["input_values"].to(param.device, param.dtype)  # [B, N]
        attention_mask = batch.tensors["attention_mask"].to(param.device)  # [B, N]
        with _real_steps_group_norm(self.model, attention_mask.sum(dim=1)):
            out = self.model(input_values, attention_mask=attention_mask, output_hidden_states=True)
        # the last layer is the model's output: for the stable-layer-norm models (HuBERT large) that includes
        # the encoder's final LayerNorm, which hidden_states[-1] lacks
        hidden = out.last_hidden_state if layer == self.model.config.num_hidden_layers else out.hidden_states[layer]
        frames = torch.arange(hidden.shape[1], device=hidden.device)  # [T]
        real = frames[None] < self._frame_lengths(attention_mask.sum(dim=1))[:, None]  # [B, T]
        return hidden * real[..., None].to(hidden.dtype)


@contextmanager
def _real_steps_group_norm(model: HubertModel, sample_lengths: torch.Tensor):
    """HuBERT base normalises its first conv's output over all time steps, padding included, so a padded item
    would differ from the same item alone. For one forward pass, swap that GroupNorm for one over each item's
    real steps. Models with per-step LayerNorms (HuBERT large) need nothing."""
    first = model.feature_extractor.conv_layers[0]
    norm = getattr(first, "layer_norm", None)
    if not isinstance(norm, nn.GroupNorm):
        yield
        return
    lengths = torch.div(sample_lengths - first.conv.kernel_size[0], first.conv.stride[0],
                        rounding_mode="floor") + 1  # [B] real steps after the first conv
    first.layer_norm = _RealStepsGroupNorm(norm, lengths)
    try:
        yield
    finally:
        first.layer_norm = norm


class _RealStepsGroupNorm(nn.Module):
    """``norm`` (a GroupNorm) computed over each item's first ``lengths[b]`` time steps only."""

    def __init__(self, norm: nn.GroupNorm, lengths: torch.Tensor):
        super().__init__()
        self.norm, self.lengths = norm, lengths

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]: the first conv's output, used only here
        batch, channels, steps = x.shape
        per_group = channels // self.norm.num_groups
        real = torch.arange(steps, device=x.device)[None] < self.lengths[:, None]  # [B, T]
        x = x.mul_(real[:, None].to(x.dtype))  # padding out of the sums; in place: this tensor is ours
        groups = x.view(batch, self.norm.num_groups, -1)  # [B, G, C/G * T]
        count = self.lengths[:, None].float() * per_group  # [B, 1] real values per group
        # statistics in float32 whatever the model's dtype, and E[x^2] - mean^2: two fast reductions instead
        # of a second pass over the centred values
        mean = groups.sum(dim=-1, dtype=torch.float32) / count  # [B, G]
        mean_square = torch.linalg.vector_norm(groups, dim=-1, dtype=torch.float32).square() / count  # [B, G]
        var = (mean_square - mean.square()).clamp_min(0)  # [B, G]
        scale = torch.rsqrt(var + self.norm.eps).repeat_interleave(per_group, dim=1) * self.norm.weight  # [B, C]
        shift = self.norm.bias - mean.repeat_interleave(per_group, dim=1) * scale  # [B, C]
        return x.mul_(scale[..., None].to(x.dtype)).add_(shift[..., None].to(x.dtype))  # [B, C, T]


def _receptive_field(config: HubertConfig) -> int:
    """Input samples behind one output frame of the conv feature encoder."""
    field = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        field = (field - 1) * stride + kernel
    return field


def _default_feature_extractor(config: HubertConfig) -> Wav2Vec2FeatureExtractor:
    # fairseq normalises the waveform for the layer-norm models (HuBERT large / x-large), not for base
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                    do_normalize=config.feat_extract_norm == "layer", return_attention_mask=True)
