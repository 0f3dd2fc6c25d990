"""The alignment losses beside the LM loss (which the model's forward already gives).

signal_mse   NExT-GPT decoder-side alignment: output projection of the signal tokens' hidden states vs the
             decoder's own text-encoder embedding of the caption.
info_nce     FROMAGe retrieval: [RET] queries vs target embeddings, contrastive over the batch, both ways.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def signal_mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``predicted`` and ``target`` [n, *condition_shape]; mean squared error over every element."""
    return F.mse_loss(predicted.float(), target.float())


def info_nce(queries: torch.Tensor, targets: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Row i of ``queries`` [n, d] should match row i of ``targets`` [n, d] and no other row (cosine
    similarity times ``logit_scale`` = 1 / temperature). Symmetric: query->target and target->query."""
    queries, targets = F.normalize(queries.float(), dim=-1), F.normalize(targets.float(), dim=-1)
    logits = logit_scale * queries @ targets.T  # [n, n]
    labels = torch.arange(len(queries), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class LogitScale(nn.Module):
    """1 / temperature, learned in log space as CLIP does (clamped at 100), or fixed."""

    MAX = math.log(100.0)

    def __init__(self, temperature: float, learn: bool):
        super().__init__()
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learn:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.MAX).exp()
