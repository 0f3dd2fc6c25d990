"""Helpers the decoder test files share (imported by them; pytest collects no tests here)."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a shared CPU, spinning OpenMP workers make them ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def condition(decoder, batch: int, seed: int = 0) -> torch.Tensor:
    """A seeded random conditioning batch ``[batch, *decoder.condition_shape]``."""
    return torch.randn(batch, *decoder.condition_shape, generator=torch.Generator().manual_seed(seed))
