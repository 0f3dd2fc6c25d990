"""``anymodal quantize --report``: how much each linear layer of the LLM suffers from a scheme.

Each layer gets the same input twice, on held-out text: the full-precision layer and the layer the chosen
library quantized (the one loading the quantized bundle would give). SQNR = 10 log10(|y|^2 / |y - y_q|^2) in
dB over all tokens: higher is better; every bit of precision is worth ~6 dB. The worst layers are the ones
to keep in high precision with ``--skip`` (mixed precision).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import config as cfg
from .quantize import plain_name, quantizable_layers, resolve
from .quantize_bundle import full_precision_llm, quantized_llm

# Text none of the tiny parts saw (anymodal.tiny.CORPUS); calibration for the report, perplexity for the bench.
HELD_OUT = [
    "USER: what colour is the ball in the picture? ASSISTANT: the ball is orange and sits on the grass",
    "two small blue triangles point at a large purple star in the middle of the frame",
    "play the sound of a bell, then show me a short video of a bouncing square",
    "how many circles are there? I count five circles and one square in this image",
]


@dataclass
class LayerError:
    name: str  # as transformers names it, what --skip takes
    shape: tuple[int, int]  # [out_features, in_features]
    sqnr_db: float


def layer_sqnr(bundle_dir: str | Path, weights: str, backend: str = "auto", merge_lora: bool = False,
               texts: list[str] = HELD_OUT, device: str | None = None) -> list[LayerError]:
    """SQNR of every quantizable linear layer of the bundle's LLM under ``weights``, worst first."""
    from .model import AnyModalModel

    quantization = resolve(cfg.QuantizationConfig(scheme=weights, backend=backend), device)
    model = AnyModalModel.from_pretrained(bundle_dir)
    llm = full_precision_llm(model.llm, merge_lora)
    with tempfile.TemporaryDirectory() as staging:
        llm.save_pretrained(staging)
        quantized = quantized_llm(staging, model.config.llm, quantization, model.tokenizer)
    quantized_layers = dict(quantized.named_modules())
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}

    def compare(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            reference = output.float()  # [B, L, out]
            approx = quantized_layers[name](inputs[0]).float()
            signal[name] = signal.get(name, 0.0) + reference.pow(2).sum().item()
            noise[name] = noise.get(name, 0.0) + (reference - approx).pow(2).sum().item()
        return hook

    names = [plain_name(n) for n in quantizable_layers(llm)]
    handles = [llm.get_submodule(n).register_forward_hook(compare(n)) for n in names]
    try:
        with torch.inference_mode():
            for text in tqdm(texts, desc=f"{weights} layer SQNR", leave=False):
                ids = model.tokenizer(text, return_tensors="pt").input_ids
                llm(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    errors = [LayerError(n, tuple(llm.get_submodule(n).weight.shape), _db(signal[n], noise[n])) for n in names]
    return sorted(errors, key=lambda e: e.sqnr_db)


def _db(signal: float, noise: float) -> float:
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def format_report(errors: list[LayerError], weights: str, top: int | None = None, worst: int = 3) -> str:
    """A table, worst first, ending with the --skip that keeps the ``worst`` layers in high precision."""
    shown = errors[:top] if top else errors
    width = max([len(e.name) for e in shown] + [5])
    lines = [f"{'layer':<{width}}  {'shape':>11}  {'SQNR dB':>8}"]
    lines += [f"{e.name:<{width}}  {e.shape[0]:>5}x{e.shape[1]:<5}  {e.sqnr_db:8.2f}" for e in shown]
    if top and len(errors) > top:
        lines.append(f"... {len(errors) - top} more layers")
    lines.append(f"{weights}: median {sorted(e.sqnr_db for e in errors)[len(errors) // 2]:.2f} dB over {len(errors)} "
                 f"layers; to keep the worst in high precision: --skip {','.join(e.name for e in errors[:worst])}")
    return "\n".join(lines)
