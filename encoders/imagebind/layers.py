"""The building blocks shared by every ImageBind modality: the transformer trunk, pooling and scaling.

Attribute names follow the published checkpoint (``blocks.3.attn.in_proj_weight``, ``norm_1``,
``mlp.fc1``, ``log_logit_scale``, ...), so ``imagebind_huge.pth`` loads into these modules unchanged.
Tokens are batch-first everywhere: ``[B, L, D]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import StochasticDepth


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block. ``add_bias_kv`` appends one learned key/value (audio, depth, thermal, IMU)."""

    def __init__(self, dim: int, num_heads: int, add_bias_kv: bool, drop_path: float, mlp_ratio: int = 4):
        super().__init__()
        # torch's own attention module: its parameter names are the checkpoint's, and it takes the SDPA
        # fast path at inference where it can
        self.attn = nn.MultiheadAttention(dim, num_heads, bias=True, add_bias_kv=add_bias_kv, batch_first=True)
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:  # [B, L, D]
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0])
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class Trunk(nn.Module):
    """A stack of blocks; only the vision trunk normalises its input first (``pre_transformer_layer.0``)."""

    def __init__(self, dim: int, num_blocks: int, num_heads: int, pre_norm: bool, add_bias_kv: bool,
                 drop_path: float = 0.0):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_norm else nn.Identity())
        rates = torch.linspace(0, drop_path, num_blocks, device="cpu").tolist()  # deeper blocks drop more often
        self.blocks = nn.Sequential(*[Block(dim, num_heads, add_bias_kv, rate) for rate in rates])
        for module in self.modules():  # JAX-ViT style init, as the reference trains from
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens)  # [B, L, D]
        for block in self.blocks:
            x = block(x, attn_mask)
        return x


class SelectCLS(nn.Module):
    """[B, L, D] -> [B, D]: the class token, which every patch modality puts first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class EOSHead(nn.Module):
    """Text pooling as in CLIP: the hidden state at the end-of-text token, then ``proj``."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, eos_index: torch.Tensor) -> torch.Tensor:  # [B, L, D], [B]
        return self.proj(x[torch.arange(x.shape[0], device=x.device), eos_index])  # [B, out_dim]


def cls_head(dim: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """LayerNorm -> class token -> (dropout) -> projection; indices match the checkpoint (``.0``, ``.2``/``.3``)."""
    layers = [nn.LayerNorm(dim, eps=1e-6), SelectCLS()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(dim, out_dim, bias=False))


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class LogitScale(nn.Module):
    """Multiplies by ``exp(log_logit_scale)`` capped at ``max_scale``: each modality's contrastive temperature."""

    def __init__(self, init: float, learnable: bool, max_scale: float = 100.0):
        super().__init__()
        self.max_scale = max_scale
        log_scale = torch.tensor(math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:  # a persistent buffer: the checkpoint stores it
            self.register_buffer("log_logit_scale", log_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=self.max_scale) * x


def postprocessor(logit_scale: float | None, learnable: bool = False) -> nn.Module:
    """Unit-normalise, then (except vision) scale by the modality's temperature (``.1.log_logit_scale``)."""
    if logit_scale is None:
        return Normalize()
    return nn.Sequential(Normalize(), LogitScale(logit_scale, learnable))
