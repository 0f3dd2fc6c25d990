"""Helpers the decoder test files share (imported by them; pytest collects no tests here)."""

import torch


def condition(decoder, batch: int, seed: int = 0) -> torch.Tensor:
    """A seeded random conditioning batch ``[batch, *decoder.condition_shape]``."""
    return torch.randn(batch, *decoder.condition_shape, generator=torch.Generator().manual_seed(seed))
