"""Fixtures for the agents tests: variants of the session's tiny model (tests/conftest.py)."""

import pytest
import torch
from langchain_core.callbacks import BaseCallbackHandler

from anymodal import io
from anymodal.media import Image


@pytest.fixture(scope="session")
def bare_model(tiny_root):
    """LLM + CLIP only: no decoder, no index, no speech."""
    from anymodal.model import AnyModalModel
    from anymodal.tiny import tiny_config

    torch.manual_seed(0)
    return AnyModalModel.from_config(tiny_config(tiny_root, decoders=False, retrieval=False)).eval()


@pytest.fixture
def image_file(tmp_path):
    pixels = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(7))
    return io.save(Image(pixels), tmp_path / "shapes.png")


class RunRecorder(BaseCallbackHandler):
    """Records tool runs (name, run id, parent run id) and what every chat model was shown."""

    def __init__(self):
        self.tools: list[dict] = []
        self.chat_inputs: list[list] = []

    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, **kwargs):
        self.tools.append({"name": serialized["name"], "run_id": run_id, "parent": parent_run_id, "ended": False})

    def on_tool_end(self, output, *, run_id, **kwargs):
        next(t for t in self.tools if t["run_id"] == run_id)["ended"] = True

    def on_chat_model_start(self, serialized, messages, **kwargs):
        self.chat_inputs.append(messages[0])


@pytest.fixture
def recorder():
    return RunRecorder()
