"""Projections between an encoder / decoder space and the LLM's embedding space.

InputProjection   encoder features [B, T, D_enc] -> LLM embeddings [B, T * k, D_llm]   (LLaVA linear / MLP; k > 1:
                  ClipCap's prefix, each encoder token spread over k LLM tokens)
OutputProjection  signal hidden states [B, k, D_llm] -> decoder conditioning [B, *condition_shape]
                  (NExT-GPT: a small transformer whose learned queries read the k signal states)
"""

from __future__ import annotations

import torch
from torch import nn

from .config import InputProjectionConfig, OutputProjectionConfig
from .errors import ConfigError


class InputProjection(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, config: InputProjectionConfig):
        super().__init__()
        if config.tokens < 1:
            raise ConfigError(f"an input projection gives at least 1 LLM token per encoder token, got tokens={config.tokens}")
        self.in_dim, self.out_dim, self.tokens = in_dim, out_dim, config.tokens
        if config.kind == "linear":
            self.net = nn.Linear(in_dim, out_dim * config.tokens)
        elif config.kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim * config.tokens))
        else:
            raise ConfigError(f"input projection kind must be 'linear' or 'mlp', got {config.kind!r}")

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, T, D_enc] -> [B, T * k, D_llm]
        batch, length, _ = features.shape
        return self.net(features).reshape(batch, length * self.tokens, self.out_dim)


class OutputProjection(nn.Module):
    """``condition_shape`` is (N, D_out) for token conditioning (SD prompt_embeds) or (D_out,) for a pooled
    one (AudioLDM's CLAP vector, a [RET] query)."""

    def __init__(self, in_dim: int, condition_shape: tuple[int, ...], config: OutputProjectionConfig):
        super().__init__()
        if len(condition_shape) not in (1, 2):
            raise ConfigError(f"a decoder condition must be (D,) or (N, D), got {tuple(condition_shape)}")
        self.in_dim, self.condition_shape = in_dim, tuple(condition_shape)
        self.out_dim = condition_shape[-1]
        num_queries = condition_shape[0] if len(condition_shape) == 2 else 1
        self.kind = config.kind
        if config.kind == "transformer":
            self.to_width = nn.Linear(in_dim, config.width)
            self.queries = nn.Parameter(torch.randn(num_queries, config.width) * 0.02)  # [N, W]
            layer = nn.TransformerDecoderLayer(config.width, config.heads, dim_feedforward=4 * config.width,
                                               dropout=0.0, batch_first=True, norm_first=True)
            self.decoder = nn.TransformerDecoder(layer, config.layers)
            self.to_out = nn.Sequential(nn.LayerNorm(config.width), nn.Linear(config.width, self.out_dim))
        elif config.kind == "linear":
            if num_queries != 1:
                raise ConfigError("a 'linear' output projection gives a pooled (D,) condition; use 'transformer' "
                                  f"for a token condition of shape {tuple(condition_shape)}")
            self.net = nn.Linear(in_dim, self.out_dim)
        else:
            raise ConfigError(f"output projection kind must be 'transformer' or 'linear', got {config.kind!r}")

    def forward(self, signal_hidden: torch.Tensor) -> torch.Tensor:  # [B, k, D_llm] -> [B, *condition_shape]
        if self.kind == "linear":
            return self.net(signal_hidden.mean(dim=1))  # [B, D_out]
        memory = self.to_width(signal_hidden)  # [B, k, W]
        queries = self.queries.expand(signal_hidden.shape[0], -1, -1)  # [B, N, W]
        out = self.to_out(self.decoder(queries, memory))  # [B, N, D_out]
        return out if len(self.condition_shape) == 2 else out[:, 0]
