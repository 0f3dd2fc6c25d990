"""Shared fixtures: tiny random parts saved in their published layouts, built once per session."""

import logging
import os

import pytest
import torch

# no test may reach the network: a hub id that is not on disk must fail fast with our CheckpointError
os.environ["HF_HUB_OFFLINE"] = "1"
logging.getLogger("transformers").setLevel(logging.ERROR)


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
