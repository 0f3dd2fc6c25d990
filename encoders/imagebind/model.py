"""ImageBind: six modalities, one embedding space (Girdhar et al., 2023), written anew for anymodal.

Each modality runs ``modality_preprocessors`` (tokens) -> ``modality_trunks`` (transformer) ->
``modality_heads`` (pool + project to ``out_embed_dim``) -> ``modality_postprocessors`` (unit norm and,
except vision, a fixed or learned temperature). The module tree and parameter names are the published
checkpoint's, so ``imagebind_huge.pth`` loads with ``strict=True`` and no renaming; the constructor takes
the reference keyword arguments and ``forward`` the reference ``{modality: tensor}`` dict.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import torch
from torch import nn

from anymodal.errors import ConfigError, MediaError

from .layers import EOSHead, Trunk, cls_head, postprocessor
from .tokenizers import ImageToClip, IMUTokenizer, PatchStem, PatchTokenizer, TextTokenizer

ModalityType = SimpleNamespace(VISION="vision", TEXT="text", AUDIO="audio", THERMAL="thermal", DEPTH="depth",
                               IMU="imu")

IMAGE_SIZE = 224
TEXT_CONTEXT_LENGTH = 77
TEXT_VOCAB_SIZE = 49408  # OpenAI CLIP BPE
IMU_CHANNELS, IMU_SAMPLES = 6, 2000  # accelerometer + gyroscope xyz, 10 s at 200 Hz

# imagebind_huge: the published checkpoint's spec (everything else keeps the ImageBindModel defaults)
HUGE = dict(vision_embed_dim=1280, vision_num_blocks=32, vision_num_heads=16, text_embed_dim=1024,
            text_num_blocks=24, text_num_heads=16, out_embed_dim=1024, audio_drop_path=0.1, imu_drop_path=0.7)

# tests and the toy world: the same structure at width 32, one block per tower (1.8M values, mostly text vocab)
TINY = dict(out_embed_dim=32, vision_embed_dim=32, vision_num_blocks=1, vision_num_heads=2, audio_embed_dim=32,
            audio_num_blocks=1, audio_num_heads=2, text_embed_dim=32, text_num_blocks=1, text_num_heads=2,
            depth_embed_dim=32, depth_num_blocks=1, depth_num_heads=2, thermal_embed_dim=32, thermal_num_blocks=1,
            thermal_num_heads=2, imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=2)

# each modality's temperature after normalisation (text's is learned); vision has none
LOGIT_SCALES = {"vision": None, "text": 1 / 0.07, "audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}


def _conv_stem(in_channels: int, dim: int, kernel_size: int, stride: int) -> PatchStem:
    conv = nn.Conv2d(in_channels, dim, kernel_size=kernel_size, stride=stride, bias=False)
    return PatchStem(conv, nn.LayerNorm(dim))


class ImageBindModel(nn.Module):
    """The full six-modality model. Keyword arguments and their defaults are the reference's; the huge
    checkpoint uses ``HUGE`` on top of them (see ``imagebind_huge``). ``config`` holds every argument.

    ``image_size`` is ours (the reference fixes 224; it comes last so that positional calls stay the
    reference's): the side of the square images, video frames, depth and thermal maps the model is built
    for. Their learned position grids follow it, so a tiny model can take 32x32 images with
    ``kernel_size=(2, 4, 4)``; ``ImageBindEncoder.preprocess`` resizes to it."""

    def __init__(self, video_frames=2, kernel_size=(2, 14, 14), audio_kernel_size=16, audio_stride=10,
                 out_embed_dim=768, vision_embed_dim=1024, vision_num_blocks=24, vision_num_heads=16,
                 audio_embed_dim=768, audio_num_blocks=12, audio_num_heads=12, audio_num_mel_bins=128,
                 audio_target_len=204, audio_drop_path=0.1, text_embed_dim=768, text_num_blocks=12,
                 text_num_heads=12, depth_embed_dim=384, depth_kernel_size=16, depth_num_blocks=12,
                 depth_num_heads=8, depth_drop_path=0.0, thermal_embed_dim=768, thermal_kernel_size=16,
                 thermal_num_blocks=12, thermal_num_heads=12, thermal_drop_path=0.0, imu_embed_dim=512,
                 imu_kernel_size=8, imu_num_blocks=6, imu_num_heads=8, imu_drop_path=0.7, image_size=IMAGE_SIZE):
        super().__init__()
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.config["kernel_size"] = tuple(kernel_size)
        V, T, A, D, TH, I = "vision", "text", "audio", "depth", "thermal", "imu"
        dims = {V: vision_embed_dim, T: text_embed_dim, A: audio_embed_dim, D: depth_embed_dim,
                TH: thermal_embed_dim, I: imu_embed_dim}

        vision_stem = PatchStem(nn.Sequential(
            ImageToClip(video_frames),
            nn.Conv3d(3, vision_embed_dim, kernel_size=kernel_size, stride=kernel_size, bias=False)))
        self.modality_preprocessors = nn.ModuleDict({
            V: PatchTokenizer(V, vision_stem, (3, video_frames, image_size, image_size)),
            T: TextTokenizer(TEXT_VOCAB_SIZE, TEXT_CONTEXT_LENGTH, text_embed_dim),
            A: PatchTokenizer(A, _conv_stem(1, audio_embed_dim, audio_kernel_size, audio_stride),
                              (1, audio_num_mel_bins, audio_target_len)),
            D: PatchTokenizer(D, _conv_stem(1, depth_embed_dim, depth_kernel_size, depth_kernel_size),
                              (1, image_size, image_size), stem_name="depth_stem"),
            TH: PatchTokenizer(TH, _conv_stem(1, thermal_embed_dim, thermal_kernel_size, thermal_kernel_size),
                               (1, image_size, image_size)),
            I: IMUTokenizer(imu_embed_dim, imu_kernel_size, IMU_CHANNELS, IMU_SAMPLES),
        })
        # (blocks, heads, layer norm before the trunk, learned extra key/value, stochastic depth)
        trunks = {V: (vision_num_blocks, vision_num_heads, True, False, 0.0),
                  T: (text_num_blocks, text_num_heads, False, False, 0.0),
                  A: (audio_num_blocks, audio_num_heads, False, True, audio_drop_path),
                  D: (depth_num_blocks, depth_num_heads, False, True, depth_drop_path),
                  TH: (thermal_num_blocks, thermal_num_heads, False, True, thermal_drop_path),
                  I: (imu_num_blocks, imu_num_heads, False, True, imu_drop_path)}
        self.modality_trunks = nn.ModuleDict({key: Trunk(dims[key], *spec) for key, spec in trunks.items()})
        self.modality_heads = nn.ModuleDict({
            key: EOSHead(dims[key], out_embed_dim) if key == T
            else cls_head(dims[key], out_embed_dim, dropout=0.5 if key == I else 0.0)
            for key in dims})
        self.modality_postprocessors = nn.ModuleDict({
            key: postprocessor(scale, learnable=key == T) for key, scale in LOGIT_SCALES.items()})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{modality: tensor}`` -> ``{modality: [B, out_embed_dim]}``.

        Shapes per item (at the defaults; 224 is ``image_size``, 2 ``video_frames``, 128 x 204
        ``audio_num_mel_bins`` x ``audio_target_len``): vision [3, 224, 224] or clips [S, 3, 2, 224, 224];
        text [77] ids; audio [S, 1, 128, 204]; depth and thermal [1, 224, 224]; imu [6, 2000]. Any input of 5
        or more dims is a list of S clips per item: each clip is embedded and the S embeddings are averaged
        after the postprocessor (so they are not unit length any more).
        """
        outputs = {}
        for key, value in inputs.items():
            if key not in self.modality_preprocessors:
                raise MediaError(f"unknown ImageBind modality {key!r}; use one of {list(self.modality_preprocessors)}")
            if value is None:
                continue
            clips = value.ndim >= 5
            if clips:
                batch, num_clips = value.shape[:2]
                value = value.flatten(0, 1)  # [B * S, ...]
            tokens = self.modality_preprocessors[key](value)
            hidden = self.modality_trunks[key](tokens.tokens, tokens.attn_mask)  # [N, L, D]
            embedding = self.modality_heads[key](hidden, **tokens.head_kwargs)  # [N, out_embed_dim]
            embedding = self.modality_postprocessors[key](embedding)
            if clips:
                embedding = embedding.reshape(batch, num_clips, -1).mean(dim=1)
            outputs[key] = embedding
        return outputs


def check_spec(spec: dict) -> dict:
    """``spec`` if every key is an ImageBindModel argument, else a ConfigError naming the unknown ones."""
    known = set(inspect.signature(ImageBindModel).parameters)
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"unknown ImageBind size arguments {unknown}; known: {sorted(known)}")
    return dict(spec)
