"""Modality tensors -> token sequences ``[B, L, D]`` for the trunks (the checkpoint's ``modality_preprocessors``).

Images, depth, thermal and audio spectrograms are cut into patches by a convolution stem, get a class token
and learned positions. Text is a CLIP token embedding with a causal mask. IMU signals are cut into windows
of ``kernel_size`` samples across the 6 channels and projected linearly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from anymodal.errors import MediaError


class Tokens(NamedTuple):
    tokens: torch.Tensor  # [B, L, D]
    attn_mask: torch.Tensor | None = None  # [L, L] additive, or None
    head_kwargs: dict = {}  # extra inputs of the modality's head (text: where the end-of-text token is)


class ImageToClip(nn.Module):
    """[B, C, H, W] images -> [B, C, T, H, W] clips of ``frames`` copies: images and video share one 3-D stem."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x[:, :, None]  # [B, C, 1, H, W]
        if x.shape[2] == 1:
            x = x.expand(-1, -1, self.frames, -1, -1)
        return x


class PatchStem(nn.Module):
    """``proj`` (a convolution, or a linear layer on windowed input) -> tokens [B, N, D] -> optional LayerNorm."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if x.ndim > 3:  # a convolution's [B, D, (T,) H, W] grid -> [B, N, D]
            x = x.flatten(2).transpose(1, 2)
        return x if self.norm_layer is None else self.norm_layer(x)


class LearnedPositions(nn.Module):
    """Learned position embeddings ``pos_embed [1, num_cls + N, D]`` for a patch grid, resized (bicubic) when
    a square 2-D grid of another size comes in, as the reference does for other image resolutions."""

    def __init__(self, grid: tuple[int, ...], num_cls: int, dim: int):
        super().__init__()
        self.grid, self.num_cls = grid, num_cls
        self.num_patches = math.prod(grid)
        self.pos_embed = nn.Parameter(torch.randn(1, num_cls + self.num_patches, dim) * dim ** -0.5)

    @property
    def resizable(self) -> bool:
        """Only a square 2-D grid (one frame) can be resized, as in the reference."""
        return math.prod(self.grid[:-2]) == 1 and self.grid[-2] == self.grid[-1]

    def forward(self, num_patches: int) -> torch.Tensor:  # -> [1, num_cls + num_patches, D]
        if num_patches == self.num_patches:
            return self.pos_embed
        side = self.grid[-1]
        cls_pos, patch_pos = self.pos_embed[:, :self.num_cls], self.pos_embed[:, self.num_cls:]
        grid = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # [1, D, side, side]
        grid = F.interpolate(grid.float(), scale_factor=math.sqrt(num_patches / self.num_patches), mode="bicubic")
        patch_pos = grid.to(patch_pos.dtype).permute(0, 2, 3, 1).reshape(1, -1, patch_pos.shape[-1])
        return torch.cat([cls_pos, patch_pos], dim=1)


class PatchTokenizer(nn.Module):
    """Vision (images and clips), depth, thermal and audio spectrograms: stem -> [CLS] + patches -> + positions.

    ``name`` is the modality (for error messages); ``stem_name`` is where the checkpoint keeps the stem
    (``rgbt_stem`` for vision, thermal and audio, ``depth_stem`` for depth); ``input_shape`` is one item at
    the training size, e.g. ``(3, 2, 224, 224)``.
    """

    def __init__(self, name: str, stem: PatchStem, input_shape: tuple[int, ...], stem_name: str = "rgbt_stem"):
        super().__init__()
        self.name, self.stem_name, self.input_shape = name, stem_name, tuple(input_shape)
        self.add_module(stem_name, stem)
        conv = stem.proj[-1] if isinstance(stem.proj, nn.Sequential) else stem.proj
        grid = tuple((n - k) // s + 1 for n, k, s in zip(input_shape[1:], conv.kernel_size, conv.stride))
        self.in_channels, dim = conv.in_channels, conv.out_channels
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.pos_embedding_helper = LearnedPositions(grid, num_cls=1, dim=dim)

    def forward(self, x: torch.Tensor) -> Tokens:  # [B, C, (T,) H, W]
        expected = f"[B, {', '.join(map(str, self.input_shape))}]"
        if x.ndim not in (4, 5) or x.shape[1] != self.in_channels:
            raise MediaError(f"{self.name} input needs shape [B, {self.in_channels}, ...] like {expected}, "
                             f"got {tuple(x.shape)}")
        patches = getattr(self, self.stem_name)(x)  # [B, N, D]
        positions = self.pos_embedding_helper
        if patches.shape[1] != positions.num_patches and not positions.resizable:
            raise MediaError(f"{self.name} input of shape {tuple(x.shape)} gives {patches.shape[1]} patches where "
                             f"the model was built for {positions.num_patches} {positions.grid}; use {expected}")
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], dim=1)  # [B, 1 + N, D]
        return Tokens(tokens + positions(patches.shape[1]))


class TextTokenizer(nn.Module):
    """CLIP BPE ids [B, context_length] -> token embeddings + positions, with a causal mask for the trunk."""

    def __init__(self, vocab_size: int, context_length: int, dim: int):
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, context_length, dim) * 0.01)
        # additive mask, -inf above the diagonal; the checkpoint stores it
        self.register_buffer("mask", torch.full((context_length, context_length), float("-inf")).triu(1))

    def forward(self, ids: torch.Tensor) -> Tokens:  # [B, context_length] int64
        if ids.ndim != 2 or ids.shape[1] != self.context_length or ids.is_floating_point():
            raise MediaError(f"text input needs token ids of shape [B, {self.context_length}] (int64, from "
                             f"load_and_transform_text), got {tuple(ids.shape)} {ids.dtype}")
        tokens = self.token_embedding(ids) + self.pos_embed  # [B, L, D]
        # the end-of-text token has the largest id in CLIP's vocabulary: argmax finds it
        return Tokens(tokens, self.mask, {"eos_index": ids.argmax(dim=-1)})


class IMUTokenizer(nn.Module):
    """IMU [B, 6, N] -> windows of ``kernel_size`` samples (all 6 channels each) -> linear stem -> [CLS] + positions."""

    def __init__(self, dim: int, kernel_size: int = 8, channels: int = 6, num_samples: int = 2000):
        super().__init__()
        self.kernel_size, self.channels, self.num_samples = kernel_size, channels, num_samples
        self.imu_stem = PatchStem(nn.Linear(channels * kernel_size, dim, bias=False), nn.LayerNorm(dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_samples // kernel_size + 1, dim) * 0.01)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)

    def forward(self, x: torch.Tensor) -> Tokens:  # [B, 6, N]
        if x.ndim != 3 or x.shape[1] != self.channels or x.shape[2] // self.kernel_size != self.pos_embed.shape[1] - 1:
            raise MediaError(f"imu input needs shape [B, {self.channels}, {self.num_samples}], got {tuple(x.shape)}")
        windows = x.unfold(-1, self.kernel_size, self.kernel_size).permute(0, 2, 1, 3)  # [B, W, 6, k]
        patches = self.imu_stem(windows.flatten(2))  # [B, W, D]
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], dim=1)
        return Tokens(tokens + self.pos_embed)
