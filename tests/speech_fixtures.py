"""Helpers the speech test files share (imported by them; pytest collects no tests here)."""

import torch

from anymodal.speech import ChainOfModality


def build_model(root, speech_units=16):
    """A tiny random Llama with ``speech_units`` unit tokens and the SpeechGPT turn layout, no encoders."""
    from anymodal.model import AnyModalModel
    from anymodal.tiny import save_tiny_llm, tiny_config

    save_tiny_llm(root / "llm")
    config = tiny_config(root, decoders=False, retrieval=False)
    config.encoders, config.speech_units = {}, speech_units
    config.prompt = ChainOfModality().prompt_config()
    torch.manual_seed(0)
    return AnyModalModel.from_config(config).eval()
