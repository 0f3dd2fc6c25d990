"""Shared fixtures: tiny random parts saved in their published layouts, built once per session."""

import logging
import os

import pytest
import torch

# no test may reach the network: a hub id that is not on disk must fail fast with our CheckpointError
os.environ["HF_HUB_OFFLINE"] = "1"
logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine, spinning OpenMP workers make
    them 10-30x slower (a tiny [IMG] turn: ~0.3 s on one thread, seconds on two)."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """LLM + CLIP + Stable Diffusion + flat index, saved once for the whole session."""
    from anymodal.tiny import save_tiny_parts

    return save_tiny_parts(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_root):
    from anymodal.model import AnyModalModel
    from anymodal.tiny import tiny_config

    torch.manual_seed(0)
    return AnyModalModel.from_config(tiny_config(tiny_root)).eval()
